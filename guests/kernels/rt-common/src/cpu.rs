//! The CPU instructions that behave alike in ring 0 and ring 3 (CR4.TSD is
//! clear, so ring 3 may use RDTSC).

/// Read the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no memory effect (and is allowed in ring 3 with CR4.TSD clear).
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// CPUID leaf/subleaf: (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}
