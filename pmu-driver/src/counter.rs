//! A vCPU's branch counter as a 64-bit total on top of one 48-bit hardware
//! counter: arm an overflow at an absolute count, notice it, and move the
//! whole context from one host core's bank to another's.
//!
//! The hardware counter is only ever written with −d (d ≤ the bank's
//! largest armable distance), as Linux perf does, because without
//! full-width writes nothing else is writable. The total is kept in software:
//! `total = base_total + (counter − base_counter) mod 2^width`, folded at
//! every write; this holds across any number of wrap-arounds as long as
//! fewer than 2^width events pass between two reads (2^48 branches: days).

use serde::{Deserialize, Serialize};
use vcpu::PmuBank;

use crate::arch::{ArchEvent, CounterConfig, IntelPmu, Rings};
use crate::error::DriverError;

/// A vCPU's counter context, independent of which core and counter index
/// held it: what moves when the vCPU thread migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterContext {
    /// Which guest rings count.
    pub rings: Rings,
    /// Branches retired so far.
    pub total: u64,
    /// The absolute count whose arrival should raise a PMI, if armed.
    pub armed_at: Option<u64>,
    /// The armed point was reached (overflow seen) and not yet reported by
    /// [`BranchCounter::poll_overflow`].
    pub overflow_pending: bool,
}

/// What [`BranchCounter::poll_overflow`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The armed count has been reached (or passed, by the skid).
    Reached {
        /// The total now.
        total: u64,
    },
    /// Not (yet): no overflow, or an intermediate one (a distance beyond one
    /// hardware arming, or a wrap while idle) that has been re-armed.
    NotYet,
}

/// A vCPU's retired-branch counter on one general-purpose counter of a bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchCounter {
    pmu: IntelPmu,
    index: u8,
    rings: Rings,
    base_total: u64,
    base_counter: u64,
    armed_at: Option<u64>,
    overflow_pending: bool,
}

impl BranchCounter {
    /// Program counter `index` of `bank` to count branches in `rings`,
    /// starting from `total` (0 at vCPU reset), unarmed, and enable it.
    pub fn start(
        bank: &mut dyn PmuBank,
        pmu: IntelPmu,
        index: u8,
        rings: Rings,
        total: u64,
    ) -> Result<Self, DriverError> {
        Self::restore(
            bank,
            pmu,
            index,
            &CounterContext {
                rings,
                total,
                armed_at: None,
                overflow_pending: false,
            },
        )
    }

    /// Load a saved context into counter `index` of `bank` (another core's,
    /// typically) and enable it.
    pub fn restore(
        bank: &mut dyn PmuBank,
        pmu: IntelPmu,
        index: u8,
        ctx: &CounterContext,
    ) -> Result<Self, DriverError> {
        let mut c = BranchCounter {
            pmu,
            index,
            rings: ctx.rings,
            base_total: ctx.total,
            base_counter: 0,
            armed_at: ctx.armed_at,
            overflow_pending: ctx.overflow_pending,
        };
        pmu.set_enabled(bank, index, false)?;
        pmu.clear_overflow(bank, 1 << index)?;
        match ctx.armed_at {
            Some(at) if at > ctx.total => c.load(bank, at - ctx.total, true)?,
            Some(_) => {
                // Reached before the move: report it, count on quietly.
                c.overflow_pending = true;
                c.armed_at = None;
                c.load_idle(bank)?;
            }
            None => c.load_idle(bank)?,
        }
        Ok(c)
    }

    /// Stop the counter and take its context off this bank (leaving the
    /// counter disabled and zeroed for whoever runs on the core next).
    pub fn save(self, bank: &mut dyn PmuBank) -> Result<CounterContext, DriverError> {
        self.pmu.set_enabled(bank, self.index, false)?;
        let total = self.total(bank)?;
        let reached = self.armed_at.is_some_and(|at| total >= at);
        self.pmu.program(bank, self.index, None)?;
        self.pmu.clear_overflow(bank, 1 << self.index)?;
        self.pmu.write_counter(bank, self.index, 0)?;
        // An intermediate overflow (status bit short of the armed count)
        // needs no carrying: restore re-arms the remaining distance.
        Ok(CounterContext {
            rings: self.rings,
            total,
            armed_at: if reached { None } else { self.armed_at },
            overflow_pending: self.overflow_pending || reached,
        })
    }

    /// The counter's index in its bank.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The driver it runs on.
    pub fn pmu(&self) -> &IntelPmu {
        &self.pmu
    }

    /// The absolute count an overflow is armed for.
    pub fn armed_at(&self) -> Option<u64> {
        self.armed_at
    }

    /// Branches retired so far.
    pub fn total(&self, bank: &mut dyn PmuBank) -> Result<u64, DriverError> {
        let now = self.pmu.read_counter(bank, self.index)?;
        Ok(self
            .base_total
            .wrapping_add(self.pmu.events_between(self.base_counter, now)))
    }

    /// Raise a PMI when the total reaches `at` (the counter overflows on the
    /// event that makes the total `at`; the PMI follows after the hardware's
    /// skid). Distances beyond one arming are covered by re-arming in
    /// [`BranchCounter::poll_overflow`].
    pub fn arm_at(&mut self, bank: &mut dyn PmuBank, at: u64) -> Result<(), DriverError> {
        self.pmu.set_enabled(bank, self.index, false)?;
        let now = self.total(bank)?;
        if at <= now {
            self.pmu.set_enabled(bank, self.index, true)?;
            return Err(DriverError::ArmInPast { at, now });
        }
        self.armed_at = Some(at);
        self.overflow_pending = false;
        self.pmu.clear_overflow(bank, 1 << self.index)?;
        self.base_total = now;
        self.load(bank, at - now, true)
    }

    /// Keep counting without a PMI.
    pub fn disarm(&mut self, bank: &mut dyn PmuBank) -> Result<(), DriverError> {
        self.pmu.set_enabled(bank, self.index, false)?;
        let now = self.total(bank)?;
        self.armed_at = None;
        self.pmu.clear_overflow(bank, 1 << self.index)?;
        self.base_total = now;
        self.load_idle(bank)
    }

    /// Look at (and clear) this counter's bit in IA32_PERF_GLOBAL_STATUS and
    /// say whether the armed count has been reached. An overflow short of it
    /// (a long distance, or a wrap while idle) is re-armed here. Once
    /// reached, the counter is disarmed (no further PMIs) and keeps counting.
    pub fn poll_overflow(&mut self, bank: &mut dyn PmuBank) -> Result<Overflow, DriverError> {
        let bit = 1u64 << self.index;
        let status = self.pmu.overflow_status(bank)? & bit != 0;
        let total = self.total(bank)?;
        if std::mem::take(&mut self.overflow_pending) {
            if status {
                self.pmu.clear_overflow(bank, bit)?;
            }
            return Ok(Overflow::Reached { total });
        }
        match self.armed_at {
            Some(at) if total >= at => {
                self.disarm(bank)?;
                Ok(Overflow::Reached { total })
            }
            Some(at) if status => {
                // Intermediate overflow: arm the rest of the way.
                self.arm_at(bank, at)?;
                Ok(Overflow::NotYet)
            }
            None if status => {
                self.disarm(bank)?;
                Ok(Overflow::NotYet)
            }
            _ => Ok(Overflow::NotYet),
        }
    }

    /// Write the hardware counter to overflow `distance` events from now
    /// (capped at one arming), program the event select, enable.
    fn load(
        &mut self,
        bank: &mut dyn PmuBank,
        distance: u64,
        pmi: bool,
    ) -> Result<(), DriverError> {
        let d = distance.min(self.pmu.max_arm_distance());
        let value = self.pmu.arm_value(d)?;
        self.pmu.program(
            bank,
            self.index,
            Some(CounterConfig {
                event: ArchEvent::BranchesRetired,
                rings: self.rings,
                pmi,
            }),
        )?;
        self.pmu.write_counter(bank, self.index, value)?;
        self.base_counter = value;
        self.pmu.set_enabled(bank, self.index, true)
    }

    /// Count without a PMI, as far from a wrap as the counter allows.
    fn load_idle(&mut self, bank: &mut dyn PmuBank) -> Result<(), DriverError> {
        let max = self.pmu.max_arm_distance();
        self.load(bank, max, false)
    }
}
