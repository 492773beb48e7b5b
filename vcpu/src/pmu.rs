//! The host-owned performance-counter bank, Intel architectural performance
//! monitoring version 2, as a register interface (RDMSR/WRMSR on one core's
//! counters). The pmu-driver programs it; backends implement it.

/// MSR numbers (Intel SDM Vol. 4).
pub mod msr {
    /// IA32_PMC0; PMCn = PMC0 + n.
    pub const IA32_PMC0: u32 = 0xC1;
    /// IA32_PERFEVTSEL0; PERFEVTSELn = PERFEVTSEL0 + n.
    pub const IA32_PERFEVTSEL0: u32 = 0x186;
    /// IA32_FIXED_CTR0 (instructions retired); FIXED_CTRn = FIXED_CTR0 + n.
    pub const IA32_FIXED_CTR0: u32 = 0x309;
    /// IA32_FIXED_CTR_CTRL.
    pub const IA32_FIXED_CTR_CTRL: u32 = 0x38D;
    /// IA32_PERF_GLOBAL_STATUS.
    pub const IA32_PERF_GLOBAL_STATUS: u32 = 0x38E;
    /// IA32_PERF_GLOBAL_CTRL.
    pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
    /// IA32_PERF_GLOBAL_OVF_CTRL.
    pub const IA32_PERF_GLOBAL_OVF_CTRL: u32 = 0x390;
}

/// IA32_PERFEVTSELx fields.
pub mod evtsel {
    /// Event select (bits 7:0).
    pub const EVENT_MASK: u64 = 0xff;
    /// Unit mask (bits 15:8).
    pub const UMASK_SHIFT: u32 = 8;
    /// Count in ring 3.
    pub const USR: u64 = 1 << 16;
    /// Count in rings 0-2.
    pub const OS: u64 = 1 << 17;
    /// Raise a PMI on overflow.
    pub const INT: u64 = 1 << 20;
    /// Enable the counter.
    pub const EN: u64 = 1 << 22;
    /// Architectural event: instructions retired.
    pub const EVENT_INSTRUCTIONS_RETIRED: u64 = 0xC0;
    /// Architectural event: branch instructions retired.
    pub const EVENT_BRANCHES_RETIRED: u64 = 0xC4;
}

/// What went wrong at the register interface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PmuError {
    /// The MSR is not part of this bank (#GP on hardware).
    #[error("MSR {0:#x} is not a performance-monitoring register of this bank")]
    NoSuchMsr(u32),
    /// A reserved bit was set (#GP on hardware).
    #[error("reserved bits set writing {value:#x} to MSR {msr:#x}")]
    Reserved {
        /// The MSR.
        msr: u32,
        /// The value.
        value: u64,
    },
}

/// One core's (or one vCPU's) counter bank.
pub trait PmuBank {
    /// CPUID.0AH: (EAX, EBX, ECX, EDX) describing version, counters and widths.
    fn cpuid_0a(&self) -> [u32; 4];
    /// RDMSR.
    fn rdmsr(&mut self, msr: u32) -> Result<u64, PmuError>;
    /// WRMSR.
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), PmuError>;
}
