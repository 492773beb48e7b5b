//! Single CPU instructions. CLI/STI/HLT are compiler barriers (no `nomem`):
//! interrupt handlers change memory across them. RDTSC and CPUID are
//! `rt_common`'s.

/// Disable interrupts.
pub fn cli() {
    // SAFETY: only changes RFLAGS.IF.
    unsafe { core::arch::asm!("cli", options(nostack)) }
}

/// Enable interrupts.
pub fn sti() {
    // SAFETY: only changes RFLAGS.IF; handlers are installed before any IRQ is unmasked.
    unsafe { core::arch::asm!("sti", options(nostack)) }
}

/// Halt until the next interrupt.
pub fn hlt() {
    // SAFETY: waits for an interrupt; no memory effect.
    unsafe { core::arch::asm!("hlt", options(nostack)) }
}

/// Enable interrupts and halt, atomically (STI's interrupt shadow covers HLT,
/// so an interrupt that is already pending wakes the HLT instead of being
/// taken just before it).
pub fn sti_hlt() {
    // SAFETY: as sti and hlt.
    unsafe { core::arch::asm!("sti", "hlt", options(nostack)) }
}

/// Whether RFLAGS.IF is set.
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack.
    unsafe {
        core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags))
    };
    flags & 0x200 != 0
}

pub use rt_common::cpu::{cpuid, rdtsc};
