//! User-mode runtime ("urt"): the API of `rt` with everything after the PVH
//! entry running in **ring 3**.
//!
//! Why: on the nested KVM of the CAS Motion machines (`kvm_pvm`), ring-0
//! guest code is run by KVM's instruction emulator, which has no SSE (the
//! precompiled `core` copies structs with `movups`/`xorps`) and no INT/IRET in
//! 64-bit mode, while ring-3 code runs natively. A guest built against `urt`
//! keeps its ring-0 part to the PVH entry stub below (plain integer
//! instructions the emulator has), then drops to 64-bit ring 3 with `IRETQ`
//! and never comes back. (Measured on that KVM: IRETQ, SYSRETQ and SYSEXITQ
//! from ring 0 to ring 3 all work, a far RET to ring 3 does not; IRETQ is
//! the one that also works natively on both Intel and AMD hosts, where
//! SYSEXIT is undefined in long mode on AMD.)
//!
//! Consequences, all visible in the API:
//! * RFLAGS.IF stays 0 (ring 3 cannot CLI/STI/HLT with IOPL 0), so the
//!   monitor never injects an interrupt. [`cpu::cli`]/[`cpu::sti`] switch a
//!   *virtual* interrupt flag, and waiting for an interrupt ([`cpu::hlt`],
//!   [`cpu::sti_hlt`]) polls the 8259 pair with its poll command (OCW3 P=1),
//!   which acknowledges the highest-priority request like an INTA cycle; the
//!   registered handler is then called as a plain function. Every poll is a
//!   port exit: deterministic, and recorded like any other.
//! * Port I/O from ring 3 is allowed by the TSS I/O permission bitmap (all
//!   ports), since RFLAGS.IOPL cannot be raised on that KVM.
//! * A CPU exception enters a small ring-0 stub (through the IDT and the
//!   TSS's RSP0) that goes straight back to ring 3 with IRETQ into
//!   [`interrupts`]' reporter, which prints it and exits with status 2.
//!
//! The guest binaries are the same sources as for `rt` (the `bins-r3`
//! package imports this crate under the name `rt`). The parts that need no
//! privilege (PIC, port I/O, boot info, the UART, ...) are the crate
//! `rt_common`, which `rt` re-exports too; `serial` transmits with fewer
//! exits per byte written than `rt`'s.
//!
//! Exit status convention as `rt`: 0 success, 1 panic, 2 unexpected CPU
//! exception, other values guest-defined.

#![no_std]

// So that `::rt::serial::_print`, which `print!`/`println!` expand to, names
// this crate here as it does in the guests.
extern crate self as rt;

pub mod cpu;
pub mod interrupts;
pub mod serial;
pub mod user;

// The ring-independent parts, shared with `rt`.
pub use rt_common::{
    BootInfo, DEBUG_EXIT_PORT, Dec, EXIT_EXCEPTION, EXIT_PANIC, EXIT_SUCCESS, boot, dec, io, mem,
    pic, print, println, sync,
};

/// End the run: write `status` to isa-debug-exit. Without that device the
/// write does nothing; ring 3 cannot halt, so spin afterwards.
pub fn exit(status: u8) -> ! {
    // SAFETY: port 0xf4 is isa-debug-exit or nothing; writing it has no
    // memory effect.
    unsafe { io::outb(DEBUG_EXIT_PORT, status) };
    loop {
        core::hint::spin_loop();
    }
}

/// Ring-3 entry from the boot stub's IRETQ, on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn urt_start(start_info: u32) -> ! {
    serial::init();
    pic::init();
    interrupts::select_irr();
    exit(rt_common::run_guest(start_info))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cpu::cli();
    println!("PANIC: {info}");
    exit(EXIT_PANIC)
}

// The PVH entry stub. Everything here runs in ring 0, which on the nested
// KVM means in KVM's instruction emulator: plain integer instructions, moves
// to control registers, LGDT/LIDT/LTR, RDMSR/WRMSR, a far jump and IRETQ only.
//
// 32-bit protected mode, paging off, EBX = physical address of
// hvm_start_info. The page tables (identity-mapping 4 GiB with 2 MiB pages,
// present, writable, user) are static data, built by the assembler: filling
// 2048 entries in a loop costs ~20 ms where ring 0 is emulated. The stub
// fills in the TSS and IDT descriptors (their
// base addresses are split across fields, which a relocation cannot
// express), enables PAE + SSE (OSFXSR, OSXMMEXCPT), EFER.LME and paging,
// loads GDT/IDT/TR, far-jumps to 64-bit code and leaves ring 0 for good with
// IRETQ to the user code segment, RFLAGS = 2 (IF = 0, IOPL = 0).
core::arch::global_asm!(
    rt_common::pvh_entry_asm!(),
    r#"
    mov dword ptr [urt_boot_start_info], ebx
    mov esp, offset urt_boot_stack_top

    /* TSS descriptor (GDT slot 0x28): limit, base 0..23, type 0x89, base 24..31 */
    mov eax, offset urt_tss
    mov edx, eax
    shl eax, 16
    or eax, 8296                /* limit: 104 + 8192 + 1 bytes - 1 (checked below) */
    mov dword ptr [urt_gdt + 0x28], eax
    mov eax, edx
    shr eax, 16
    and eax, 0xff
    mov ecx, edx
    and ecx, 0xff000000
    or eax, ecx
    or eax, 0x8900
    mov dword ptr [urt_gdt + 0x2c], eax

    /* IDT: 32 interrupt gates (DPL 0, selector 0x08) to the exception stubs;
       ECX = 2 * vector (the gate's offset in 8-byte units) */
    mov ecx, 0
3:
    mov eax, ecx
    shl eax, 3
    add eax, offset urt_exc_stubs
    mov edx, eax
    and eax, 0xffff
    or eax, 0x00080000
    mov dword ptr [urt_idt + ecx * 8 + 0], eax
    and edx, 0xffff0000
    or edx, 0x8e00
    mov dword ptr [urt_idt + ecx * 8 + 4], edx
    mov dword ptr [urt_idt + ecx * 8 + 8], 0
    mov dword ptr [urt_idt + ecx * 8 + 12], 0
    add ecx, 2
    cmp ecx, 64
    jne 3b

"#,
    rt_common::paging_on_asm!("urt_pml4"),
    r#"
    lgdt [urt_gdt_ptr]
    lidt [urt_idt_ptr]
    /* ljmp 0x08:urt_long_entry (EA ptr16:32), spelled out as bytes */
    .byte 0xea
    .long urt_long_entry
    .word 0x08

    .code64
urt_long_entry:
    mov ax, 0x10
    mov ss, ax
    xor eax, eax
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ax, 0x28
    ltr ax
    mov edi, dword ptr [urt_boot_start_info]
    /* Ring 3 from here on: urt_start(start_info) on the boot stack, entered
       as if called (RSP = 8 mod 16), interrupts off. */
    mov rax, offset urt_boot_stack_top - 8
    push 0x1b                   /* SS: user data */
    push rax                    /* RSP */
    push 2                      /* RFLAGS: IF = 0, IOPL = 0 */
    push 0x23                   /* CS: user code, 64-bit */
    mov rax, offset urt_start
    push rax                    /* RIP */
    iretq

    /* Exception stubs, 16 bytes apart: EDI = vector, ESI = error code (0 if
       the CPU pushes none), then the common path. Entered in ring 0 on the
       TSS's RSP0 stack. */
    .p2align 4
urt_exc_stubs:
    .set vec, 0
    .rept 32
    .p2align 4
    .if vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30
    pop rsi
    .else
    xor esi, esi
    .endif
    mov edi, vec
    jmp urt_exc_common
    .set vec, vec + 1
    .endr

    .p2align 4
urt_exc_common:
    /* Back to ring 3 with IRETQ into
       urt_exception(vector = RDI, error = RSI, rip = RDX, cr2 = RCX) on its
       own stack. */
    mov rdx, qword ptr [rsp]
    mov rcx, cr2
    mov rax, offset urt_exc_ustack_top - 8
    push 0x1b
    push rax
    push 2
    push 0x23
    mov rax, offset urt_exception
    push rax
    iretq

    .section .data
    .p2align 3
    .global urt_gdt
/* Accessed bits preset (type 0xB/0x3): a CPU sets them when it loads a
   segment, but not every virtualizer does (the nested KVM here does for the
   ring-0 loads, not for IRETQ's), and a bit set on one backend and not on
   another would make memory differ between a recording and its replay. */
urt_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF    /* 0x08 kernel code, 64-bit */
    .quad 0x00CF93000000FFFF    /* 0x10 kernel data */
    .quad 0x00CFF3000000FFFF    /* 0x18 user data (0x1b) */
    .quad 0x00AFFB000000FFFF    /* 0x20 user code, 64-bit (0x23) */
    .quad 0                     /* 0x28 TSS, filled by the stub */
    .quad 0
urt_gdt_end:
    .p2align 3
urt_gdt_ptr:
    .word urt_gdt_end - urt_gdt - 1
    .quad urt_gdt
    .p2align 3
urt_idt_ptr:
    .word 32 * 16 - 1
    .quad urt_idt
    .p2align 2
urt_boot_start_info:
    .long 0

    /* 64-bit TSS: RSP0 for exceptions from ring 3, and an I/O permission
       bitmap allowing every port (8192 zero bytes and the 0xff terminator). */
    .p2align 4
    .global urt_tss
urt_tss:
    .long 0
    .quad urt_exc_kstack_top    /* RSP0 */
    .quad 0, 0                  /* RSP1, RSP2 */
    .quad 0
    .quad 0, 0, 0, 0, 0, 0, 0   /* IST1..7 */
    .quad 0
    .word 0
    .word 104                   /* I/O map base */
    .zero 8192
    .byte 0xff
urt_tss_end:
    .if urt_tss_end - urt_tss != 8297
    .error "the TSS limit in the boot stub is wrong"
    .endif

    /* Page tables: PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3, PD entry i maps
       i * 2 MiB (P|RW|US|PS). */
    .section .data.urt_page_tables, "aw"
    .p2align 12
urt_pml4:
    .quad urt_pdpt + 7
    .zero 4096 - 8
urt_pdpt:
    .quad urt_pd + 7
    .quad urt_pd + 0x1000 + 7
    .quad urt_pd + 0x2000 + 7
    .quad urt_pd + 0x3000 + 7
    .zero 4096 - 32
urt_pd:
    .set urt_pde, 0x87
    .rept 2048
    .quad urt_pde
    .set urt_pde, urt_pde + 0x200000
    .endr

    .section .bss
    .p2align 12
urt_idt:
    .zero 32 * 16
    .p2align 4
    .zero 4096
urt_exc_kstack_top:
    .zero 16384
urt_exc_ustack_top:
    .zero 65536
    .global urt_boot_stack_top
urt_boot_stack_top:
"#
);
