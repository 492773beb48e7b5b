//! The validated system: what the runtime starts.
//!
//! A [`System`] can only be obtained from the validator, so holding one means
//! every rule in [`crate::Rule`] held: names resolve, every component sits in
//! exactly one domain, every use has a channel, every need is granted and
//! nothing more is. The parts have public fields for reading; `System` hands
//! out shared references only.

use crate::capability::Capability;

/// Whether a channel is a request/response pair or a one-way message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    /// The client sends a request and waits for the server's response.
    Call,
    /// The client sends a message and does not wait; the server does not answer.
    Notify,
}

/// What the supervisor does when a domain's process dies (Hubris's jefe
/// decides the same per task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartPolicy {
    /// Leave it dead; the supervisor reports the death.
    Never,
    /// Restart it after a crash (not after a clean exit), at most `max_restarts` times.
    OnFailure {
        /// How many restarts before the supervisor gives up and reports.
        max_restarts: u32,
    },
    /// Restart it whenever it exits, cleanly or not.
    Always,
}

/// A piece of code with the interfaces it serves and uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Unique among components; lowercase kebab-case.
    pub name: String,
    /// One line saying what it does.
    pub description: String,
    /// Interfaces it answers as the server end of a channel.
    pub serves: Vec<String>,
    /// Interfaces it calls as the client end of a channel.
    pub uses: Vec<String>,
    /// Capabilities its code needs; its domain grants each of them.
    pub needs: Vec<Capability>,
    /// The domain it runs in.
    pub domain: String,
}

/// One OS process (one protection domain) holding one or more components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Unique among domains; lowercase kebab-case. Used for the process name.
    pub name: String,
    /// The components sharing this process, in declaration order.
    pub components: Vec<String>,
    /// Capabilities the process is given; exactly what its components need.
    pub grants: Vec<Capability>,
    /// What happens when the process dies.
    pub restart: RestartPolicy,
    /// Whether this is the supervisor domain (exactly one is).
    pub supervisor: bool,
}

impl Domain {
    /// Whether the process holds `cap` (or a wider access to the same resource).
    pub fn allows(&self, cap: Capability) -> bool {
        self.grants.iter().any(|g| g.covers(cap))
    }
}

/// A typed connection from a client component to a server component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Unique among channels; lowercase kebab-case.
    pub name: String,
    /// The interface carried (one of the known interface names).
    pub interface: String,
    /// Call or notify.
    pub kind: ChannelKind,
    /// The component that sends requests (or notifications).
    pub client: String,
    /// The component that serves them.
    pub server: String,
    /// The client's domain.
    pub client_domain: String,
    /// The server's domain.
    pub server_domain: String,
}

impl Channel {
    /// Whether the two ends live in different processes, so the channel
    /// needs a cross-process transport rather than an in-process one.
    pub fn crosses_domains(&self) -> bool {
        self.client_domain != self.server_domain
    }
}

/// Which end of a channel a component holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// It sends on the channel.
    Client,
    /// It serves the channel.
    Server,
}

/// One end of a channel as seen from a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEnd<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// The end this component holds.
    pub role: Role,
}

impl<'a> ChannelEnd<'a> {
    /// The component at the other end.
    pub fn peer(&self) -> &'a str {
        match self.role {
            Role::Client => &self.channel.server,
            Role::Server => &self.channel.client,
        }
    }
}

/// A validated system description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    pub(crate) components: Vec<Component>,
    pub(crate) domains: Vec<Domain>,
    pub(crate) channels: Vec<Channel>,
}

impl System {
    /// All components, in declaration order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// All domains, in declaration order.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// The domain called `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// The domain `component` runs in.
    pub fn domain_of(&self, component: &str) -> Option<&Domain> {
        self.component(component)
            .and_then(|c| self.domain(&c.domain))
    }

    /// The supervisor domain. Validation guarantees there is exactly one.
    pub fn supervisor(&self) -> &Domain {
        // A `System` is only built after `no-supervisor` and
        // `multiple-supervisors` passed, so the search cannot fail.
        self.domains
            .iter()
            .find(|d| d.supervisor)
            .unwrap_or_else(|| unreachable!("a validated system has a supervisor domain"))
    }

    /// All channels, in declaration order.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The channel ends `component` holds: the only ways it can reach another
    /// component. Empty for an unknown name.
    pub fn channels_of<'a>(
        &'a self,
        component: &'a str,
    ) -> impl Iterator<Item = ChannelEnd<'a>> + 'a {
        self.channels.iter().filter_map(move |ch| {
            if ch.client == component {
                Some(ChannelEnd {
                    channel: ch,
                    role: Role::Client,
                })
            } else if ch.server == component {
                Some(ChannelEnd {
                    channel: ch,
                    role: Role::Server,
                })
            } else {
                None
            }
        })
    }

    /// The channels with at least one end in `domain`: the endpoints the
    /// runtime hands that process.
    pub fn channels_of_domain<'a>(
        &'a self,
        domain: &'a str,
    ) -> impl Iterator<Item = &'a Channel> + 'a {
        self.channels
            .iter()
            .filter(move |ch| ch.client_domain == domain || ch.server_domain == domain)
    }
}
