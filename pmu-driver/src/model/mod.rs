//! A register-level model of an Intel architectural PMU (version 2) for
//! tests: one [`SimCore`] per simulated host core, each a [`PmuBank`] with
//! 48-bit (configurable) wrapping counters, IA32_PMCx writes that sign-extend
//! bit 31 (IA32_A_PMCx full-width writes optional), reserved-bit checks that
//! fail like a #GP would, and a PMI signalled `skid` retired instructions
//! after the overflowing one (0 = exact, hardware-like 1-128).
//!
//! It is driven by a synthetic stream of retired instructions
//! ([`SimCore::retire`]); [`toy::ToyVcpu`] runs a scripted instruction
//! stream through it behind the [`vcpu::Vcpu`] trait.

pub mod toy;

use serde::{Deserialize, Serialize};
use vcpu::pmu::{evtsel, msr};
use vcpu::{PmuBank, PmuError};

use crate::arch::{IA32_A_PMC0, PmuCaps};

/// The model's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// General-purpose counters (CPUID.0AH:`EAX[15:8]`).
    pub counters: u8,
    /// Counter width in bits (CPUID.0AH:`EAX[23:16]`).
    pub width: u8,
    /// IA32_A_PMCx exist (IA32_PERF_CAPABILITIES bit 13).
    pub full_width_writes: bool,
    /// Retired instructions between an overflow and its PMI.
    pub skid: u32,
}

impl Default for SimConfig {
    /// Four 48-bit counters, no full-width writes, no skid.
    fn default() -> Self {
        SimConfig {
            counters: 4,
            width: 48,
            full_width_writes: false,
            skid: 0,
        }
    }
}

/// One retired instruction (or one iteration of a REP string instruction),
/// as the PMU sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    /// A branch instruction (counts for C4H).
    pub branch: bool,
    /// The CPL it ran at (USR counts 3, OS counts 0-2).
    pub cpl: u8,
}

/// One core's counter bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCore {
    cfg: SimConfig,
    evtsel: Vec<u64>,
    pmc: Vec<u64>,
    global_ctrl: u64,
    global_status: u64,
    pmi_countdown: Option<u32>,
    pmis: u64,
}

/// EVTSEL bits that are reserved in version 2: AnyThread (21, version 3)
/// and everything above bit 31.
const EVTSEL_RESERVED: u64 = 1 << 21 | 0xffff_ffff_0000_0000;
/// OVF_CTRL bits beyond the counters: OvfBuffer (62) and CondChgd (63).
const OVF_CTRL_EXTRA: u64 = 3 << 62;

impl SimCore {
    /// A core after reset: counters zero and disabled in their event
    /// selects; GLOBAL_CTRL has every general-purpose enable set (its
    /// power-up value, so version-1 software that only uses EN still works).
    pub fn new(cfg: SimConfig) -> Self {
        assert!((1..=32).contains(&cfg.counters) && (32..=63).contains(&cfg.width));
        SimCore {
            cfg,
            evtsel: vec![0; cfg.counters as usize],
            pmc: vec![0; cfg.counters as usize],
            global_ctrl: Self::gp_mask(cfg.counters),
            global_status: 0,
            pmi_countdown: None,
            pmis: 0,
        }
    }

    fn gp_mask(n: u8) -> u64 {
        (1u64 << n) - 1
    }

    fn mask(&self) -> u64 {
        (1u64 << self.cfg.width) - 1
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Change the skid (takes effect at the next overflow).
    pub fn set_skid(&mut self, skid: u32) {
        self.cfg.skid = skid;
    }

    /// PMIs signalled so far.
    pub fn pmis(&self) -> u64 {
        self.pmis
    }

    /// A PMI is on its way (overflowed, skid not yet elapsed).
    pub fn pmi_in_flight(&self) -> bool {
        self.pmi_countdown.is_some()
    }

    /// Account one retired instruction; true if the PMI is signalled at the
    /// boundary after it.
    pub fn retire(&mut self, r: Retired) -> bool {
        if let Some(c) = self.pmi_countdown.as_mut() {
            *c = c.saturating_sub(1);
        }
        for i in 0..self.cfg.counters as usize {
            if !self.counts(i, r) {
                continue;
            }
            self.pmc[i] = (self.pmc[i] + 1) & self.mask();
            if self.pmc[i] == 0 {
                self.global_status |= 1 << i;
                if self.evtsel[i] & evtsel::INT != 0 && self.pmi_countdown.is_none() {
                    self.pmi_countdown = Some(self.cfg.skid);
                }
            }
        }
        if self.pmi_countdown == Some(0) {
            self.pmi_countdown = None;
            self.pmis += 1;
            return true;
        }
        false
    }

    /// Account `n` identical retired instructions quickly (in bulk between
    /// wrap-arounds), stopping right after one that signals the PMI.
    /// Returns how many were retired and whether the PMI was signalled.
    pub fn retire_many(&mut self, r: Retired, n: u64) -> (u64, bool) {
        let mut done = 0;
        while done < n {
            let mut bulk = n - done;
            let counting: Vec<usize> = (0..self.cfg.counters as usize)
                .filter(|&i| self.counts(i, r))
                .collect();
            for &i in &counting {
                bulk = bulk.min(self.mask() - self.pmc[i]);
            }
            if let Some(c) = self.pmi_countdown {
                bulk = bulk.min((c as u64).saturating_sub(1));
            }
            if bulk > 0 {
                for &i in &counting {
                    self.pmc[i] += bulk;
                }
                if let Some(c) = self.pmi_countdown.as_mut() {
                    *c -= bulk as u32;
                }
                done += bulk;
                continue;
            }
            done += 1;
            if self.retire(r) {
                return (done, true);
            }
        }
        (done, false)
    }

    /// Whether counter `i` counts retired instruction `r` now.
    fn counts(&self, i: usize, r: Retired) -> bool {
        let sel = self.evtsel[i];
        let enabled = sel & evtsel::EN != 0 && self.global_ctrl & (1 << i) != 0;
        let ring = if r.cpl == 3 {
            sel & evtsel::USR != 0
        } else {
            sel & evtsel::OS != 0
        };
        let umask = (sel >> evtsel::UMASK_SHIFT) & 0xff;
        let matches = umask == 0
            && match sel & evtsel::EVENT_MASK {
                evtsel::EVENT_INSTRUCTIONS_RETIRED => true,
                evtsel::EVENT_BRANCHES_RETIRED => r.branch,
                _ => false,
            };
        enabled && ring && matches
    }

    fn gp_index(&self, msr: u32, base: u32) -> Option<usize> {
        let i = msr.checked_sub(base)? as usize;
        (i < self.cfg.counters as usize).then_some(i)
    }
}

impl PmuBank for SimCore {
    fn cpuid_0a(&self) -> [u32; 4] {
        PmuCaps {
            version: 2,
            gp_counters: self.cfg.counters,
            gp_width: self.cfg.width,
            ebx_len: 7,
            unavailable: 0,
            fixed_counters: 0,
            fixed_width: 0,
        }
        .to_cpuid_0a()
    }

    fn rdmsr(&mut self, m: u32) -> Result<u64, PmuError> {
        if let Some(i) = self.gp_index(m, msr::IA32_PMC0) {
            return Ok(self.pmc[i]);
        }
        if let Some(i) = self.gp_index(m, IA32_A_PMC0) {
            if self.cfg.full_width_writes {
                return Ok(self.pmc[i]);
            }
        }
        if let Some(i) = self.gp_index(m, msr::IA32_PERFEVTSEL0) {
            return Ok(self.evtsel[i]);
        }
        match m {
            msr::IA32_PERF_GLOBAL_CTRL => Ok(self.global_ctrl),
            msr::IA32_PERF_GLOBAL_STATUS => Ok(self.global_status),
            msr::IA32_PERF_GLOBAL_OVF_CTRL => Ok(0),
            _ => Err(PmuError::NoSuchMsr(m)),
        }
    }

    fn wrmsr(&mut self, m: u32, value: u64) -> Result<(), PmuError> {
        let reserved = Err(PmuError::Reserved { msr: m, value });
        if let Some(i) = self.gp_index(m, msr::IA32_PMC0) {
            // Bits 31:0 written, bit 31 copied upwards; EDX ignored.
            self.pmc[i] = (value as u32 as i32 as i64 as u64) & self.mask();
            return Ok(());
        }
        if let Some(i) = self.gp_index(m, IA32_A_PMC0) {
            if self.cfg.full_width_writes {
                if value & !self.mask() != 0 {
                    return reserved;
                }
                self.pmc[i] = value;
                return Ok(());
            }
        }
        if let Some(i) = self.gp_index(m, msr::IA32_PERFEVTSEL0) {
            if value & EVTSEL_RESERVED != 0 {
                return reserved;
            }
            self.evtsel[i] = value;
            return Ok(());
        }
        let gp = Self::gp_mask(self.cfg.counters);
        match m {
            msr::IA32_PERF_GLOBAL_CTRL if value & !gp == 0 => {
                self.global_ctrl = value;
                Ok(())
            }
            msr::IA32_PERF_GLOBAL_OVF_CTRL if value & !(gp | OVF_CTRL_EXTRA) == 0 => {
                self.global_status &= !value;
                Ok(())
            }
            // Read-only, or reserved bits set.
            msr::IA32_PERF_GLOBAL_CTRL
            | msr::IA32_PERF_GLOBAL_OVF_CTRL
            | msr::IA32_PERF_GLOBAL_STATUS => reserved,
            _ => Err(PmuError::NoSuchMsr(m)),
        }
    }
}

/// Several simulated host cores.
#[derive(Debug, Clone)]
pub struct SimMachine {
    /// One bank per core.
    pub cores: Vec<SimCore>,
}

impl SimMachine {
    /// `n` identical cores.
    pub fn new(n: usize, cfg: SimConfig) -> Self {
        SimMachine {
            cores: (0..n).map(|_| SimCore::new(cfg)).collect(),
        }
    }
}
