//! Register-level programming of the Intel architectural PMU (version 2+)
//! through a [`PmuBank`]: IA32_PERFEVTSELx, IA32_PMCx, IA32_PERF_GLOBAL_CTRL,
//! IA32_PERF_GLOBAL_STATUS and IA32_PERF_GLOBAL_OVF_CTRL (SDM Vol. 3B ch. 20).

use serde::{Deserialize, Serialize};
use vcpu::PmuBank;
use vcpu::pmu::{evtsel, msr};

use super::caps::PmuCaps;
use crate::error::DriverError;

/// IA32_A_PMC0: full-width alias of IA32_PMC0 (exists when
/// IA32_PERF_CAPABILITIES bit 13 is set). Not in `vcpu::pmu::msr` because the
/// driver only probes for it.
pub const IA32_A_PMC0: u32 = 0x4C1;

/// Which privilege levels count (IA32_PERFEVTSELx USR and OS). For a
/// host-owned counter these are the *guest's* rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rings {
    /// USR: count at CPL 3.
    pub user: bool,
    /// OS: count at CPL 0-2.
    pub kernel: bool,
}

impl Rings {
    /// Both: what whole-VM replay needs.
    pub const ALL: Rings = Rings {
        user: true,
        kernel: true,
    };
}

/// The architectural events the driver programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArchEvent {
    /// C4H, umask 00H: branch instructions retired.
    BranchesRetired,
    /// C0H, umask 00H: instructions retired.
    InstructionsRetired,
}

impl ArchEvent {
    /// Event select | unit mask << 8.
    pub fn code(self) -> u64 {
        match self {
            ArchEvent::BranchesRetired => evtsel::EVENT_BRANCHES_RETIRED,
            ArchEvent::InstructionsRetired => evtsel::EVENT_INSTRUCTIONS_RETIRED,
        }
    }
}

/// One counter's programming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterConfig {
    /// The event.
    pub event: ArchEvent,
    /// Which rings count.
    pub rings: Rings,
    /// Raise a PMI when the counter overflows (INT).
    pub pmi: bool,
}

impl CounterConfig {
    /// The IA32_PERFEVTSELx value, enabled (EN).
    pub fn evtsel(&self) -> u64 {
        let mut v = self.event.code() | evtsel::EN;
        if self.rings.user {
            v |= evtsel::USR;
        }
        if self.rings.kernel {
            v |= evtsel::OS;
        }
        if self.pmi {
            v |= evtsel::INT;
        }
        v
    }
}

/// The driver for one kind of bank (the same for every core of a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelPmu {
    caps: PmuCaps,
    full_width_writes: bool,
}

impl IntelPmu {
    /// Read CPUID.0AH, check that branches can be counted with overflow,
    /// and probe for full-width counter writes (a read of IA32_A_PMC0 that
    /// the bank refuses means there are none).
    pub fn detect(bank: &mut dyn PmuBank) -> Result<Self, DriverError> {
        let caps = PmuCaps::from_cpuid_0a(bank.cpuid_0a());
        caps.check_usable()?;
        let full_width_writes = bank.rdmsr(IA32_A_PMC0).is_ok();
        Ok(IntelPmu {
            caps,
            full_width_writes,
        })
    }

    /// The capabilities found.
    pub fn caps(&self) -> &PmuCaps {
        &self.caps
    }

    /// Whether IA32_A_PMCx exist.
    pub fn full_width_writes(&self) -> bool {
        self.full_width_writes
    }

    /// The largest distance [`IntelPmu::arm_value`] accepts. Without
    /// full-width writes a write to IA32_PMCx keeps bits 31:0 and copies bit
    /// 31 upwards, so only −d with d ≤ 2³¹ is representable.
    pub fn max_arm_distance(&self) -> u64 {
        if self.full_width_writes {
            self.caps.counter_mask()
        } else {
            1 << 31
        }
    }

    /// The counter value that overflows after exactly `distance` more
    /// events: −distance mod 2^width.
    pub fn arm_value(&self, distance: u64) -> Result<u64, DriverError> {
        let max = self.max_arm_distance();
        if distance == 0 || distance > max {
            return Err(DriverError::ArmDistance { distance, max });
        }
        Ok(distance.wrapping_neg() & self.caps.counter_mask())
    }

    /// Events between two counter values, across one wrap-around.
    pub fn events_between(&self, from: u64, to: u64) -> u64 {
        to.wrapping_sub(from) & self.caps.counter_mask()
    }

    fn check(&self, index: u8) -> Result<(), DriverError> {
        if index >= self.caps.gp_counters {
            return Err(DriverError::NoSuchCounter {
                index,
                count: self.caps.gp_counters,
            });
        }
        Ok(())
    }

    /// Write IA32_PERFEVTSELx (`None`: all zero, disabled).
    pub fn program(
        &self,
        bank: &mut dyn PmuBank,
        index: u8,
        config: Option<CounterConfig>,
    ) -> Result<(), DriverError> {
        self.check(index)?;
        let v = config.map_or(0, |c| c.evtsel());
        bank.wrmsr(msr::IA32_PERFEVTSEL0 + index as u32, v)?;
        Ok(())
    }

    /// Read IA32_PERFEVTSELx.
    pub fn evtsel(&self, bank: &mut dyn PmuBank, index: u8) -> Result<u64, DriverError> {
        self.check(index)?;
        Ok(bank.rdmsr(msr::IA32_PERFEVTSEL0 + index as u32)?)
    }

    /// Read IA32_PMCx (masked to the counter width).
    pub fn read_counter(&self, bank: &mut dyn PmuBank, index: u8) -> Result<u64, DriverError> {
        self.check(index)?;
        Ok(bank.rdmsr(msr::IA32_PMC0 + index as u32)? & self.caps.counter_mask())
    }

    /// Write a counter value, through IA32_A_PMCx where it exists, else
    /// through IA32_PMCx, which only takes sign-extended 32-bit values: EDX:EAX
    /// is then written as the 64-bit sign extension of bit 31, which a bank
    /// that ignores EDX, one that checks it, and one that takes all bits
    /// read back alike. The value is checked by reading it back.
    pub fn write_counter(
        &self,
        bank: &mut dyn PmuBank,
        index: u8,
        value: u64,
    ) -> Result<(), DriverError> {
        self.check(index)?;
        let value = value & self.caps.counter_mask();
        let (msr, raw) = if self.full_width_writes {
            (IA32_A_PMC0 + index as u32, value)
        } else {
            let sext = value as u32 as i32 as i64 as u64;
            if sext & self.caps.counter_mask() != value {
                return Err(DriverError::ArmDistance {
                    distance: value.wrapping_neg() & self.caps.counter_mask(),
                    max: self.max_arm_distance(),
                });
            }
            (msr::IA32_PMC0 + index as u32, sext)
        };
        bank.wrmsr(msr, raw)?;
        let read = self.read_counter(bank, index)?;
        if read != value {
            return Err(DriverError::Readback {
                msr,
                wrote: value,
                read,
            });
        }
        Ok(())
    }

    /// IA32_PERF_GLOBAL_CTRL.
    pub fn global_ctrl(&self, bank: &mut dyn PmuBank) -> Result<u64, DriverError> {
        Ok(bank.rdmsr(msr::IA32_PERF_GLOBAL_CTRL)?)
    }

    /// Set or clear counter `index`'s enable bit in IA32_PERF_GLOBAL_CTRL,
    /// leaving the other counters (another vCPU's, the host's) alone.
    pub fn set_enabled(
        &self,
        bank: &mut dyn PmuBank,
        index: u8,
        on: bool,
    ) -> Result<(), DriverError> {
        self.check(index)?;
        let ctrl = self.global_ctrl(bank)?;
        let bit = 1u64 << index;
        let new = if on { ctrl | bit } else { ctrl & !bit };
        if new != ctrl {
            bank.wrmsr(msr::IA32_PERF_GLOBAL_CTRL, new)?;
        }
        Ok(())
    }

    /// IA32_PERF_GLOBAL_STATUS: bit i = general-purpose counter i overflowed.
    pub fn overflow_status(&self, bank: &mut dyn PmuBank) -> Result<u64, DriverError> {
        Ok(bank.rdmsr(msr::IA32_PERF_GLOBAL_STATUS)?)
    }

    /// Clear overflow bits through IA32_PERF_GLOBAL_OVF_CTRL (the status
    /// register itself is read-only in version 2).
    pub fn clear_overflow(&self, bank: &mut dyn PmuBank, mask: u64) -> Result<(), DriverError> {
        if mask != 0 {
            bank.wrmsr(msr::IA32_PERF_GLOBAL_OVF_CTRL, mask)?;
        }
        Ok(())
    }
}
