//! A [`PmuBank`] over one perf_event counter: the register interface the
//! driver and landing code program, emulated on Linux perf, so a KVM backend
//! can hand out `Vcpu::host_pmu` on hosts where perf counts guest branches.
//!
//! It presents an architectural PMU version 2 with one 48-bit
//! general-purpose counter and full-width writes (IA32_A_PMC0): the emulated
//! counter value is `(perf count + offset) mod 2^48`, a write sets the
//! offset, and with INT set the perf period is armed to the distance to the
//! wrap, so the overflow signal comes when the emulated counter overflows.
//! GLOBAL_STATUS is derived from the count; OVF_CTRL clears it. The event
//! select must ask for what the perf counter was opened for (C4H, and the
//! USR/OS rings matching `exclude_kernel`): perf cannot change those on an
//! open counter, so anything else is refused like a reserved bit.
//!
//! Limitation: `vcpu::PmuError` has no variant for a host failure, so a
//! failing read(2) of the perf descriptor (not expected on a live one) is
//! reported as `NoSuchMsr` of the MSR being accessed.

use vcpu::pmu::{evtsel, msr};
use vcpu::{PmuBank, PmuError};

use super::counter::{PerfCounter, PerfEvent};
use crate::arch::{IA32_A_PMC0, PmuCaps};

const WIDTH: u8 = 48;
const MASK: u64 = (1 << WIDTH) - 1;

/// One emulated counter on a perf_event counter.
#[derive(Debug)]
pub struct PerfBank {
    counter: PerfCounter,
    evtsel: u64,
    global_ctrl: u64,
    offset: u64,
    /// Perf count at which the emulated counter next wraps (since the last
    /// write or status clear).
    wrap_at: u64,
    status: bool,
    running: bool,
}

impl PerfBank {
    /// Wrap an armable counter (see [`super::CounterSpec::armable`]).
    pub fn new(counter: PerfCounter) -> Result<Self, super::PerfError> {
        if !counter.spec().armable {
            return Err(super::PerfError {
                op: "PerfBank::new (the counter must be armable)".into(),
                errno: libc::EINVAL,
            });
        }
        counter.disable()?;
        let count = counter.count()?;
        Ok(PerfBank {
            counter,
            evtsel: 0,
            global_ctrl: 1,
            offset: count.wrapping_neg(),
            wrap_at: count + (1 << WIDTH),
            status: false,
            running: false,
        })
    }

    /// The perf counter (to route its overflow signal).
    pub fn counter(&self) -> &PerfCounter {
        &self.counter
    }

    fn count(&self, m: u32) -> Result<u64, PmuError> {
        self.counter.count().map_err(|_| PmuError::NoSuchMsr(m))
    }

    fn value(&self, m: u32) -> Result<u64, PmuError> {
        Ok(self.count(m)?.wrapping_add(self.offset) & MASK)
    }

    fn refresh_status(&mut self, m: u32) -> Result<(), PmuError> {
        if self.count(m)? >= self.wrap_at {
            self.status = true;
        }
        Ok(())
    }

    /// The event select this counter can honour.
    fn allowed_evtsel(&self) -> u64 {
        let code = match self.counter.spec().event {
            PerfEvent::BranchInstructions => evtsel::EVENT_BRANCHES_RETIRED,
            PerfEvent::Raw(c) => c & 0xffff,
            // Software events stand in for branches in tests.
            PerfEvent::SoftwarePageFaults | PerfEvent::SoftwareTaskClock => {
                evtsel::EVENT_BRANCHES_RETIRED
            }
        };
        let rings = if self.counter.spec().exclude_kernel {
            evtsel::USR
        } else {
            evtsel::USR | evtsel::OS
        };
        code | rings
    }

    /// Re-program perf from the emulated registers.
    fn apply(&mut self, m: u32) -> Result<(), PmuError> {
        let fail = |_| PmuError::NoSuchMsr(m);
        let run = self.evtsel & evtsel::EN != 0 && self.global_ctrl & 1 != 0;
        if self.evtsel & evtsel::INT != 0 {
            let now = self.count(m)?;
            let left = self.wrap_at.saturating_sub(now).max(1);
            self.counter.arm(left).map_err(fail)?;
        } else {
            self.counter.disarm().map_err(fail)?;
        }
        if run != self.running {
            if run {
                self.counter.enable().map_err(fail)?;
            } else {
                self.counter.disable().map_err(fail)?;
            }
            self.running = run;
        }
        Ok(())
    }
}

impl PmuBank for PerfBank {
    fn cpuid_0a(&self) -> [u32; 4] {
        PmuCaps {
            version: 2,
            gp_counters: 1,
            gp_width: WIDTH,
            ebx_len: 7,
            // Only "branch instructions retired" (bit 5) is available.
            unavailable: 0x7f & !(1 << 5),
            fixed_counters: 0,
            fixed_width: 0,
        }
        .to_cpuid_0a()
    }

    fn rdmsr(&mut self, m: u32) -> Result<u64, PmuError> {
        match m {
            msr::IA32_PMC0 | IA32_A_PMC0 => self.value(m),
            msr::IA32_PERFEVTSEL0 => Ok(self.evtsel),
            msr::IA32_PERF_GLOBAL_CTRL => Ok(self.global_ctrl),
            msr::IA32_PERF_GLOBAL_STATUS => {
                self.refresh_status(m)?;
                Ok(self.status as u64)
            }
            msr::IA32_PERF_GLOBAL_OVF_CTRL => Ok(0),
            _ => Err(PmuError::NoSuchMsr(m)),
        }
    }

    fn wrmsr(&mut self, m: u32, value: u64) -> Result<(), PmuError> {
        let reserved = Err(PmuError::Reserved { msr: m, value });
        match m {
            msr::IA32_PMC0 | IA32_A_PMC0 => {
                let v = if m == msr::IA32_PMC0 {
                    value as u32 as i32 as i64 as u64 & MASK
                } else if value & !MASK != 0 {
                    return reserved;
                } else {
                    value
                };
                self.refresh_status(m)?;
                let now = self.count(m)?;
                self.offset = v.wrapping_sub(now);
                self.wrap_at = now + ((1 << WIDTH) - v);
                self.apply(m)
            }
            msr::IA32_PERFEVTSEL0 => {
                let sel = value & !(evtsel::EN | evtsel::INT);
                if value & evtsel::EN != 0 && sel != self.allowed_evtsel() {
                    return reserved;
                }
                if value & !(0xffff_ffff & !(1 << 21)) != 0 {
                    return reserved;
                }
                self.evtsel = value;
                self.apply(m)
            }
            msr::IA32_PERF_GLOBAL_CTRL if value & !1 == 0 => {
                self.global_ctrl = value;
                self.apply(m)
            }
            msr::IA32_PERF_GLOBAL_OVF_CTRL if value & !(1 | 3 << 62) == 0 => {
                if value & 1 != 0 {
                    self.refresh_status(m)?;
                    if self.status {
                        self.status = false;
                        // The emulated counter's next wrap is 2^48 further on.
                        self.wrap_at += 1 << WIDTH;
                    }
                }
                Ok(())
            }
            msr::IA32_PERF_GLOBAL_CTRL
            | msr::IA32_PERF_GLOBAL_OVF_CTRL
            | msr::IA32_PERF_GLOBAL_STATUS => reserved,
            _ => Err(PmuError::NoSuchMsr(m)),
        }
    }
}
