//! The CPU operations of `rt::cpu`, for code that runs in ring 3 with the real
//! RFLAGS.IF = 0.
//!
//! CLI, STI and HLT fault in ring 3 (IOPL 0), so the interrupt flag here is
//! *virtual*: [`cli`]/[`sti`] switch it, and an interrupt "arrives" only when
//! the runtime polls the PIC: on [`sti`] (as a real STI lets a pending
//! interrupt in) and while waiting in [`hlt`]/[`sti_hlt`]. Handlers run with
//! the virtual flag clear, as under an interrupt gate. RDTSC and CPUID are
//! `rt_common`'s.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::interrupts;

/// The virtual RFLAGS.IF.
static IF: AtomicBool = AtomicBool::new(false);

/// Disable (virtual) interrupts.
pub fn cli() {
    IF.store(false, Ordering::SeqCst);
}

/// Enable (virtual) interrupts, taking the ones already pending.
pub fn sti() {
    let was = IF.swap(true, Ordering::SeqCst);
    if !was {
        interrupts::sti_dispatch();
    }
}

/// Wait for the next interrupt. With (virtual) interrupts enabled it is
/// handled before this returns (with any others then pending); with them
/// disabled this returns once one is requested, leaving it pending.
pub fn hlt() {
    if interrupts_enabled() {
        interrupts::wait_and_dispatch();
    } else {
        interrupts::wait_requested();
    }
}

/// Enable interrupts and wait for one, atomically: an interrupt already
/// pending ends the wait instead of being lost (as STI's shadow over HLT).
pub fn sti_hlt() {
    IF.store(true, Ordering::SeqCst);
    interrupts::wait_and_dispatch();
}

/// Whether the virtual RFLAGS.IF is set.
pub fn interrupts_enabled() -> bool {
    IF.load(Ordering::SeqCst)
}

/// Set the virtual interrupt flag without polling (used around handlers).
pub(crate) fn set_interrupts_enabled(on: bool) {
    IF.store(on, Ordering::SeqCst);
}

pub use rt_common::cpu::{cpuid, rdtsc};
