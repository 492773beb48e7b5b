//! The CPUID values a kvm vCPU reports. KVM answers CPUID inside the kernel
//! (it never exits to user space), so the monitor's CPUID policy is handed
//! over once, at construction, instead of answering `Cpuid` exits.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

pub use vcpu::cpuid::{
    CpuidEntry, LEAF1_ECX_RDRAND, LEAF7_EBX_RDSEED, hide_unrecordable, shows_unrecordable,
};

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
