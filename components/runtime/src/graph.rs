//! The part of the system description the runtime needs: domains with their
//! components, grants and restart policy, channels between components, and
//! which domain is the supervisor.
//!
//! `motion-system` owns parsing and validation of `system.toml`
//! ([`SystemGraph::from_system`] takes its validated model); tests build a
//! graph directly. Capabilities and restart policies are `motion-system`'s
//! types. The runtime still re-checks the few rules it relies on
//! ([`SystemGraph::check`]), since it hands out endpoints and sandboxes from it.

use std::collections::{BTreeMap, BTreeSet};

pub use motion_system::{Access, Capability, RestartPolicy};

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
    /// The supervisor domain: the runtime's own process. Its components are
    /// not started (see [`RuntimeConfig::host_domain`](crate::RuntimeConfig::host_domain)),
    /// and its `Supervisor` channels to other domains are their control
    /// channels, served by the runtime inside each domain.
    pub supervisor: Option<String>,
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
    /// A domain named as supervisor or host does not exist.
    #[error("no domain `{domain}`")]
    UnknownDomain {
        /// The name.
        domain: String,
    },
    /// A domain with no components.
    #[error("domain `{domain}` has no components")]
    EmptyDomain {
        /// The domain.
        domain: String,
    },
}

impl SystemGraph {
    /// The runtime's view of a validated `system.toml`.
    pub fn from_system(system: &motion_system::System) -> SystemGraph {
        SystemGraph {
            domains: system
                .domains()
                .iter()
                .map(|d| DomainDesc {
                    name: d.name.clone(),
                    components: d.components.clone(),
                    grants: d.grants.clone(),
                    restart: d.restart,
                })
                .collect(),
            channels: system
                .channels()
                .iter()
                .map(|c| ChannelDesc {
                    name: c.name.clone(),
                    interface: c.interface.clone(),
                    client: c.client.clone(),
                    server: c.server.clone(),
                })
                .collect(),
            supervisor: Some(system.supervisor().name.clone()),
        }
    }

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
        if let Some(s) = &self.supervisor {
            if !domains.contains(s.as_str()) {
                return Err(GraphError::UnknownDomain { domain: s.clone() });
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
            supervisor: None,
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
        let mut g = graph();
        g.supervisor = Some("nowhere".into());
        assert!(matches!(g.check(), Err(GraphError::UnknownDomain { .. })));
    }

    #[test]
    fn the_projects_system_toml_converts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../system.toml");
        let system = motion_system::load(path.as_ref(), motion_ipc::INTERFACE_NAMES).unwrap();
        let g = SystemGraph::from_system(&system);
        g.check().unwrap();
        assert_eq!(g.supervisor.as_deref(), Some("supervisor"));
        let log = g.domain_of("log-store").unwrap();
        assert_eq!(log.grants, [Capability::LogDir(Access::Write)]);
        assert_eq!(log.restart, RestartPolicy::OnFailure { max_restarts: 3 });
        assert!(
            g.channels
                .iter()
                .any(|c| c.name == "record" && c.interface == "LogAppend")
        );
    }
}
