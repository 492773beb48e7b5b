//! The overflow signal: a real-time signal, blocked in the receiving thread
//! and collected with sigtimedwait, so no signal handler is installed and no
//! process-wide state changes.
//!
//! A KVM vCPU thread keeps the signal blocked in user space and hands KVM
//! the mask *without* it ([`OverflowSignal::kvm_run_sigmask`] for
//! KVM_SET_SIGNAL_MASK): the overflow then makes KVM_RUN return EINTR
//! (KVM_EXIT_INTR) and the pending signal waits, with its siginfo, for
//! [`OverflowSignal::poll`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::PerfError;

/// `si_code` of a signal sent because a counter overflowed (period reached).
pub const POLL_IN: i32 = 1;
/// `si_code` when the counter also reached its refresh limit and stopped.
pub const POLL_HUP: i32 = 6;

/// One overflow notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowNotice {
    /// The counter's file descriptor (`si_fd`), to tell counters apart.
    pub fd: i32,
    /// `si_code`: [`POLL_IN`] or [`POLL_HUP`].
    pub code: i32,
}

/// A signal routed to one thread for counter overflows.
#[derive(Debug)]
pub struct OverflowSignal {
    signal: i32,
    tid: libc::pid_t,
}

impl OverflowSignal {
    /// The signal CAS Motion uses unless told otherwise: a real-time signal
    /// (queued, not merged) away from the ones glibc and Rust's runtime use.
    pub fn default_signal() -> i32 {
        libc::SIGRTMIN() + 6
    }

    /// Route `signal` to the calling thread: blocks it here (for good: a
    /// late overflow must never meet the default action, which for real-time
    /// signals is to terminate the process).
    pub fn for_current_thread(signal: i32) -> Result<Self, PerfError> {
        let set = single_set(signal)?;
        // SAFETY: `set` is an initialised sigset_t; the old mask is not wanted.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(PerfError {
                op: "pthread_sigmask".into(),
                errno: r,
            });
        }
        Ok(OverflowSignal {
            signal,
            tid: current_tid(),
        })
    }

    /// The signal number.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// The receiving thread's kernel id.
    pub fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// Take one pending overflow notice, waiting up to `timeout` (zero: just
    /// look). Must be called on the receiving thread.
    pub fn poll(&self, timeout: Duration) -> Result<Option<OverflowNotice>, PerfError> {
        if current_tid() != self.tid {
            return Err(PerfError {
                op: "OverflowSignal::poll from a thread that does not receive the signal".into(),
                errno: libc::EINVAL,
            });
        }
        let set = single_set(self.signal)?;
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: siginfo_t is plain data; all-zero is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set`, `info` and `ts` are live and initialised; the
            // kernel writes only `info`.
            let r = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
            if r == self.signal {
                return Ok(Some(OverflowNotice {
                    fd: siginfo_fd(&info),
                    code: info.si_code,
                }));
            }
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            match errno {
                libc::EAGAIN => return Ok(None),
                libc::EINTR => continue,
                _ => {
                    return Err(PerfError {
                        op: "sigtimedwait".into(),
                        errno,
                    });
                }
            }
        }
    }

    /// The calling thread's signal mask with this signal removed, as the
    /// kernel's 64-bit sigset (bit n−1 = signal n): what a vCPU thread gives
    /// KVM_SET_SIGNAL_MASK so the overflow interrupts KVM_RUN.
    pub fn kvm_run_sigmask(&self) -> Result<u64, PerfError> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it below.
        let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a null new mask only reads the current one into `cur`.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) };
        if r != 0 {
            return Err(PerfError {
                op: "pthread_sigmask".into(),
                errno: r,
            });
        }
        let mut mask = 0u64;
        for sig in 1..=64 {
            // SAFETY: `cur` is initialised; sig is in 1..=64, valid on Linux.
            if sig != self.signal && unsafe { libc::sigismember(&cur, sig) } == 1 {
                mask |= 1 << (sig - 1);
            }
        }
        Ok(mask)
    }
}

/// The calling thread's kernel id.
pub fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn single_set(signal: i32) -> Result<libc::sigset_t, PerfError> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset next.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is live; sigemptyset/sigaddset only write it.
    let ok = unsafe { libc::sigemptyset(&mut set) == 0 && libc::sigaddset(&mut set, signal) == 0 };
    if !ok {
        return Err(PerfError {
            op: format!("sigaddset({signal})"),
            errno: libc::EINVAL,
        });
    }
    Ok(set)
}

/// `si_fd` of a SIGPOLL-style siginfo. The libc crate exposes no accessor:
/// on Linux x86-64 the union starts at byte 16 and holds
/// `{ long si_band; int si_fd; }` for these signals.
fn siginfo_fd(info: &libc::siginfo_t) -> i32 {
    const SI_FD_OFFSET: usize = 24;
    const _: () = assert!(size_of::<libc::siginfo_t>() >= SI_FD_OFFSET + 4);
    let base = (info as *const libc::siginfo_t).cast::<u8>();
    // SAFETY: the offset plus 4 lies inside the 128-byte siginfo_t (checked
    // above); read_unaligned has no alignment requirement.
    unsafe { std::ptr::read_unaligned(base.add(SI_FD_OFFSET).cast::<i32>()) }
}
