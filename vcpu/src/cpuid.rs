//! The CPUID policy: the CPU model a guest sees, identical on every backend
//! and recorded in the log header, so a recording replays on another host
//! (or backend) with the same answers.

use serde::{Deserialize, Serialize};

/// One CPUID leaf/subleaf and its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    /// EAX input (leaf).
    pub leaf: u32,
    /// ECX input (subleaf); only meaningful when `subleaf_significant`.
    pub subleaf: u32,
    /// Whether the result depends on ECX.
    pub subleaf_significant: bool,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

/// CPUID.01H:ECX.RDRAND.
pub const LEAF1_ECX_RDRAND: u32 = 1 << 30;
/// CPUID.(EAX=07H,ECX=0):EBX.RDSEED.
pub const LEAF7_EBX_RDSEED: u32 = 1 << 18;

/// A complete CPUID table. Leaves not listed answer like the highest basic
/// leaf does on Intel parts: all zeros (a deterministic, documented choice).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuidPolicy {
    /// The entries, at most one per (leaf, subleaf).
    pub entries: Vec<CpuidEntry>,
}

impl CpuidPolicy {
    /// The answer for `leaf`/`subleaf` as (EAX, EBX, ECX, EDX).
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.entries
            .iter()
            .find(|e| e.leaf == leaf && (!e.subleaf_significant || e.subleaf == subleaf))
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .unwrap_or([0; 4])
    }

    /// Clear the RDRAND and RDSEED feature bits, for backends that cannot make
    /// those instructions exit (their results could not be recorded).
    pub fn hide_unrecordable(&mut self) {
        hide_unrecordable(&mut self.entries);
    }

    /// The CPU model CAS Motion presents by default: a 64-bit Intel-style part
    /// with exactly the features the soft vCPU implements, so a guest that
    /// trusts CPUID never meets an instruction one backend lacks.
    ///
    /// Features: FPU, TSC, MSR, PAE, CX8, SEP-less SYSCALL (in 0x8000_0001),
    /// CMOV, CLFSH, FXSR, SSE, SSE2, CX16, POPCNT, RDRAND; leaf 7: RDSEED, BMI1
    /// (TZCNT); 0x8000_0001: LAHF/SAHF, LZCNT (ABM), SYSCALL, NX, 1-GiB pages,
    /// RDTSCP, LM; leaf 0xA: architectural performance monitoring version 2,
    /// 4 general counters of 48 bits, of the architectural events only C0H
    /// (instructions) and C4H (branches) available; an invariant TSC.
    pub fn baseline() -> Self {
        let e = |leaf, subleaf, sig, eax, ebx, ecx, edx| CpuidEntry {
            leaf,
            subleaf,
            subleaf_significant: sig,
            eax,
            ebx,
            ecx,
            edx,
        };
        // "GenuineIntel" as EBX, EDX, ECX.
        let (v_ebx, v_edx, v_ecx) = (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
        // "CAS Motion vCPU" brand string, 48 bytes over three leaves.
        let brand = *b"CAS Motion virtual CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let word =
            |i: usize| u32::from_le_bytes([brand[i], brand[i + 1], brand[i + 2], brand[i + 3]]);
        let leaf1_edx = 1 // FPU
            | 1 << 4 // TSC
            | 1 << 5 // MSR
            | 1 << 6 // PAE
            | 1 << 8 // CX8
            | 1 << 15 // CMOV
            | 1 << 19 // CLFSH
            | 1 << 24 // FXSR
            | 1 << 25 // SSE
            | 1 << 26; // SSE2
        let leaf1_ecx = 1 << 13 // CX16
            | 1 << 23 // POPCNT
            | LEAF1_ECX_RDRAND;
        CpuidPolicy {
            entries: vec![
                e(0, 0, false, 0xA, v_ebx, v_ecx, v_edx),
                // Family 6, model 0x55-ish signature; CLFLUSH line 8 qwords.
                e(1, 0, false, 0x0005_0654, 0x0000_0800, leaf1_ecx, leaf1_edx),
                e(7, 0, true, 0, LEAF7_EBX_RDSEED | 1 << 3, 0, 0),
                // Arch perfmon v2: 4 counters, 48 bits, EBX vector length 7; of
                // the seven architectural events only instructions retired (bit 1)
                // and branches retired (bit 5) are available: a set EBX bit means
                // "not available", so 0b101_1101.
                e(0xA, 0, false, 2 | 4 << 8 | 48 << 16 | 7 << 24, 0x5D, 0, 0),
                e(0x8000_0000, 0, false, 0x8000_0008, 0, 0, 0),
                e(
                    0x8000_0001,
                    0,
                    false,
                    0,
                    0,
                    1 | 1 << 5, // LAHF/SAHF, ABM (LZCNT)
                    1 << 11 | 1 << 20 | 1 << 26 | 1 << 27 | 1 << 29, // SYSCALL NX 1GB RDTSCP LM
                ),
                e(0x8000_0002, 0, false, word(0), word(4), word(8), word(12)),
                e(
                    0x8000_0003,
                    0,
                    false,
                    word(16),
                    word(20),
                    word(24),
                    word(28),
                ),
                e(
                    0x8000_0004,
                    0,
                    false,
                    word(32),
                    word(36),
                    word(40),
                    word(44),
                ),
                e(0x8000_0007, 0, false, 0, 0, 0, 1 << 8), // invariant TSC
                e(0x8000_0008, 0, false, 0x0000_3030, 0, 0, 0), // 48-bit phys/linear
            ],
        }
    }
}

/// Clear the RDRAND and RDSEED feature bits in `entries`.
pub fn hide_unrecordable(entries: &mut [CpuidEntry]) {
    for e in entries {
        match (e.leaf, e.subleaf) {
            (1, _) => e.ecx &= !LEAF1_ECX_RDRAND,
            (7, 0) => e.ebx &= !LEAF7_EBX_RDSEED,
            _ => {}
        }
    }
}

/// Whether RDRAND or RDSEED is advertised in `entries`.
pub fn shows_unrecordable(entries: &[CpuidEntry]) -> bool {
    entries.iter().any(|e| match (e.leaf, e.subleaf) {
        (1, _) => e.ecx & LEAF1_ECX_RDRAND != 0,
        (7, 0) => e.ebx & LEAF7_EBX_RDSEED != 0,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_genuine_intel_with_arch_perfmon_v2() {
        let p = CpuidPolicy::baseline();
        let [max, b, c, d] = p.lookup(0, 0);
        assert_eq!(max, 0xA);
        let mut vendor = Vec::new();
        for r in [b, d, c] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&vendor, b"GenuineIntel");
        let [a, ..] = p.lookup(0xA, 0);
        assert_eq!((a & 0xff, (a >> 8) & 0xff, (a >> 16) & 0xff), (2, 4, 48));
        assert!(shows_unrecordable(&p.entries));
    }

    #[test]
    fn hiding_clears_rdrand_and_rdseed_only() {
        let mut p = CpuidPolicy::baseline();
        let before = p.lookup(1, 0);
        p.hide_unrecordable();
        assert!(!shows_unrecordable(&p.entries));
        let after = p.lookup(1, 0);
        assert_eq!(after[2], before[2] & !LEAF1_ECX_RDRAND);
        assert_eq!(after[3], before[3]);
    }

    #[test]
    fn unknown_leaves_and_subleaves() {
        let p = CpuidPolicy::baseline();
        assert_eq!(p.lookup(0x4000_0000, 0), [0; 4]);
        assert_eq!(p.lookup(7, 1), [0; 4], "leaf 7 is subleaf-significant");
        assert_eq!(p.lookup(1, 99), p.lookup(1, 0), "leaf 1 ignores ECX");
    }
}
