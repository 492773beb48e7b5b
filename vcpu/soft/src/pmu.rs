//! The virtual PMU: Intel architectural performance monitoring version 2,
//! four general-purpose 48-bit counters, events C0H (instructions retired)
//! and C4H (branch instructions retired) with USR/OS/EN/INT.
//!
//! Counters are not incremented per instruction: a bank remembers the vCPU's
//! retired counts at its last synchronisation and the privilege level since
//! then, and folds the difference in when read, written, or when the CPL
//! changes (CPL only changes at block-ending instructions and at event
//! delivery, so the whole interval ran at one CPL). An instruction counts at
//! the CPL it started at (SYSCALL counts as user, SYSRET as kernel).
//!
//! Two banks exist per vCPU: the guest's (MSRs 0xC1.., 0x186.., 0x38E..,
//! visible to RDMSR/WRMSR/RDPMC) and the host's (the recorder's, reached only
//! through `Vcpu::host_pmu`). Overflow of a host counter with INT set causes
//! an external-interrupt exit with `HOST_PMI_VECTOR` after a configurable
//! skid; overflow of a guest counter with INT set raises a guest PMI request
//! the monitor takes with `SoftVcpu::take_guest_pmi` (the LAPIC's LVT
//! performance-counter entry belongs to the monitor's interrupt controller).

use vcpu::pmu::{PmuBank, PmuError, evtsel, msr};

use crate::cpu::Cpu;

/// Counters per bank.
pub const COUNTERS: usize = 4;
/// Counter width.
pub const WIDTH: u32 = 48;
const WRAP: u64 = 1 << WIDTH;
/// IA32_A_PMC0: full-width writes.
pub const IA32_A_PMC0: u32 = 0x4c1;
/// Bits of IA32_PERFEVTSELx that may be set (bits 32+ reserved).
const EVTSEL_VALID: u64 = 0xffff_ffff & !(1 << 21);

/// One bank of counters.
#[derive(Debug, Clone)]
pub struct Bank {
    /// IA32_PERFEVTSELx.
    pub evtsel: [u64; COUNTERS],
    /// Counter values as of the last sync.
    pub pmc: [u64; COUNTERS],
    /// IA32_PERF_GLOBAL_CTRL.
    pub global_ctrl: u64,
    /// IA32_PERF_GLOBAL_STATUS.
    pub global_status: u64,
    base_insns: u64,
    base_branches: u64,
    user: bool,
    /// A counter with INT set overflowed and the interrupt is not yet raised.
    pub pmi_pending: bool,
}

impl Default for Bank {
    fn default() -> Self {
        Bank {
            evtsel: [0; COUNTERS],
            pmc: [0; COUNTERS],
            // Power-on value: general-purpose counters enabled globally.
            global_ctrl: (1 << COUNTERS) - 1,
            global_status: 0,
            base_insns: 0,
            base_branches: 0,
            user: false,
            pmi_pending: false,
        }
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Insns,
    Branches,
}

impl Bank {
    fn event(&self, i: usize, user: bool) -> Option<Ev> {
        let s = self.evtsel[i];
        if s & evtsel::EN == 0 || self.global_ctrl & (1 << i) == 0 {
            return None;
        }
        let mode_ok = if user {
            s & evtsel::USR != 0
        } else {
            s & evtsel::OS != 0
        };
        if !mode_ok || (s >> evtsel::UMASK_SHIFT) & 0xff != 0 {
            return None;
        }
        match s & evtsel::EVENT_MASK {
            evtsel::EVENT_INSTRUCTIONS_RETIRED => Some(Ev::Insns),
            evtsel::EVENT_BRANCHES_RETIRED => Some(Ev::Branches),
            _ => None,
        }
    }

    /// Fold in the work retired since the last sync (at the CPL of that
    /// interval), then start a new interval at `user`.
    pub fn sync(&mut self, insns: u64, branches: u64, user: bool) {
        let di = insns.wrapping_sub(self.base_insns);
        let db = branches.wrapping_sub(self.base_branches);
        for i in 0..COUNTERS {
            let d = match self.event(i, self.user) {
                Some(Ev::Insns) => di,
                Some(Ev::Branches) => db,
                None => continue,
            };
            if d == 0 {
                continue;
            }
            let nv = self.pmc[i].wrapping_add(d);
            if nv >= WRAP {
                self.global_status |= 1 << i;
                if self.evtsel[i] & evtsel::INT != 0 {
                    self.pmi_pending = true;
                }
            }
            self.pmc[i] = nv & (WRAP - 1);
        }
        self.base_insns = insns;
        self.base_branches = branches;
        self.user = user;
    }

    /// Absolute retired-instruction and retired-branch counts at which the
    /// next counter of this bank overflows (u64::MAX: none), assuming the CPL
    /// stays as it is. Only valid right after [`Bank::sync`].
    pub fn deadlines(&self) -> (u64, u64) {
        let (mut di, mut db) = (u64::MAX, u64::MAX);
        for i in 0..COUNTERS {
            let left = WRAP - self.pmc[i];
            match self.event(i, self.user) {
                Some(Ev::Insns) => di = di.min(self.base_insns.saturating_add(left)),
                Some(Ev::Branches) => db = db.min(self.base_branches.saturating_add(left)),
                None => {}
            }
        }
        (di, db)
    }

    /// CPUID.0AH for this bank.
    pub fn cpuid(&self) -> [u32; 4] {
        let eax = 2 | ((COUNTERS as u32) << 8) | (WIDTH << 16) | (7 << 24);
        // EBX: 1 = event NOT available. Available: instructions retired (bit 1),
        // branch instructions retired (bit 5).
        let ebx = 0x7f & !((1 << 1) | (1 << 5));
        [eax, ebx, 0, 0]
    }

    /// RDMSR after syncing.
    pub fn read(&self, m: u32) -> Result<u64, PmuError> {
        let pmc =
            |base: u32| (m >= base && m < base + COUNTERS as u32).then(|| (m - base) as usize);
        if let Some(i) = pmc(msr::IA32_PMC0).or_else(|| pmc(IA32_A_PMC0)) {
            return Ok(self.pmc[i]);
        }
        if let Some(i) = pmc(msr::IA32_PERFEVTSEL0) {
            return Ok(self.evtsel[i]);
        }
        match m {
            msr::IA32_PERF_GLOBAL_CTRL => Ok(self.global_ctrl),
            msr::IA32_PERF_GLOBAL_STATUS => Ok(self.global_status),
            msr::IA32_PERF_GLOBAL_OVF_CTRL => Ok(0),
            _ => Err(PmuError::NoSuchMsr(m)),
        }
    }

    /// WRMSR after syncing.
    pub fn write(&mut self, m: u32, v: u64) -> Result<(), PmuError> {
        let pmc =
            |base: u32| (m >= base && m < base + COUNTERS as u32).then(|| (m - base) as usize);
        if let Some(i) = pmc(msr::IA32_PMC0) {
            // Legacy PMC writes: bits 31:0, sign-extended to the counter width.
            let sv = (v as u32 as i32 as i64 as u64) & (WRAP - 1);
            if v >> 32 != 0 && v >> 32 != 0xffff_ffff {
                return Err(PmuError::Reserved { msr: m, value: v });
            }
            self.pmc[i] = sv;
            return Ok(());
        }
        if let Some(i) = pmc(IA32_A_PMC0) {
            if v >= WRAP {
                return Err(PmuError::Reserved { msr: m, value: v });
            }
            self.pmc[i] = v;
            return Ok(());
        }
        if let Some(i) = pmc(msr::IA32_PERFEVTSEL0) {
            if v & !EVTSEL_VALID != 0 {
                return Err(PmuError::Reserved { msr: m, value: v });
            }
            self.evtsel[i] = v;
            return Ok(());
        }
        match m {
            msr::IA32_PERF_GLOBAL_CTRL => {
                if v & !((1 << COUNTERS) - 1) != 0 {
                    return Err(PmuError::Reserved { msr: m, value: v });
                }
                self.global_ctrl = v;
                Ok(())
            }
            msr::IA32_PERF_GLOBAL_OVF_CTRL => {
                let valid = ((1 << COUNTERS) - 1) | (3 << 62);
                if v & !valid != 0 {
                    return Err(PmuError::Reserved { msr: m, value: v });
                }
                self.global_status &= !v;
                Ok(())
            }
            msr::IA32_PERF_GLOBAL_STATUS => Err(PmuError::Reserved { msr: m, value: v }),
            _ => Err(PmuError::NoSuchMsr(m)),
        }
    }
}

/// The host-owned bank as handed out by `Vcpu::host_pmu`: synced to the vCPU's
/// counts when `run` returns, so reads and writes between runs are exact.
#[derive(Debug, Clone, Default)]
pub struct HostBank {
    /// The counters.
    pub bank: Bank,
    /// Set by writes: deadlines must be recomputed before running.
    pub dirty: bool,
}

impl PmuBank for HostBank {
    fn cpuid_0a(&self) -> [u32; 4] {
        self.bank.cpuid()
    }
    fn rdmsr(&mut self, m: u32) -> Result<u64, PmuError> {
        self.bank.read(m)
    }
    fn wrmsr(&mut self, m: u32, v: u64) -> Result<(), PmuError> {
        self.dirty = true;
        self.bank.write(m, v)
    }
}

/// Guest RDMSR of a PMU MSR (`None`: not a PMU MSR). `c.insns` must be exact
/// (the translator ends blocks before PMU-visible instructions).
pub fn guest_rdmsr(c: &mut Cpu, index: u32) -> Option<u64> {
    if !is_pmu_msr(index) {
        return None;
    }
    let (i, b, u) = (c.insns, c.branches, c.cpl == 3);
    c.pmu.sync(i, b, u);
    c.pmu.read(index).ok()
}

/// Guest WRMSR of a PMU MSR: `None` not a PMU MSR; `Some(Err)` → #GP.
pub fn guest_wrmsr(c: &mut Cpu, index: u32, v: u64) -> Option<Result<(), ()>> {
    if !is_pmu_msr(index) {
        return None;
    }
    let (i, b, u) = (c.insns, c.branches, c.cpl == 3);
    c.pmu.sync(i, b, u);
    let r = c.pmu.write(index, v).map_err(|_| ());
    c.pmu_dirty = true;
    Some(r)
}

/// Whether `m` is one of the PMU MSRs.
pub fn is_pmu_msr(m: u32) -> bool {
    let n = COUNTERS as u32;
    (msr::IA32_PMC0..msr::IA32_PMC0 + n).contains(&m)
        || (IA32_A_PMC0..IA32_A_PMC0 + n).contains(&m)
        || (msr::IA32_PERFEVTSEL0..msr::IA32_PERFEVTSEL0 + n).contains(&m)
        || matches!(
            m,
            msr::IA32_PERF_GLOBAL_CTRL
                | msr::IA32_PERF_GLOBAL_STATUS
                | msr::IA32_PERF_GLOBAL_OVF_CTRL
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_in_selected_modes_and_wraps_at_48_bits() {
        let mut b = Bank::default();
        b.write(
            msr::IA32_PERFEVTSEL0,
            evtsel::EN | evtsel::USR | evtsel::EVENT_BRANCHES_RETIRED,
        )
        .unwrap();
        b.write(IA32_A_PMC0, WRAP - 3).unwrap();
        b.sync(0, 0, false); // start in kernel
        b.sync(100, 10, true); // 10 kernel branches: not counted
        assert_eq!(b.read(msr::IA32_PMC0).unwrap(), WRAP - 3);
        assert_eq!(b.deadlines().1, 13);
        b.sync(150, 13, false); // 3 user branches: overflow
        assert_eq!(b.read(msr::IA32_PMC0).unwrap(), 0);
        assert_eq!(b.global_status, 1);
        assert!(!b.pmi_pending, "INT not set");
        b.write(msr::IA32_PERF_GLOBAL_OVF_CTRL, 1).unwrap();
        assert_eq!(b.global_status, 0);
    }

    #[test]
    fn legacy_pmc_writes_sign_extend() {
        let mut b = Bank::default();
        b.write(msr::IA32_PMC0, (-5i64) as u64 & 0xffff_ffff)
            .unwrap();
        assert_eq!(b.read(msr::IA32_PMC0).unwrap(), WRAP - 5);
        assert!(b.write(msr::IA32_PERFEVTSEL0, 1 << 40).is_err());
    }
}
