//! The CPUID values a kvm vCPU reports. KVM answers CPUID inside the kernel
//! (it never exits to user space), so the monitor's CPUID policy is handed
//! over once, at construction, instead of answering `Cpuid` exits.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};
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

/// Clear the RDRAND and RDSEED feature bits: stock KVM cannot make these
/// instructions exit, so their results could not be recorded. A guest that
/// executes them anyway (ignoring CPUID) still gets hardware randomness and
/// its replay diverges, which the replay digests report.
pub fn hide_unrecordable(entries: &mut [CpuidEntry]) {
    for e in entries {
        match (e.leaf, e.subleaf) {
            (1, _) => e.ecx &= !LEAF1_ECX_RDRAND,
            (7, 0) => e.ebx &= !LEAF7_EBX_RDSEED,
            _ => {}
        }
    }
}

/// Whether RDRAND or RDSEED is advertised.
pub fn shows_unrecordable(entries: &[CpuidEntry]) -> bool {
    entries.iter().any(|e| match (e.leaf, e.subleaf) {
        (1, _) => e.ecx & LEAF1_ECX_RDRAND != 0,
        (7, 0) => e.ebx & LEAF7_EBX_RDSEED != 0,
        _ => false,
    })
}

/// The entries of a KVM CPUID list.
pub fn from_kvm(cpuid: &CpuId) -> Vec<CpuidEntry> {
    cpuid
        .as_slice()
        .iter()
        .map(|e| CpuidEntry {
            leaf: e.function,
            subleaf: e.index,
            subleaf_significant: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect()
}

/// A KVM CPUID list from entries.
pub fn to_kvm(entries: &[CpuidEntry]) -> Result<CpuId, String> {
    let kvm: Vec<kvm_cpuid_entry2> = entries
        .iter()
        .map(|e| kvm_cpuid_entry2 {
            function: e.leaf,
            index: e.subleaf,
            flags: if e.subleaf_significant {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            padding: [0; 3],
        })
        .collect();
    CpuId::from_entries(&kvm).map_err(|e| format!("{} CPUID entries: {e:?}", entries.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdrand_and_rdseed_are_hidden_and_nothing_else() {
        let mut e = vec![
            CpuidEntry {
                leaf: 1,
                subleaf: 0,
                subleaf_significant: false,
                eax: 1,
                ebx: 2,
                ecx: u32::MAX,
                edx: u32::MAX,
            },
            CpuidEntry {
                leaf: 7,
                subleaf: 0,
                subleaf_significant: true,
                eax: 0,
                ebx: u32::MAX,
                ecx: 5,
                edx: 6,
            },
        ];
        assert!(shows_unrecordable(&e));
        hide_unrecordable(&mut e);
        assert!(!shows_unrecordable(&e));
        assert_eq!(e[0].ecx, !LEAF1_ECX_RDRAND);
        assert_eq!(e[0].edx, u32::MAX);
        assert_eq!(e[1].ebx, !LEAF7_EBX_RDSEED);
        let back = from_kvm(&to_kvm(&e).unwrap());
        assert_eq!(back, e);
    }
}
