//! The parts of the guest runtimes that do not depend on the privilege level
//! they run at, shared by `rt` (ring 0) and `urt` (ring 3), which re-export
//! them under the same paths so the guest sources build against either.
//!
//! What stays in the runtimes: the PVH entry stubs, CPU control (CLI/STI/HLT
//! or their virtual counterparts), interrupt delivery, `exit`, the panic
//! handler and `serial::_print`, which the [`print!`]/[`println!`] macros
//! here call and which picks how bytes are transmitted.
//!
//! Exit status convention (the value written to port 0xf4; QEMU reports
//! `(value << 1) | 1`, `motion run` reports the value itself):
//! 0 success, 1 panic, 2 unexpected CPU exception, other values guest-defined.

#![no_std]

pub mod boot;
pub mod cpu;
pub mod dec;
pub mod interrupts;
pub mod io;
pub mod mem;
pub mod pic;
pub mod serial;
pub mod sync;

pub use boot::BootInfo;
pub use dec::Dec;

/// Status for a successful run.
pub const EXIT_SUCCESS: u8 = 0;
/// Status written after a panic.
pub const EXIT_PANIC: u8 = 1;
/// Status written after an unexpected CPU exception.
pub const EXIT_EXCEPTION: u8 = 2;

/// The isa-debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

unsafe extern "Rust" {
    /// The guest's main function, defined by each guest binary.
    fn guest_main(info: &BootInfo) -> u8;
}

/// Read the PVH start info at `start_info` and run the guest binary's
/// `guest_main` with it; returns its exit status. `#[inline]` so that the
/// runtimes' entry functions compile as when they held this code.
#[inline]
pub fn run_guest(start_info: u32) -> u8 {
    let info = BootInfo::parse(start_info);
    // SAFETY: `guest_main` is defined by the guest binary with this signature.
    unsafe { guest_main(&info) }
}

/// The start of both runtimes' boot stubs, an assembler template for their
/// `global_asm!`: the PVH ELF note (name "Xen", type 18 =
/// XEN_ELFNOTE_PHYS32_ENTRY) naming `pvh_start` as the 32-bit entry point,
/// and `pvh_start` itself up to CLI; CLD. The runtime's template continues
/// the code (32-bit protected mode, paging off, EBX = physical address of
/// `hvm_start_info`).
#[macro_export]
macro_rules! pvh_entry_asm {
    () => {
        r#"
    .section .note.Xen, "a"
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start

    .section .boot.text, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
"#
    };
}

/// Boot stub template, 32-bit code: enable PAE + SSE (CR4 |= PAE, OSFXSR,
/// OSXMMEXCPT), load CR3 with the PML4 symbol `$pml4`, set EFER.LME and turn
/// on paging (CR0: clear CD, NW, EM; set PG, NE, MP, PE). Integer
/// instructions and CR/MSR moves only, which the nested KVM's emulator runs
/// (`urt`'s stub depends on that).
#[macro_export]
macro_rules! paging_on_asm {
    ($pml4:literal) => {
        concat!(
            "
    mov eax, cr4
    or eax, 0x620
    mov cr4, eax
    mov eax, offset ",
            $pml4,
            "
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    and eax, 0x9FFFFFFB
    or eax, 0x80000023
    mov cr0, eax
"
        )
    };
}

/// Print to the serial port, through the runtime's `serial::_print`.
///
/// The runtime is named by the path `::rt`: the guests import theirs under
/// that name (`bins-r3` imports `urt` as `rt`), and `rt` and `urt` name
/// themselves so (`extern crate self as rt`). The runtimes re-export this
/// macro; it lives here so that both expand it alike.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { ::rt::serial::_print(format_args!($($arg)*)) };
}

/// Print a line to the serial port (see [`print!`]).
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { ::rt::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Never called with panic = "abort", but the precompiled `core` refers to it.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
