//! One perf_event counter: open, read, arm an overflow after N more events.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use perf_event_open_sys::bindings as sys;
use serde::{Deserialize, Serialize};

use super::error::PerfError;
use super::signal::OverflowSignal;

/// The event to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PerfEvent {
    /// PERF_COUNT_HW_BRANCH_INSTRUCTIONS: the kernel maps it to Intel's
    /// architectural C4H (branch instructions retired) or AMD's C2H (retired
    /// branch instructions).
    BranchInstructions,
    /// A raw PMU event (PERF_TYPE_RAW): the PERFEVTSEL event/umask bits, e.g.
    /// `0xC4` on Intel or `0xD1` (retired conditional branches, what rr uses
    /// on AMD Zen) on AMD.
    Raw(u64),
    /// Software: page faults. One per first write to a fresh anonymous page,
    /// so a test can produce an exact number of events on a host without a
    /// hardware PMU and check the overflow-signal plumbing.
    SoftwarePageFaults,
    /// Software: task clock, in nanoseconds of this thread's CPU time. Used to
    /// interrupt a running KVM vCPU thread the way a PMI-driven signal does.
    SoftwareTaskClock,
}

impl PerfEvent {
    fn type_and_config(self) -> (u32, u64) {
        match self {
            PerfEvent::BranchInstructions => (
                sys::PERF_TYPE_HARDWARE,
                sys::PERF_COUNT_HW_BRANCH_INSTRUCTIONS as u64,
            ),
            PerfEvent::Raw(code) => (sys::PERF_TYPE_RAW, code),
            PerfEvent::SoftwarePageFaults => (
                sys::PERF_TYPE_SOFTWARE,
                sys::PERF_COUNT_SW_PAGE_FAULTS as u64,
            ),
            PerfEvent::SoftwareTaskClock => (
                sys::PERF_TYPE_SOFTWARE,
                sys::PERF_COUNT_SW_TASK_CLOCK as u64,
            ),
        }
    }
}

/// Which thread the counter follows (perf's `pid` argument; any CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The thread that opens the counter.
    CallingThread,
    /// Another thread of this process, by kernel thread id (gettid).
    Thread(i32),
}

/// What to count and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSpec {
    /// The event.
    pub event: PerfEvent,
    /// The thread followed.
    pub target: Target,
    /// `exclude_host = 1`: count only while the thread runs guest code inside
    /// KVM_RUN (Intel: the counter is switched on at VM entry through the
    /// VM-entry MSR-load list; AMD: PerfEvtSel's GuestOnly bit 40).
    pub guest_only: bool,
    /// `exclude_kernel = 1`: do not count ring 0. With `guest_only` this
    /// drops the *guest's* kernel mode too, which a replay of a whole VM
    /// cannot afford; it is what `perf_event_paranoid = 2` still allows.
    pub exclude_kernel: bool,
    /// Open as a sampling event so that [`PerfCounter::arm`] can set an
    /// overflow point later (perf refuses to change the period of a pure
    /// counting event). Until armed the period is [`IDLE_PERIOD`].
    pub armable: bool,
}

/// The period of an armable counter that is not armed: far enough that it
/// never overflows in practice (perf clamps each hardware reload to the PMU's
/// maximum and re-arms internally, delivering nothing).
pub const IDLE_PERIOD: u64 = 1 << 62;

impl CounterSpec {
    /// What a KVM recorder needs: every guest-mode branch (all guest rings)
    /// of the vCPU thread `tid`, armable for an overflow signal.
    pub fn guest_branches(tid: Target) -> Self {
        CounterSpec {
            event: PerfEvent::BranchInstructions,
            target: tid,
            guest_only: true,
            exclude_kernel: false,
            armable: true,
        }
    }

    /// Branches of the calling thread in user mode: the least privileged
    /// hardware counter (allowed with `perf_event_paranoid` 2).
    pub fn host_user_branches() -> Self {
        CounterSpec {
            event: PerfEvent::BranchInstructions,
            target: Target::CallingThread,
            guest_only: false,
            exclude_kernel: true,
            armable: false,
        }
    }

    fn attr(&self) -> sys::perf_event_attr {
        // SAFETY: perf_event_attr is plain old data (integers, bitfields and
        // unions of integers); all-zero is its documented default.
        let mut a: sys::perf_event_attr = unsafe { std::mem::zeroed() };
        let (type_, config) = self.event.type_and_config();
        a.type_ = type_;
        a.size = size_of::<sys::perf_event_attr>() as u32;
        a.config = config;
        a.set_disabled(1);
        a.set_exclude_hv(1);
        a.set_exclude_kernel(self.exclude_kernel as u64);
        a.set_exclude_host(self.guest_only as u64);
        if self.armable {
            a.__bindgen_anon_1.sample_period = IDLE_PERIOD;
            // Signal on every overflow, not after a ring buffer fills.
            a.__bindgen_anon_2.wakeup_events = 1;
        }
        a
    }
}

/// An open perf_event counter (closed on drop).
#[derive(Debug)]
pub struct PerfCounter {
    fd: OwnedFd,
    spec: CounterSpec,
    /// Whether we enabled it: [`PerfCounter::arm`] re-enables around the
    /// period change (see there).
    enabled: std::cell::Cell<bool>,
}

impl PerfCounter {
    /// perf_event_open(2) for `spec`, disabled until [`PerfCounter::enable`].
    pub fn open(spec: &CounterSpec) -> Result<Self, PerfError> {
        let mut attr = spec.attr();
        let pid = match spec.target {
            Target::CallingThread => 0,
            Target::Thread(tid) => tid,
        };
        // SAFETY: `attr` is a fully initialised perf_event_attr whose `size`
        // is its real size; the kernel only reads it. pid/cpu/group/flags are
        // plain integers (cpu -1 = any CPU, group -1 = no group).
        let fd = unsafe {
            perf_event_open_sys::perf_event_open(
                &mut attr,
                pid,
                -1,
                -1,
                sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(PerfError::last("perf_event_open"));
        }
        // SAFETY: perf_event_open returned a fresh descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PerfCounter {
            fd,
            spec: *spec,
            enabled: std::cell::Cell::new(false),
        })
    }

    /// The specification the counter was opened with.
    pub fn spec(&self) -> &CounterSpec {
        &self.spec
    }

    fn ioctl(&self, name: &str, request: u32, arg: libc::c_ulong) -> Result<(), PerfError> {
        // SAFETY: `request` is one of the PERF_EVENT_IOC_* requests, each of
        // which takes an integer argument, except PERIOD whose pointer the
        // caller passes as `arg` pointing at a live u64.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as libc::c_ulong, arg) };
        if r < 0 {
            return Err(PerfError::last(name));
        }
        Ok(())
    }

    /// Start counting.
    pub fn enable(&self) -> Result<(), PerfError> {
        self.ioctl("ioctl(PERF_EVENT_IOC_ENABLE)", sys::ENABLE, 0)?;
        self.enabled.set(true);
        Ok(())
    }

    /// Stop counting (the count is kept).
    pub fn disable(&self) -> Result<(), PerfError> {
        self.ioctl("ioctl(PERF_EVENT_IOC_DISABLE)", sys::DISABLE, 0)?;
        self.enabled.set(false);
        Ok(())
    }

    /// Set the count to zero.
    pub fn reset(&self) -> Result<(), PerfError> {
        self.ioctl("ioctl(PERF_EVENT_IOC_RESET)", sys::RESET, 0)
    }

    /// The number of events counted since open (or the last reset): a 64-bit
    /// total that perf keeps across hardware counter wrap-arounds.
    pub fn count(&self) -> Result<u64, PerfError> {
        let mut v = 0u64;
        // SAFETY: reading at most 8 bytes into a live, writable u64.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast::<libc::c_void>(),
                8,
            )
        };
        match n {
            8 => Ok(v),
            n if n < 0 => Err(PerfError::last("read(perf counter)")),
            _ => Err(PerfError {
                op: "read(perf counter)".into(),
                errno: libc::EIO,
            }),
        }
    }

    /// Overflow after `events` more events from now, then every `events`
    /// events (perf reloads the period). Needs an armable counter.
    ///
    /// PERF_EVENT_IOC_PERIOD zeroes the period's remainder (`period_left`).
    /// A hardware event reloads from that at once (x86: left 0 → period),
    /// but a running software event would overflow on its very next event
    /// and then wait out the *old* period; scheduling the event in again
    /// (disable, set, enable) computes the remainder from the new period on
    /// every PMU, so that is what this does for an enabled counter.
    pub fn arm(&self, events: u64) -> Result<(), PerfError> {
        if !self.spec.armable || events == 0 || events >= 1 << 63 {
            return Err(PerfError {
                op: "arm (PERF_EVENT_IOC_PERIOD)".into(),
                errno: libc::EINVAL,
            });
        }
        let was_enabled = self.enabled.get();
        if was_enabled {
            self.disable()?;
        }
        let period = events;
        self.ioctl(
            "ioctl(PERF_EVENT_IOC_PERIOD)",
            sys::PERIOD,
            &period as *const u64 as libc::c_ulong,
        )?;
        if was_enabled {
            self.enable()?;
        }
        Ok(())
    }

    /// Push the next overflow out of reach ([`IDLE_PERIOD`]).
    pub fn disarm(&self) -> Result<(), PerfError> {
        self.arm(IDLE_PERIOD)
    }

    /// Deliver a signal to `to`'s thread on every overflow: F_SETOWN_EX
    /// (F_OWNER_TID), F_SETSIG and O_ASYNC, the mechanism rr uses. A KVM vCPU
    /// thread receives it inside KVM_RUN, which then returns EINTR.
    pub fn signal_overflow_to(&self, to: &OverflowSignal) -> Result<(), PerfError> {
        let fd = self.fd.as_raw_fd();
        let owner = FOwnerEx {
            type_: F_OWNER_TID,
            pid: to.tid(),
        };
        // SAFETY: F_SETOWN_EX reads a struct f_owner_ex from the live `owner`.
        if unsafe { libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx) } < 0 {
            return Err(PerfError::last("fcntl(F_SETOWN_EX)"));
        }
        // SAFETY: F_SETSIG takes an integer signal number.
        if unsafe { libc::fcntl(fd, F_SETSIG, to.signal()) } < 0 {
            return Err(PerfError::last("fcntl(F_SETSIG)"));
        }
        // SAFETY: F_GETFL/F_SETFL take and return integer flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(PerfError::last("fcntl(F_GETFL)"));
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) } < 0 {
            return Err(PerfError::last("fcntl(F_SETFL, O_ASYNC)"));
        }
        Ok(())
    }
}

impl AsRawFd for PerfCounter {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// <asm-generic/fcntl.h>; the libc crate does not export these for glibc.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

#[repr(C)]
struct FOwnerEx {
    type_: libc::c_int,
    pid: libc::pid_t,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_spec_sets_exclude_host_and_keeps_guest_kernel() {
        let a = CounterSpec::guest_branches(Target::Thread(42)).attr();
        assert_eq!(a.exclude_host(), 1);
        assert_eq!(a.exclude_guest(), 0);
        assert_eq!(a.exclude_kernel(), 0);
        assert_eq!(a.disabled(), 1);
        assert_eq!(a.type_, sys::PERF_TYPE_HARDWARE);
        assert_eq!(a.config, sys::PERF_COUNT_HW_BRANCH_INSTRUCTIONS as u64);
        // SAFETY: reading the union member we wrote.
        assert_eq!(unsafe { a.__bindgen_anon_1.sample_period }, IDLE_PERIOD);
    }

    #[test]
    fn counting_only_counters_refuse_to_arm() {
        let spec = CounterSpec {
            event: PerfEvent::SoftwareTaskClock,
            target: Target::CallingThread,
            guest_only: false,
            exclude_kernel: true,
            armable: false,
        };
        match PerfCounter::open(&spec) {
            Ok(c) => assert_eq!(c.arm(10).unwrap_err().errno, libc::EINVAL),
            Err(e) => println!("skipped: software perf events unavailable: {e}"),
        }
    }
}
