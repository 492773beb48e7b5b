//! Per-vCPU branch counters: programming, overflow with skid margin,
//! timepoints and landing.
//!
//! CAS Motion places every asynchronous event (an interrupt, a DMA
//! completion) at a [`vcpu::Timepoint`] — (vCPU, retired branches, rip, rcx)
//! — and replays it by *landing* the vCPU on exactly that point. This crate
//! is everything between the counter hardware and that landing.
//!
//! # Layers
//!
//! | layer | what | where |
//! |---|---|---|
//! | registers | Intel architectural PMU v2+: CPUID 0AH, IA32_PERFEVTSELx (C4H, USR/OS/INT/EN), IA32_PMCx (48-bit, −n arming, sign-extended writes or IA32_A_PMCx), IA32_PERF_GLOBAL_CTRL/STATUS/OVF_CTRL; the AMD equivalents and how they differ | [`arch::IntelPmu`], [`arch::amd`] |
//! | a vCPU's counter | a 64-bit total on one hardware counter; arm at an absolute count; notice the overflow (re-arming long distances and stray PMIs); save/restore the context when the vCPU moves to another host core | [`BranchCounter`], [`CounterContext`] |
//! | landing | arm `margin` early, run to the PMI, single-step (MTF) to (branches, rip, rcx); overshoot is an error | [`land`], [`margin`] |
//! | Linux perf | the same counting through perf_event for a KVM vCPU thread, with an overflow signal; a probe that says what the host allows and why | [`perf`] |
//! | doctor | which backend is usable here, and why | [`doctor_report`] |
//! | test hardware | a register-level PMU model with skid and wrap, several cores, and a toy vCPU | [`model`] |
//!
//! Everything above the register layer talks to a [`vcpu::PmuBank`] — the
//! soft vCPU's virtual PMU, the model, or (on a host where CAS Motion owns
//! the PMU) a real core's MSRs — so the same code is tested here and runs
//! there.
//!
//! # Using it to record and replay
//!
//! ```no_run
//! use pmu_driver::arch::{IntelPmu, Rings};
//! use pmu_driver::{BranchCounter, LandOptions, LandStep, land, timepoint_now};
//! # fn demo(vcpu: &mut dyn vcpu::Vcpu, target: vcpu::Timepoint) -> Result<(), Box<dyn std::error::Error>> {
//! // At vCPU reset, on the vCPU's host-owned bank:
//! let bank = vcpu.host_pmu().ok_or("no host PMU: use exit-synchronous delivery")?;
//! let pmu = IntelPmu::detect(bank)?;
//! let mut counter = BranchCounter::start(bank, pmu, 0, Rings::ALL, 0)?;
//!
//! // Recording: the timepoint of an asynchronous event injected now.
//! let tp = timepoint_now(vcpu, &counter, 0)?;
//!
//! // Replaying: land on it, handling exits on the way as replay does.
//! loop {
//!     match land(vcpu, &mut counter, &target, &LandOptions::with_margin(0))? {
//!         LandStep::Landed(_) => break, // inject the event now
//!         LandStep::Exit(exit, _) => { /* answer it from the log, then loop */ }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The vCPU's thread moving to another host core: [`BranchCounter::save`] on
//! the old core's bank, [`BranchCounter::restore`] on the new one's (any free
//! counter index); an overflow that happened just before the move is carried
//! in [`CounterContext::overflow_pending`].
//!
//! # The perf_event route (KVM)
//!
//! Under Linux, a KVM vCPU thread's guest branches are counted with
//! [`perf::CounterSpec::guest_branches`] (`exclude_host = 1`, guest rings 0
//! and 3, so `perf_event_paranoid ≤ 1` or CAP_PERFMON), armed with
//! [`perf::PerfCounter::arm`], and the overflow is a real-time signal routed
//! to the vCPU thread ([`perf::OverflowSignal`]). The vCPU thread keeps the
//! signal blocked and gives KVM_SET_SIGNAL_MASK
//! [`perf::OverflowSignal::kvm_run_sigmask`], so the overflow makes KVM_RUN
//! return EINTR and the signal waits for [`perf::OverflowSignal::poll`]
//! (tested with a real KVM vCPU in `tests/perf_kvm.rs`). A KVM backend turns
//! that into the `EXTERNAL_INTERRUPT`/[`vcpu::HOST_PMI_VECTOR`] exit the
//! landing code expects.
//!
//! # On this machine
//!
//! The development hosts are AMD EPYC Zen 5 under a nested, software-assisted
//! KVM that hides the PMU: CPUID 0AH is zero, AMD's PerfCtrExtCore and
//! PerfMonV2 bits are clear, no `cpu` PMU is registered with perf and every
//! hardware event fails with ENOENT. [`perf::probe`] and [`doctor_report`]
//! say so; hardware tests print `skipped: <reason>`; the soft vCPU's exact
//! virtual PMU (margin 0) is the counter that works here.

pub mod arch;
pub mod doctor;
mod error;
pub mod perf;

pub use error::DriverError;
mod counter;
pub mod model;

pub use counter::{BranchCounter, CounterContext, Overflow};
pub mod landing;
pub mod margin;

pub use doctor::{CounterReport, doctor_report};
pub use landing::{
    LandError, LandOptions, LandStats, LandStep, Phase, abandon, land, timepoint_now,
};
pub use margin::CounterHardware;
