//! The part of the system description the runtime needs: domains with their
//! components, grants and restart policy, and channels between components.
//!
//! `motion-system` owns parsing and validation of `system.toml`; this is the
//! runtime's own small model, filled from that crate's typed model (or built
//! directly by tests). The runtime still re-checks the few rules it relies on
//! ([`SystemGraph::check`]), since it hands out endpoints and sandboxes from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a file resource may be used (`Write` includes reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Read only.
    Read,
    /// Read and write.
    Write,
}

/// What a domain's process may touch beyond its memory and its endpoints.
/// Spelled as in `system.toml` (`kvm`, `log-dir:write`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// `/dev/kvm`.
    Kvm,
    /// Hardware performance counters (perf_event_open).
    Pmu,
    /// The runtime's standard output (otherwise the domain's is /dev/null).
    Stdout,
    /// The log directory.
    LogDir(Access),
    /// The guest kernel image (read only).
    GuestImage,
    /// The guest's disk image.
    DiskImage(Access),
}

impl Capability {
    /// The resource name (what [`RuntimeConfig::resources`](crate::RuntimeConfig::resources) maps to a path).
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

    /// File access, for file resources.
    pub fn access(self) -> Option<Access> {
        match self {
            Capability::LogDir(a) | Capability::DiskImage(a) => Some(a),
            Capability::GuestImage => Some(Access::Read),
            Capability::Kvm | Capability::Pmu | Capability::Stdout => None,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access() {
            Some(Access::Read) => write!(f, "{}:read", self.resource()),
            Some(Access::Write) => write!(f, "{}:write", self.resource()),
            None => f.write_str(self.resource()),
        }
    }
}

/// What the supervisor does when a domain's process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Leave it down (its channels close, so its peers see it gone).
    Never,
    /// Restart after a crash or failure, at most `max_restarts` times; a
    /// domain that finishes cleanly stays down.
    OnFailure {
        /// Restarts allowed over the runtime's life.
        max_restarts: u32,
    },
}

/// A domain: one OS process (or one group of threads in threaded mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDesc {
    /// Its name.
    pub name: String,
    /// The components it runs, each on its own thread.
    pub components: Vec<String>,
    /// What it may touch.
    pub grants: Vec<Capability>,
    /// What to do when it ends.
    pub restart: RestartPolicy,
}

/// A channel: `client` calls `server` over `interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDesc {
    /// Its name.
    pub name: String,
    /// The interface carried (one of `motion_ipc::INTERFACE_NAMES`).
    pub interface: String,
    /// The calling component.
    pub client: String,
    /// The answering component.
    pub server: String,
}

/// The component graph the runtime starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemGraph {
    /// The domains.
    pub domains: Vec<DomainDesc>,
    /// The channels.
    pub channels: Vec<ChannelDesc>,
}

/// A graph the runtime refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Two domains, components or channels share a name.
    #[error("{kind} `{name}` is declared twice")]
    Duplicate {
        /// "domain", "component" or "channel".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A channel end names no component of any domain.
    #[error("channel `{channel}`: no component `{component}` in any domain")]
    UnknownComponent {
        /// The channel.
        channel: String,
        /// The missing component.
        component: String,
    },
    /// A channel's interface is not known.
    #[error("channel `{channel}`: unknown interface `{interface}` (known: {})", motion_ipc::INTERFACE_NAMES.join(", "))]
    UnknownInterface {
        /// The channel.
        channel: String,
        /// The interface.
        interface: String,
    },
    /// A channel from a component to itself.
    #[error("channel `{channel}` joins component `{component}` to itself")]
    SelfChannel {
        /// The channel.
        channel: String,
        /// The component.
        component: String,
    },
    /// A domain with no components.
    #[error("domain `{domain}` has no components")]
    EmptyDomain {
        /// The domain.
        domain: String,
    },
}

impl SystemGraph {
    /// Check what the runtime relies on: unique names, channel ends that
    /// exist, known interfaces.
    pub fn check(&self) -> Result<(), GraphError> {
        let mut domains = BTreeSet::new();
        let mut components = BTreeSet::new();
        for d in &self.domains {
            if !domains.insert(d.name.as_str()) {
                return Err(GraphError::Duplicate {
                    kind: "domain",
                    name: d.name.clone(),
                });
            }
            if d.components.is_empty() {
                return Err(GraphError::EmptyDomain {
                    domain: d.name.clone(),
                });
            }
            for c in &d.components {
                if !components.insert(c.as_str()) {
                    return Err(GraphError::Duplicate {
                        kind: "component",
                        name: c.clone(),
                    });
                }
            }
        }
        let mut channels = BTreeSet::new();
        for ch in &self.channels {
            if !channels.insert(ch.name.as_str()) {
                return Err(GraphError::Duplicate {
                    kind: "channel",
                    name: ch.name.clone(),
                });
            }
            if motion_ipc::interface_id(&ch.interface).is_none() {
                return Err(GraphError::UnknownInterface {
                    channel: ch.name.clone(),
                    interface: ch.interface.clone(),
                });
            }
            for end in [&ch.client, &ch.server] {
                if !components.contains(end.as_str()) {
                    return Err(GraphError::UnknownComponent {
                        channel: ch.name.clone(),
                        component: end.clone(),
                    });
                }
            }
            if ch.client == ch.server {
                return Err(GraphError::SelfChannel {
                    channel: ch.name.clone(),
                    component: ch.client.clone(),
                });
            }
        }
        Ok(())
    }

    /// The domain a component runs in.
    pub fn domain_of(&self, component: &str) -> Option<&DomainDesc> {
        self.domains
            .iter()
            .find(|d| d.components.iter().any(|c| c == component))
    }

    /// Component name → domain name.
    pub(crate) fn placement(&self) -> BTreeMap<&str, &str> {
        self.domains
            .iter()
            .flat_map(|d| d.components.iter().map(|c| (c.as_str(), d.name.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> SystemGraph {
        SystemGraph {
            domains: vec![
                DomainDesc {
                    name: "vmm".into(),
                    components: vec!["vm-monitor".into()],
                    grants: vec![Capability::Kvm],
                    restart: RestartPolicy::Never,
                },
                DomainDesc {
                    name: "log".into(),
                    components: vec!["log-store".into()],
                    grants: vec![Capability::LogDir(Access::Write)],
                    restart: RestartPolicy::OnFailure { max_restarts: 3 },
                },
            ],
            channels: vec![ChannelDesc {
                name: "record".into(),
                interface: "LogAppend".into(),
                client: "vm-monitor".into(),
                server: "log-store".into(),
            }],
        }
    }

    #[test]
    fn a_good_graph_passes_and_each_rule_bites() {
        let g = graph();
        g.check().unwrap();
        assert_eq!(g.domain_of("log-store").unwrap().name, "log");

        let mut g = graph();
        g.channels[0].interface = "Nope".into();
        assert!(matches!(
            g.check(),
            Err(GraphError::UnknownInterface { .. })
        ));
        let mut g = graph();
        g.channels[0].server = "ghost".into();
        assert!(matches!(
            g.check(),
            Err(GraphError::UnknownComponent { .. })
        ));
        let mut g = graph();
        g.domains[1].components.push("vm-monitor".into());
        assert!(matches!(
            g.check(),
            Err(GraphError::Duplicate {
                kind: "component",
                ..
            })
        ));
        let mut g = graph();
        g.channels[0].server = "vm-monitor".into();
        assert!(matches!(g.check(), Err(GraphError::SelfChannel { .. })));
    }

    #[test]
    fn capabilities_spell_like_system_toml() {
        assert_eq!(
            Capability::LogDir(Access::Write).to_string(),
            "log-dir:write"
        );
        assert_eq!(Capability::GuestImage.to_string(), "guest-image:read");
        assert_eq!(Capability::Kvm.to_string(), "kvm");
    }
}
