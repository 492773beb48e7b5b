//! Single CPU instructions. CLI/STI/HLT are compiler barriers (no `nomem`):
//! interrupt handlers change memory across them.

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

/// Read the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no memory effect.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// CPUID leaf/subleaf: (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}
