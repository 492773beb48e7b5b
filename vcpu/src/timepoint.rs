//! Timepoints: where in a vCPU's execution an asynchronous event happened.

use serde::{Deserialize, Serialize};

/// A point in one vCPU's execution: the ReVirt/CAS Motion triple plus the vCPU.
///
/// `branches` alone does not name an instruction (a straight-line run between
/// two branches has many); `rip` picks the instruction within that run, and
/// `rcx` picks the iteration of a REP-prefixed string instruction, which
/// repeats at the same `rip` with RCX counting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timepoint {
    /// The vCPU index.
    pub vcpu: u32,
    /// Retired branch instructions on that vCPU since reset.
    pub branches: u64,
    /// Guest RIP of the next instruction to execute.
    pub rip: u64,
    /// Guest RCX (the remaining count of a REP string instruction).
    pub rcx: u64,
}

impl Timepoint {
    /// Order two timepoints of the same vCPU, `None` across vCPUs (their
    /// executions are only ordered through shared events, not by counters).
    ///
    /// Within a vCPU, more retired branches is later. With equal branches both
    /// points lie on one straight-line run, which executes at increasing RIP,
    /// except that a REP string instruction repeats at one RIP with RCX
    /// decreasing: so higher RIP is later, and at equal RIP lower RCX is later.
    pub fn cmp_same_vcpu(&self, other: &Timepoint) -> Option<std::cmp::Ordering> {
        if self.vcpu != other.vcpu {
            return None;
        }
        Some(
            self.branches
                .cmp(&other.branches)
                .then(self.rip.cmp(&other.rip))
                .then(other.rcx.cmp(&self.rcx)),
        )
    }
}

impl PartialOrd for Timepoint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.cmp_same_vcpu(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    fn tp(branches: u64, rip: u64, rcx: u64) -> Timepoint {
        Timepoint {
            vcpu: 0,
            branches,
            rip,
            rcx,
        }
    }

    #[test]
    fn orders_by_branches_then_rip_then_falling_rcx() {
        assert_eq!(tp(1, 0x9000, 0).partial_cmp(&tp(2, 0x1000, 0)), Some(Less));
        assert_eq!(tp(2, 0x1000, 5).partial_cmp(&tp(2, 0x1004, 9)), Some(Less));
        assert_eq!(tp(2, 0x1000, 5).partial_cmp(&tp(2, 0x1000, 4)), Some(Less));
        assert_eq!(tp(2, 0x1000, 4).partial_cmp(&tp(2, 0x1000, 4)), Some(Equal));
    }

    #[test]
    fn different_vcpus_are_unordered() {
        let a = tp(1, 0, 0);
        let b = Timepoint { vcpu: 1, ..a };
        assert_eq!(a.partial_cmp(&b), None);
    }
}
