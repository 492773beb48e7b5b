//! Ring-3 execution: building a frame that IRETs into user mode, a
//! synchronous "call this function in ring 3" (`run`), and the syscall
//! convention (`int 0x80`, RAX = number, RDI = argument, result in RAX).
//!
//! Ring 3 matters on the KVM backend here, where ring-0 code is emulated but
//! ring-3 code runs natively, and for the timer guest's preemptive tasks.

use crate::gdt;
use crate::interrupts::{self, Frame};
use crate::sync::Global;

/// Syscall vector (DPL 3).
pub const SYSCALL_VECTOR: u8 = 0x80;
/// Vector the kernel uses to switch into a prepared ring-3 frame.
pub const ENTER_VECTOR: u8 = 0x81;
/// Syscall number: end the ring-3 code with a result (RDI).
pub const SYS_EXIT: u64 = 0;

/// Ring-3 code's entry: called with `arg` and the function to run; must
/// end with the exit syscall.
pub type Trampoline = extern "C" fn(u64, u64) -> !;

/// Write a frame at the top of the kernel stack ending at `kstack_top` that
/// resumes in ring 3 at `entry(rdi = a0, rsi = a1)` on the user stack ending
/// at `ustack_top`, with interrupts enabled.
///
/// # Safety
/// `kstack_top` must be the 16-aligned end of a writable kernel stack at
/// least one [`Frame`] deep that nothing else uses.
pub unsafe fn prepare_frame(
    kstack_top: u64,
    entry: Trampoline,
    a0: u64,
    a1: u64,
    ustack_top: u64,
) -> *mut Frame {
    let frame = (kstack_top - core::mem::size_of::<Frame>() as u64) as *mut Frame;
    let f = Frame {
        xmm: [[0; 2]; 16],
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: a0,
        rsi: a1,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip: entry as usize as u64,
        cs: gdt::USER_CS as u64,
        rflags: 0x202,
        // A function is entered with RSP = 8 mod 16 (its return address pushed).
        rsp: (ustack_top & !15) - 8,
        ss: gdt::USER_DS as u64,
    };
    // SAFETY: the caller guarantees the stack is ours and deep enough.
    unsafe { frame.write(f) };
    frame
}

/// Make a syscall from ring 3.
pub fn syscall(nr: u64, arg: u64) -> u64 {
    let ret: u64;
    // SAFETY: the kernel's handler for vector 0x80 implements the syscall;
    // registers other than RAX are restored from the saved frame.
    unsafe { core::arch::asm!("int 0x80", inlateout("rax") nr => ret, in("rdi") arg) };
    ret
}

#[repr(C, align(16))]
struct Stack([u8; 65536]);
static USER_STACK: Global<Stack> = Global::new(Stack([0; 65536]));
static USER_KSTACK: Global<Stack> = Global::new(Stack([0; 65536]));
/// The kernel frame `run` resumes when the ring-3 code exits.
static KERNEL_FRAME: Global<usize> = Global::new(0);
/// The ring-3 frame `run` enters.
static USER_FRAME: Global<usize> = Global::new(0);

extern "C" fn trampoline(arg: u64, f: u64) -> ! {
    // SAFETY: `run` passes a `fn(u64) -> u64` as `f`.
    let f: fn(u64) -> u64 = unsafe { core::mem::transmute(f as usize) };
    let r = f(arg);
    syscall(SYS_EXIT, r);
    unreachable!("exit syscall returned");
}

fn enter_handler(frame: *mut Frame) -> *mut Frame {
    // SAFETY: only the dispatcher calls this, with interrupts off.
    unsafe {
        *KERNEL_FRAME.get() = frame as usize;
        *USER_FRAME.get() as *mut Frame
    }
}

fn exit_handler(frame: *mut Frame) -> *mut Frame {
    // SAFETY: the dispatcher passes the syscalling frame; interrupts are off.
    unsafe {
        let nr = (*frame).rax;
        if nr != SYS_EXIT {
            (*frame).rax = u64::MAX;
            return frame;
        }
        let kernel = *KERNEL_FRAME.get() as *mut Frame;
        if kernel.is_null() {
            crate::println!("exit syscall without a kernel to return to");
            crate::exit(crate::EXIT_EXCEPTION);
        }
        (*kernel).rax = (*frame).rdi;
        *KERNEL_FRAME.get() = 0;
        kernel
    }
}

/// Run `f(arg)` in ring 3 on a private stack and return its result.
/// Interrupts are enabled while it runs (the frame has IF = 1); handlers
/// for enabled IRQs keep working.
pub fn run(f: fn(u64) -> u64, arg: u64) -> u64 {
    interrupts::set_handler(ENTER_VECTOR, enter_handler);
    interrupts::set_handler(SYSCALL_VECTOR, exit_handler);
    let ktop = USER_KSTACK.get() as u64 + 65536;
    let utop = USER_STACK.get() as u64 + 65536;
    gdt::set_rsp0(ktop);
    // SAFETY: the private kernel stack is only used by this ring-3 code.
    let frame = unsafe { prepare_frame(ktop, trampoline, arg, f as usize as u64, utop) };
    // SAFETY: one CPU, handlers not running.
    unsafe { *USER_FRAME.get() = frame as usize };
    let ret: u64;
    // SAFETY: vector 0x81 switches to the prepared frame; when the ring-3
    // code exits, this frame resumes with RAX = the result and every other
    // register as it was. Memory may have been changed by the ring-3 code.
    unsafe { core::arch::asm!("int 0x81", lateout("rax") ret) };
    ret
}
