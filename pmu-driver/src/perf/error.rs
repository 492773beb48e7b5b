//! Failures of the perf_event system calls, with the errno's name and what it
//! means for counting branches (the doctor prints these verbatim).

use serde::{Deserialize, Serialize};

/// What an errno from a perf_event call means for CAS Motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// ENOENT / EOPNOTSUPP / ENODEV from perf_event_open: no PMU driver in the
    /// kernel handles this event — there is no (visible) hardware PMU, as under
    /// a hypervisor that hides it.
    NoHardwareEvent,
    /// EACCES / EPERM: `kernel.perf_event_paranoid` (or a missing
    /// CAP_PERFMON) forbids what was asked, typically counting kernel mode.
    NotPermitted,
    /// ENOSYS: the kernel has no perf_event_open (CONFIG_PERF_EVENTS off) or a
    /// seccomp filter refuses it.
    NoPerfSyscall,
    /// EBUSY: another user holds the counter exclusively (e.g. a pinned event
    /// or a hypervisor-level profiler).
    CounterBusy,
    /// EINVAL: an attribute this kernel or PMU does not accept (for example
    /// `exclude_host` where the PMU cannot separate guest from host).
    InvalidAttribute,
    /// E2BIG: the kernel's perf_event_attr is older than ours and we set a
    /// field it does not know.
    AttributeTooNew,
    /// ESRCH: the target thread does not exist.
    NoSuchThread,
    /// EMFILE / ENFILE: out of file descriptors.
    TooManyFiles,
    /// Any other errno.
    Other,
}

/// A failed perf_event-related system call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{op}: {} (errno {errno}): {}", errno_name(*errno), self.meaning())]
pub struct PerfError {
    /// The call that failed ("perf_event_open", "ioctl(PERF_EVENT_IOC_PERIOD)", ...).
    pub op: String,
    /// The raw errno.
    pub errno: i32,
}

impl PerfError {
    /// An error for `op` from the calling thread's current errno.
    pub(crate) fn last(op: &str) -> Self {
        PerfError {
            op: op.to_owned(),
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }

    /// The errno's symbolic name ("ENOENT").
    pub fn errno_name(&self) -> &'static str {
        errno_name(self.errno)
    }

    /// The errno's meaning for perf_event_open; for other calls every errno
    /// is [`Cause::Other`] (an ioctl's EINVAL is not a missing PMU).
    pub fn cause(&self) -> Cause {
        if self.op != "perf_event_open" {
            return Cause::Other;
        }
        match self.errno {
            libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV => Cause::NoHardwareEvent,
            libc::EACCES | libc::EPERM => Cause::NotPermitted,
            libc::ENOSYS => Cause::NoPerfSyscall,
            libc::EBUSY => Cause::CounterBusy,
            libc::EINVAL => Cause::InvalidAttribute,
            libc::E2BIG => Cause::AttributeTooNew,
            libc::ESRCH => Cause::NoSuchThread,
            libc::EMFILE | libc::ENFILE => Cause::TooManyFiles,
            _ => Cause::Other,
        }
    }

    /// One sentence a user can act on.
    pub fn meaning(&self) -> String {
        match self.cause() {
            Cause::NoHardwareEvent => {
                "no hardware PMU event: the kernel has no PMU driver for it (on a VM whose \
                 hypervisor hides the PMU, /sys/bus/event_source/devices/cpu is absent)"
                    .into()
            }
            Cause::NotPermitted => format!(
                "not permitted by kernel.perf_event_paranoid (now {}) or missing CAP_PERFMON; \
                 counting kernel/guest-kernel mode needs paranoid <= 1",
                read_paranoid().map_or("unreadable".into(), |p| p.to_string())
            ),
            Cause::NoPerfSyscall => {
                "perf_event_open is not available (kernel without CONFIG_PERF_EVENTS, or a \
                 seccomp filter refuses it)"
                    .into()
            }
            Cause::CounterBusy => "the counter is held exclusively by another user".into(),
            Cause::InvalidAttribute => {
                "an attribute is not accepted by this kernel or PMU (e.g. exclude_host \
                 where the PMU cannot tell guest from host mode)"
                    .into()
            }
            Cause::AttributeTooNew => "the kernel's perf_event_attr is older than ours".into(),
            Cause::NoSuchThread => "the target thread does not exist".into(),
            Cause::TooManyFiles => "out of file descriptors".into(),
            Cause::Other => std::io::Error::from_raw_os_error(self.errno).to_string(),
        }
    }
}

/// `kernel.perf_event_paranoid`, if readable.
pub fn read_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The symbolic name of the errnos perf_event calls return.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "E?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_the_perf_event_open_man_page() {
        let e = |errno| PerfError {
            op: "perf_event_open".into(),
            errno,
        };
        assert_eq!(e(libc::ENOENT).cause(), Cause::NoHardwareEvent);
        assert_eq!(e(libc::EOPNOTSUPP).cause(), Cause::NoHardwareEvent);
        assert_eq!(e(libc::EACCES).cause(), Cause::NotPermitted);
        assert_eq!(e(libc::EPERM).cause(), Cause::NotPermitted);
        assert_eq!(e(libc::ENOSYS).cause(), Cause::NoPerfSyscall);
        assert_eq!(e(libc::EINVAL).cause(), Cause::InvalidAttribute);
        let msg = e(libc::ENOENT).to_string();
        assert!(
            msg.starts_with("perf_event_open: ENOENT (errno 2): no hardware PMU"),
            "{msg}"
        );
    }

    #[test]
    fn errno_of_other_calls_is_not_misread_as_a_missing_pmu() {
        let e = PerfError {
            op: "ioctl(PERF_EVENT_IOC_PERIOD)".into(),
            errno: libc::EINVAL,
        };
        assert_eq!(e.cause(), Cause::Other);
        assert!(e.to_string().contains("EINVAL"));
    }
}
