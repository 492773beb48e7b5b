//! Landing: bring a vCPU to an exact timepoint (branches, rip, rcx).
//!
//! ```text
//!   arm overflow at target.branches − margin ──run──▶ PMI (+ skid)
//!        ▲                                             │
//!        └── long distance: re-arm ◀── not reached ────┤
//!                                                      ▼
//!                       monitor trap flag: step until (branches, rip, rcx) = target
//! ```
//!
//! Every comparison uses [`Timepoint::cmp_same_vcpu`]: more branches is
//! later; with equal branches the vCPU is inside one straight-line run, so a
//! higher RIP is later and, at the same RIP (a REP string instruction
//! iterating), a lower RCX is later. A `jmp $` loop retires a branch per
//! iteration, so its iterations differ in `branches` alone. The moment the
//! vCPU is later than the target it has overshot — because the skid
//! exceeded the margin, or because execution diverged from the recording —
//! and [`land`] returns [`LandError::Overshoot`]; it never steps on hoping.
//!
//! Exits other than the overflow PMI and MTF (I/O, MMIO, HLT, a kick, …) are
//! handed back as [`LandStep::Exit`]: the caller handles them exactly as in
//! normal replay (answering from the log) and calls [`land`] again, which
//! resumes where it was. To give up instead, call [`abandon`].

use vcpu::{ExitInfo, ExitReason, HOST_PMI_VECTOR, Timepoint, Vcpu, VcpuError, VmExit};

use crate::counter::BranchCounter;
use crate::error::DriverError;

/// How to land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LandOptions {
    /// Arm the overflow this many branches before the target (see
    /// [`crate::margin`]).
    pub margin: u64,
    /// Give up after this many single steps in one call (a guard against a
    /// target that the vCPU reaches only after an unbounded straight-line
    /// run, e.g. a REP with a huge RCX).
    pub max_steps: u64,
}

impl LandOptions {
    /// `margin`, with a step guard of 10 million.
    pub fn with_margin(margin: u64) -> Self {
        LandOptions {
            margin,
            max_steps: 10_000_000,
        }
    }
}

/// Work done by one landing (summed over resumed calls by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LandStats {
    /// Free runs (with the counter armed).
    pub runs: u64,
    /// Overflow PMIs taken.
    pub pmis: u64,
    /// Single steps (MTF exits).
    pub steps: u64,
}

/// The outcome of a [`land`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandStep {
    /// The vCPU is exactly at the target; MTF is off and the counter disarmed.
    Landed(LandStats),
    /// An exit the caller must handle before calling [`land`] again.
    Exit(VmExit, LandStats),
}

/// Where the overshoot was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before running at all: the vCPU was already past the target.
    Start,
    /// After a free run ended by the overflow PMI (skid beyond the margin)
    /// or another exit.
    FreeRun,
    /// While single-stepping.
    Stepping,
}

/// Why landing failed.
#[derive(Debug, thiserror::Error)]
pub enum LandError {
    /// The vCPU passed the target: a divergence, reported with both points.
    #[error(
        "overshoot ({phase:?}): target branches {} rip {:#x} rcx {:#x}, \
         reached branches {} rip {:#x} rcx {:#x}",
        target.branches, target.rip, target.rcx, reached.branches, reached.rip, reached.rcx
    )]
    Overshoot {
        /// The timepoint asked for.
        target: Timepoint,
        /// Where the vCPU is.
        reached: Timepoint,
        /// When it was noticed.
        phase: Phase,
    },
    /// More single steps than [`LandOptions::max_steps`].
    #[error("gave up after {steps} single steps at {now:?}, target {target:?}")]
    StepLimit {
        /// The timepoint asked for.
        target: Timepoint,
        /// Where the vCPU is.
        now: Timepoint,
        /// Steps taken in this call.
        steps: u64,
    },
    /// The backend has no host-owned counter bank (KVM without a PMU):
    /// precise landing is impossible; use exit-synchronous delivery.
    #[error(
        "the {backend} backend has no host performance counters: \
         asynchronous events can only be delivered at deterministic exits"
    )]
    NoHostPmu {
        /// Backend name.
        backend: &'static str,
    },
    /// The vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The counter bank failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// The vCPU's timepoint now: branches from `counter`, rip and rcx from
/// the registers.
pub fn timepoint_now(
    vcpu: &mut dyn Vcpu,
    counter: &BranchCounter,
    vcpu_index: u32,
) -> Result<Timepoint, LandError> {
    let backend = vcpu.backend();
    let bank = vcpu.host_pmu().ok_or(LandError::NoHostPmu { backend })?;
    let branches = counter.total(bank)?;
    let regs = vcpu.regs()?;
    Ok(Timepoint {
        vcpu: vcpu_index,
        branches,
        rip: regs.rip,
        rcx: regs.rcx,
    })
}

fn set_mtf(vcpu: &mut dyn Vcpu, on: bool) -> Result<(), VcpuError> {
    if vcpu.controls().monitor_trap_flag != on {
        let mut c = vcpu.controls().clone();
        c.monitor_trap_flag = on;
        vcpu.set_controls(c)?;
    }
    Ok(())
}

fn is_pmi(exit: &VmExit) -> bool {
    exit.reason == ExitReason::ExternalInterrupt
        && exit.info
            == ExitInfo::ExternalInterrupt {
                vector: HOST_PMI_VECTOR,
            }
}

/// Drive `vcpu` to `target` exactly, using `counter` (programmed on
/// `vcpu.host_pmu()`). See the module documentation.
pub fn land(
    vcpu: &mut dyn Vcpu,
    counter: &mut BranchCounter,
    target: &Timepoint,
    opts: &LandOptions,
) -> Result<LandStep, LandError> {
    let backend = vcpu.backend();
    let mut stats = LandStats::default();
    let mut phase = Phase::Start;
    let mut steps_this_call = 0u64;
    loop {
        let now = timepoint_now(vcpu, counter, target.vcpu)?;
        match now.cmp_same_vcpu(target) {
            Some(std::cmp::Ordering::Equal) => {
                finish(vcpu, counter)?;
                return Ok(LandStep::Landed(stats));
            }
            Some(std::cmp::Ordering::Greater) | None => {
                finish(vcpu, counter)?;
                return Err(LandError::Overshoot {
                    target: *target,
                    reached: now,
                    phase,
                });
            }
            Some(std::cmp::Ordering::Less) => {}
        }
        let remaining = target.branches - now.branches;
        let exit = if remaining > opts.margin {
            let at = target.branches - opts.margin;
            let bank = vcpu.host_pmu().ok_or(LandError::NoHostPmu { backend })?;
            if counter.armed_at() != Some(at) {
                counter.arm_at(bank, at)?;
            }
            set_mtf(vcpu, false)?;
            phase = Phase::FreeRun;
            stats.runs += 1;
            vcpu.run()?
        } else {
            if counter.armed_at().is_some() {
                let bank = vcpu.host_pmu().ok_or(LandError::NoHostPmu { backend })?;
                counter.disarm(bank)?;
            }
            if steps_this_call >= opts.max_steps {
                finish(vcpu, counter)?;
                return Err(LandError::StepLimit {
                    target: *target,
                    now,
                    steps: steps_this_call,
                });
            }
            set_mtf(vcpu, true)?;
            phase = Phase::Stepping;
            steps_this_call += 1;
            stats.steps += 1;
            vcpu.run()?
        };
        if is_pmi(&exit) {
            stats.pmis += 1;
            let bank = vcpu.host_pmu().ok_or(LandError::NoHostPmu { backend })?;
            // Reached or not, the loop re-reads the count; polling clears
            // the status and re-arms an intermediate overflow.
            counter.poll_overflow(bank)?;
            continue;
        }
        if exit.reason == ExitReason::MonitorTrapFlag {
            continue;
        }
        return Ok(LandStep::Exit(exit, stats));
    }
}

/// Stop landing: monitor trap flag off, counter disarmed (still counting).
pub fn abandon(vcpu: &mut dyn Vcpu, counter: &mut BranchCounter) -> Result<(), LandError> {
    finish(vcpu, counter)
}

fn finish(vcpu: &mut dyn Vcpu, counter: &mut BranchCounter) -> Result<(), LandError> {
    set_mtf(vcpu, false)?;
    if counter.armed_at().is_some() {
        let backend = vcpu.backend();
        let bank = vcpu.host_pmu().ok_or(LandError::NoHostPmu { backend })?;
        counter.disarm(bank)?;
    }
    Ok(())
}
