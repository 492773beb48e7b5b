//! Capabilities: what a component needs and a domain grants.
//!
//! A capability is written as one short string, the same in a component's
//! `needs` and a domain's `grants`: `kvm`, `pmu`, `stdout`, or a file
//! resource with its access, `log-dir:write`. Keeping one spelling for both
//! sides lets the validator compare them directly and lets a reader see at a
//! glance what a domain's process may touch.

use std::fmt;
use std::str::FromStr;

/// How a file resource may be used. `Write` means read and write: a process
/// that appends to the log directory also has to read it back to recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Open for reading only.
    Read,
    /// Open for reading and writing.
    Write,
}

impl Access {
    /// The spelling after the colon in `log-dir:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One thing a domain's process may touch beyond its own memory and its
/// channel endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `/dev/kvm`: create and run virtual machines. Exclusive.
    Kvm,
    /// Hardware performance counters through `perf_event_open`. Exclusive.
    Pmu,
    /// Write to the standard output and error streams inherited from the runtime.
    Stdout,
    /// The directory holding the event log and its index.
    LogDir(Access),
    /// The guest kernel image. Read-only: the image is evidence of what ran.
    GuestImage,
    /// The guest's disk image.
    DiskImage(Access),
}

impl Capability {
    /// Every capability spelling the validator accepts, for error messages and docs.
    pub const SPELLINGS: &'static [&'static str] = &[
        "kvm",
        "pmu",
        "stdout",
        "log-dir:read",
        "log-dir:write",
        "guest-image:read",
        "disk-image:read",
        "disk-image:write",
    ];

    /// The resource this capability is about, without its access: two
    /// capabilities on the same resource are the same entry twice.
    pub fn resource(self) -> &'static str {
        match self {
            Capability::Kvm => "kvm",
            Capability::Pmu => "pmu",
            Capability::Stdout => "stdout",
            Capability::LogDir(_) => "log-dir",
            Capability::GuestImage => "guest-image",
            Capability::DiskImage(_) => "disk-image",
        }
    }

    /// The access of a file resource; `None` for devices and streams.
    pub fn access(self) -> Option<Access> {
        match self {
            Capability::LogDir(a) | Capability::DiskImage(a) => Some(a),
            Capability::GuestImage => Some(Access::Read),
            Capability::Kvm | Capability::Pmu | Capability::Stdout => None,
        }
    }

    /// Whether at most one domain may hold this capability. Two processes
    /// programming the same counters, or both owning the VM, would each
    /// silently corrupt the other's record.
    pub fn is_exclusive(self) -> bool {
        matches!(self, Capability::Kvm | Capability::Pmu)
    }

    /// Whether holding `self` is enough for a component that needs `need`:
    /// the same resource with at least the access asked for.
    pub fn covers(self, need: Capability) -> bool {
        self.resource() == need.resource() && self.access() >= need.access()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access() {
            Some(a) => write!(f, "{}:{}", self.resource(), a.as_str()),
            None => f.write_str(self.resource()),
        }
    }
}

/// A capability string that is not one of [`Capability::SPELLINGS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability `{given}`; known: {}", Capability::SPELLINGS.join(", "))]
pub struct UnknownCapability {
    /// The string as written.
    pub given: String,
}

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kvm" => Capability::Kvm,
            "pmu" => Capability::Pmu,
            "stdout" => Capability::Stdout,
            "log-dir:read" => Capability::LogDir(Access::Read),
            "log-dir:write" => Capability::LogDir(Access::Write),
            "guest-image:read" => Capability::GuestImage,
            "disk-image:read" => Capability::DiskImage(Access::Read),
            "disk-image:write" => Capability::DiskImage(Access::Write),
            _ => {
                return Err(UnknownCapability {
                    given: s.to_owned(),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for s in Capability::SPELLINGS {
            let c: Capability = s.parse().unwrap();
            assert_eq!(c.to_string(), *s);
        }
    }

    #[test]
    fn unknown_spellings_are_refused() {
        for s in [
            "",
            "KVM",
            "log-dir",
            "log-dir:append",
            "guest-image:write",
            "kvm:read",
        ] {
            let e = s.parse::<Capability>().unwrap_err();
            assert!(e.to_string().contains(&format!("`{s}`")), "{e}");
        }
    }

    #[test]
    fn write_covers_read_but_not_the_reverse() {
        let r = Capability::LogDir(Access::Read);
        let w = Capability::LogDir(Access::Write);
        assert!(w.covers(r));
        assert!(w.covers(w));
        assert!(r.covers(r));
        assert!(!r.covers(w));
        assert!(!w.covers(Capability::DiskImage(Access::Read)));
        assert!(Capability::Kvm.covers(Capability::Kvm));
        assert!(!Capability::Kvm.covers(Capability::Pmu));
    }

    #[test]
    fn only_kvm_and_pmu_are_exclusive() {
        let exclusive: Vec<_> = Capability::SPELLINGS
            .iter()
            .map(|s| s.parse::<Capability>().unwrap())
            .filter(|c| c.is_exclusive())
            .map(|c| c.to_string())
            .collect();
        assert_eq!(exclusive, ["kvm", "pmu"]);
    }
}
