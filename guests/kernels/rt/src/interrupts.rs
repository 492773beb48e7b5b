//! The IDT, 256 entry stubs, the saved-register frame and handler dispatch.
//!
//! Every vector enters one common path that saves all general-purpose and
//! XMM registers into a [`Frame`] on the current kernel stack and calls the
//! handler registered for the vector. A handler returns the frame to resume,
//! which is how schedulers switch tasks: return another task's saved frame.
//! Vectors without a handler: exceptions (0..32) print and exit with
//! [`crate::EXIT_EXCEPTION`]; others are ignored (spurious IRQs get an EOI).

use rt_common::interrupts::EXCEPTION_NAMES;

use crate::sync::Global;

pub use rt_common::interrupts::{Frame, Handler};

static HANDLERS: Global<[Option<Handler>; 256]> = Global::new([None; 256]);

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static IDT: Global<Idt> = Global::new(Idt([[0; 2]; 256]));

unsafe extern "C" {
    static rt_isr_stubs: [u8; 256 * 16];
}

/// Register `handler` for `vector`.
pub fn set_handler(vector: u8, handler: Handler) {
    let was = crate::cpu::interrupts_enabled();
    crate::cpu::cli();
    // SAFETY: interrupts are off, so the dispatcher is not reading the table.
    unsafe { (*HANDLERS.get())[vector as usize] = Some(handler) };
    if was {
        crate::cpu::sti();
    }
}

/// Build and load the IDT. Vectors 0x80 and 0x81 are callable from ring 3
/// (DPL 3 gates); all others only by hardware or ring 0.
pub fn init() {
    // The stub table is 256 stubs of 16 bytes each (see the asm).
    let stubs = (&raw const rt_isr_stubs) as u64;
    // SAFETY: set up once at boot with interrupts off; the CPU reads the IDT
    // only after `lidt`.
    unsafe {
        let idt = &mut *IDT.get();
        for (v, gate) in idt.0.iter_mut().enumerate() {
            let addr = stubs + v as u64 * 16;
            let dpl: u64 = if v == 0x80 || v == 0x81 { 3 } else { 0 };
            // Interrupt gate (type 0xE): IF cleared on entry.
            gate[0] = (addr & 0xffff)
                | (crate::gdt::KERNEL_CS as u64) << 16
                | (0x8e | dpl << 5) << 40
                | ((addr >> 16) & 0xffff) << 48;
            gate[1] = addr >> 32;
        }
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let ptr = Pointer {
            limit: (256 * 16 - 1) as u16,
            base: IDT.get() as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(nostack, readonly));
    }
}

/// Called by the common stub with the saved frame; returns the frame to resume.
#[unsafe(no_mangle)]
extern "C" fn rt_interrupt(frame: *mut Frame) -> *mut Frame {
    // SAFETY: the stub passes a pointer to the frame it just pushed.
    let vector = unsafe { (*frame).vector } as usize;
    // SAFETY: handlers are written with interrupts off; we run with IF = 0.
    let handler = unsafe { (*HANDLERS.get())[vector.min(255)] };
    if let Some(h) = handler {
        return h(frame);
    }
    if vector < 32 {
        // SAFETY: as above.
        let f = unsafe { &*frame };
        let cr2: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
        crate::println!(
            "EXCEPTION {} (vector {}) at rip {:#x} cs {:#x} error {:#x} cr2 {:#x} rsp {:#x}",
            EXCEPTION_NAMES[vector],
            crate::Dec(vector as u64),
            f.rip,
            f.cs,
            f.error_code,
            cr2,
            f.rsp
        );
        crate::exit(crate::EXIT_EXCEPTION);
    }
    let base = crate::pic::IRQ_BASE as usize;
    if (base..base + 16).contains(&vector) {
        let irq = (vector - base) as u8;
        // Spurious IRQ 7/15 have no in-service bit and take no EOI on their own PIC.
        let isr = crate::pic::in_service();
        if isr & (1 << irq) != 0 {
            crate::pic::eoi(irq);
        } else if irq == 15 {
            crate::pic::eoi(0);
        }
    }
    frame
}

core::arch::global_asm!(
    r#"
    .section .text.rt_isr, "ax"
    .code64
    .p2align 4
    .global rt_isr_stubs
rt_isr_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30
    push vec
    .else
    push 0
    push vec
    .endif
    jmp rt_isr_common
    .set vec, vec + 1
    .endr

    .p2align 4
rt_isr_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    sub rsp, 256
    movdqu [rsp + 0], xmm0
    movdqu [rsp + 16], xmm1
    movdqu [rsp + 32], xmm2
    movdqu [rsp + 48], xmm3
    movdqu [rsp + 64], xmm4
    movdqu [rsp + 80], xmm5
    movdqu [rsp + 96], xmm6
    movdqu [rsp + 112], xmm7
    movdqu [rsp + 128], xmm8
    movdqu [rsp + 144], xmm9
    movdqu [rsp + 160], xmm10
    movdqu [rsp + 176], xmm11
    movdqu [rsp + 192], xmm12
    movdqu [rsp + 208], xmm13
    movdqu [rsp + 224], xmm14
    movdqu [rsp + 240], xmm15
    cld
    mov rdi, rsp
    call rt_interrupt
    mov rsp, rax
    movdqu xmm0, [rsp + 0]
    movdqu xmm1, [rsp + 16]
    movdqu xmm2, [rsp + 32]
    movdqu xmm3, [rsp + 48]
    movdqu xmm4, [rsp + 64]
    movdqu xmm5, [rsp + 80]
    movdqu xmm6, [rsp + 96]
    movdqu xmm7, [rsp + 112]
    movdqu xmm8, [rsp + 128]
    movdqu xmm9, [rsp + 144]
    movdqu xmm10, [rsp + 160]
    movdqu xmm11, [rsp + 176]
    movdqu xmm12, [rsp + 192]
    movdqu xmm13, [rsp + 208]
    movdqu xmm14, [rsp + 224]
    movdqu xmm15, [rsp + 240]
    add rsp, 256
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
"#
);
