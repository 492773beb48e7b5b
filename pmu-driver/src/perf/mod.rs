//! The Linux perf_event counter backend: count a KVM vCPU thread's
//! guest-mode retired branches and get a signal when a chosen count is
//! reached — the host-OS route to a hardware branch counter when CAS Motion
//! cannot program the PMU's MSRs itself.
//!
//! * [`probe`] tries each capability for real (software events, hardware
//!   branch counting in user and kernel mode, guest-only counting with
//!   `exclude_host`, the overflow signal) and keeps the errno of whatever
//!   fails, named and explained (ENOENT/EOPNOTSUPP = no hardware PMU event,
//!   EACCES/EPERM = perf_event_paranoid, ...).
//! * [`PerfCounter`] is the backend: open ([`CounterSpec::guest_branches`]),
//!   [`PerfCounter::count`] the 64-bit total, [`PerfCounter::arm`] an
//!   overflow `n` events ahead, delivered as [`OverflowSignal`] (F_SETOWN_EX
//!   + F_SETSIG + O_ASYNC, as rr does).
//!
//! On the machines this project is developed on (nested KVM on AMD EPYC Zen
//! 5) the hypervisor exposes no PMU: no `cpu` PMU is registered and every
//! hardware event fails with ENOENT. The probe says exactly that; the
//! software-event checks show the signal plumbing itself works.

mod bank;
mod counter;
mod error;
mod probe;
mod signal;

pub use bank::PerfBank;
pub use counter::{CounterSpec, IDLE_PERIOD, PerfCounter, PerfEvent, Target};
pub use error::{Cause, PerfError, errno_name, read_paranoid};
pub use probe::{Check, PerfProbe, probe};
pub use probe::{branchy_loop, touch_fresh_pages};
pub use signal::{OverflowNotice, OverflowSignal, POLL_HUP, POLL_IN, current_tid};
