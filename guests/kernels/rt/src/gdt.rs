//! GDT (defined by the boot stub) and the TSS that gives ring-3 code a kernel stack.

use crate::sync::Global;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// TSS selector.
pub const TSS_SEL: u16 = 0x28;

#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

static TSS: Global<Tss> = Global::new(Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: 104,
});

#[repr(C, align(16))]
struct Stack([u8; 16384]);
/// The stack ring-3 code's interrupts land on unless a scheduler sets another.
static DEFAULT_RSP0_STACK: Global<Stack> = Global::new(Stack([0; 16384]));

unsafe extern "C" {
    static mut rt_gdt: [u64; 7];
}

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fill the TSS descriptor, reload the GDT with a 64-bit base and load TR.
pub fn init() {
    let tss = TSS.get() as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    let low = (limit & 0xffff)
        | (tss & 0xff_ffff) << 16
        | 0x89 << 40
        | ((limit >> 16) & 0xf) << 48
        | ((tss >> 24) & 0xff) << 56;
    let high = tss >> 32;
    set_rsp0(DEFAULT_RSP0_STACK.get() as u64 + 16384);
    // SAFETY: the boot stub's GDT has 7 slots and slots 5-6 are the TSS
    // descriptor; nothing else uses them yet.
    unsafe {
        let gdt = &raw mut rt_gdt;
        (*gdt)[5] = low;
        (*gdt)[6] = high;
        let ptr = Pointer {
            limit: (7 * 8 - 1) as u16,
            base: gdt as u64,
        };
        core::arch::asm!("lgdt [{}]", "ltr {1:x}", in(reg) &ptr, in(reg) TSS_SEL, options(nostack, readonly));
    }
}

/// Set the stack the CPU switches to when ring-3 code is interrupted.
pub fn set_rsp0(top: u64) {
    // SAFETY: the TSS is only read by the CPU on privilege changes; one CPU.
    unsafe { (*TSS.get()).rsp[0] = top }
}
