//! Runtime shared by the CAS Motion test guests.
//!
//! A guest is a `#![no_std]` binary that defines
//! `#[unsafe(no_mangle)] fn guest_main(info: &rt::BootInfo) -> u8`; the
//! runtime boots it by PVH (32-bit entry, `hvm_start_info` in EBX), switches
//! to 64-bit long mode with the low 4 GiB identity mapped (user accessible, so
//! ring-3 tasks can run the same image), sets up GDT/TSS/IDT, the serial port
//! and a masked PIC, calls `guest_main`, and writes its return value to
//! isa-debug-exit (port 0xf4).
//!
//! Exit status convention (the value written to port 0xf4; QEMU reports
//! `(value << 1) | 1`, `motion run` reports the value itself):
//! 0 success, 1 panic, 2 unexpected CPU exception, other values guest-defined.

#![no_std]

// So that `::rt::serial::_print`, which `print!`/`println!` expand to, names
// this crate here as it does in the guests.
extern crate self as rt;

pub mod cpu;
pub mod gdt;
pub mod interrupts;
pub mod pit;
pub mod serial;
pub mod user;

// The ring-independent parts, shared with `urt`.
pub use rt_common::{
    BootInfo, DEBUG_EXIT_PORT, Dec, EXIT_EXCEPTION, EXIT_PANIC, EXIT_SUCCESS, boot, dec, io, mem,
    pic, print, println, sync,
};

/// End the run: write `status` to isa-debug-exit. Without that device the
/// write does nothing, so halt forever with interrupts off afterwards.
pub fn exit(status: u8) -> ! {
    // SAFETY: port 0xf4 is isa-debug-exit or nothing; writing it has no
    // memory effect.
    unsafe { io::outb(DEBUG_EXIT_PORT, status) };
    loop {
        cpu::cli();
        cpu::hlt();
    }
}

/// 64-bit entry from the boot stub, on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn rt_start(start_info: u32) -> ! {
    serial::init();
    gdt::init();
    interrupts::init();
    pic::init();
    exit(rt_common::run_guest(start_info))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cpu::cli();
    println!("PANIC: {info}");
    exit(EXIT_PANIC)
}

// The PVH entry stub: 32-bit protected mode, paging off, EBX = physical
// address of hvm_start_info. Builds page tables identity-mapping 4 GiB with
// 2 MiB pages (present, writable, user), enables PAE + SSE (OSFXSR,
// OSXMMEXCPT), EFER.LME and paging, loads the GDT and far-returns into the
// 64-bit code segment.
core::arch::global_asm!(
    rt_common::pvh_entry_asm!(),
    r#"
    mov dword ptr [rt_boot_start_info], ebx
    mov esp, offset rt_boot_stack_top

    /* PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3 */
    mov eax, offset rt_pdpt
    or eax, 7
    mov dword ptr [rt_pml4], eax
    mov dword ptr [rt_pml4 + 4], 0
    mov ecx, 0
5:
    mov eax, ecx
    shl eax, 12
    add eax, offset rt_pd
    or eax, 7
    mov dword ptr [rt_pdpt + ecx * 8], eax
    mov dword ptr [rt_pdpt + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 4
    jne 5b

    /* 2048 PD entries: entry i maps i * 2 MiB, P|RW|US|PS */
    mov ecx, 0
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x87
    mov dword ptr [rt_pd + ecx * 8], eax
    mov dword ptr [rt_pd + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 2048
    jne 2b

"#,
    rt_common::paging_on_asm!("rt_pml4"),
    r#"
    lgdt [rt_gdt_ptr]
    /* ljmp 0x08:rt_long_entry (EA ptr16:32), spelled out as bytes */
    .byte 0xea
    .long rt_long_entry
    .word 0x08

    .code64
rt_long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset rt_boot_stack_top
    mov edi, dword ptr [rt_boot_start_info]
    call rt_start
4:
    hlt
    jmp 4b

    .section .data
    .p2align 3
    .global rt_gdt
rt_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08 kernel code, 64-bit */
    .quad 0x00CF92000000FFFF    /* 0x10 kernel data */
    .quad 0x00CFF2000000FFFF    /* 0x18 user data (0x1b) */
    .quad 0x00AFFA000000FFFF    /* 0x20 user code, 64-bit (0x23) */
    .quad 0                     /* 0x28 TSS, filled by gdt::init */
    .quad 0
rt_gdt_end:
    .p2align 3
    .global rt_gdt_ptr
rt_gdt_ptr:
    .word rt_gdt_end - rt_gdt - 1
    .quad rt_gdt
    .p2align 2
rt_boot_start_info:
    .long 0

    .section .bss
    .p2align 12
rt_pml4:
    .zero 4096
rt_pdpt:
    .zero 4096
rt_pd:
    .zero 4096 * 4
    .p2align 4
    .zero 65536
    .global rt_boot_stack_top
rt_boot_stack_top:
"#
);
