//! The driver's error type.

use vcpu::PmuError;

/// What went wrong programming or reading a counter bank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Version 1 has no IA32_PERF_GLOBAL_CTRL/STATUS, which the driver needs
    /// to start, stop and see overflows of several counters at once.
    #[error(
        "CPUID.0AH reports architectural performance monitoring version {0}; \
         the driver needs version 2 or later (IA32_PERF_GLOBAL_CTRL/STATUS)"
    )]
    UnsupportedVersion(u8),
    /// CPUID.0AH:EBX bit 5 set (or the bit vector too short to contain it).
    #[error(
        "CPUID.0AH: the architectural event 'branch instructions retired' (C4H) \
         is not available (EBX bit 5, vector length {ebx_len})"
    )]
    NoBranchEvent {
        /// CPUID.0AH:`EAX[31:24]`, the length of the EBX bit vector.
        ebx_len: u8,
    },
    /// CPUID.0AH reports no general-purpose counter.
    #[error("CPUID.0AH reports no general-purpose counter")]
    NoCounters,
    /// A counter width the architecture does not allow.
    #[error("CPUID.0AH reports a counter width of {0} bits; expected 32..=64")]
    BadWidth(u8),
    /// A counter index beyond the bank.
    #[error("counter {index} does not exist: the bank has {count} general-purpose counters")]
    NoSuchCounter {
        /// The index asked for.
        index: u8,
        /// How many the bank has.
        count: u8,
    },
    /// An overflow distance the counter cannot be programmed for.
    #[error(
        "cannot arm an overflow {distance} events ahead: must be 1..={max} \
         (writes to IA32_PMCx sign-extend bit 31 unless full-width writes exist)"
    )]
    ArmDistance {
        /// The requested distance.
        distance: u64,
        /// The largest armable distance on this bank.
        max: u64,
    },
    /// Arming a point the counter has already passed.
    #[error("cannot arm an overflow at total {at}: the counter is already at {now}")]
    ArmInPast {
        /// The requested absolute count.
        at: u64,
        /// The current count.
        now: u64,
    },
    /// A value read back differs from what was written: the bank is not
    /// behaving like an architectural PMU.
    #[error("MSR {msr:#x} reads back {read:#x} after writing {wrote:#x}")]
    Readback {
        /// The MSR.
        msr: u32,
        /// Written.
        wrote: u64,
        /// Read.
        read: u64,
    },
    /// The register interface refused an access.
    #[error(transparent)]
    Pmu(#[from] PmuError),
}
