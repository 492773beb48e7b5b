//! What a component is given: its declared endpoints, its grants, a shutdown flag.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::endpoint::{Endpoint, EndpointInfo, Role};
use crate::interface::Interface;
use crate::{Client, IpcError, Server, ShutdownSignal};

/// What a component's entry function returns: `Err` ends the component as
/// failed (and its domain with it; the supervisor then applies the domain's
/// restart policy).
pub type ComponentResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A component's entry function. The binary maps component names to these
/// (`motion_runtime::Registry`); the runtime calls one per component, on its
/// own thread, with the component's context.
pub type EntryFn = fn(ComponentContext) -> ComponentResult;

/// A component's view of the system: exactly the channel ends declared for it
/// in the system description, the capabilities its domain grants, and the
/// paths of the resources those capabilities name. The runtime builds one per
/// component (per start); a component cannot reach any channel that is not
/// in here, and taking an endpoint removes it, so each end has one owner.
#[derive(Debug)]
pub struct ComponentContext {
    component: String,
    domain: String,
    endpoints: Vec<Endpoint>,
    grants: Vec<String>,
    resources: BTreeMap<String, PathBuf>,
    shutdown: ShutdownSignal,
}

impl ComponentContext {
    /// Built by the runtime. Every endpoint must belong to `component`;
    /// endpoints of other components are dropped with an error log, never
    /// handed out.
    pub fn new(
        component: &str,
        domain: &str,
        endpoints: Vec<Endpoint>,
        grants: Vec<String>,
        resources: BTreeMap<String, PathBuf>,
        shutdown: ShutdownSignal,
    ) -> ComponentContext {
        let endpoints = endpoints
            .into_iter()
            .filter(|ep| {
                let mine = ep.info().local == component;
                if !mine {
                    tracing::error!(
                        component,
                        channel = %ep.info().channel,
                        "endpoint of `{}` withheld from `{component}`",
                        ep.info().local
                    );
                }
                mine
            })
            .map(|mut ep| {
                ep.set_shutdown(shutdown.clone());
                ep
            })
            .collect();
        ComponentContext {
            component: component.to_owned(),
            domain: domain.to_owned(),
            endpoints,
            grants,
            resources,
            shutdown,
        }
    }

    /// This component's name.
    pub fn name(&self) -> &str {
        &self.component
    }

    /// The domain (process) it runs in.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The endpoints not yet taken.
    pub fn channels(&self) -> impl Iterator<Item = &EndpointInfo> {
        self.endpoints.iter().map(Endpoint::info)
    }

    /// Capabilities the domain holds, as spelled in the system description.
    pub fn grants(&self) -> &[String] {
        &self.grants
    }

    /// Whether the domain holds capability `spelling` (e.g. `log-dir:write`).
    pub fn has_grant(&self, spelling: &str) -> bool {
        self.grants.iter().any(|g| g == spelling)
    }

    /// Where a granted resource is (e.g. `log-dir`), if the runtime was given one.
    pub fn resource(&self, name: &str) -> Option<&Path> {
        self.resources.get(name).map(PathBuf::as_path)
    }

    /// Set when the supervisor asks the domain to stop. Blocking IPC on this
    /// component's endpoints returns [`IpcError::Shutdown`] once it is.
    pub fn shutdown(&self) -> &ShutdownSignal {
        &self.shutdown
    }

    /// Take the endpoint of channel `channel`, untyped.
    pub fn take_endpoint(&mut self, channel: &str) -> Result<Endpoint, IpcError> {
        let pos = self
            .endpoints
            .iter()
            .position(|ep| ep.info().channel == channel)
            .ok_or_else(|| IpcError::NotDeclared {
                component: self.component.clone(),
                what: format!("channel `{channel}`"),
            })?;
        Ok(self.endpoints.remove(pos))
    }

    /// The client end of the only channel carrying `I` on which this
    /// component is the client.
    pub fn client<I: Interface>(&mut self) -> Result<Client<I>, IpcError> {
        Client::new(self.take_unique(I::NAME, Role::Client)?)
    }

    /// The client end of channel `channel`, which must carry `I`.
    pub fn client_on<I: Interface>(&mut self, channel: &str) -> Result<Client<I>, IpcError> {
        let ep = self.take_endpoint(channel)?;
        Client::new(ep)
    }

    /// The server end of the only channel carrying `I` on which this
    /// component is the server.
    pub fn server<I: Interface>(&mut self) -> Result<Server<I>, IpcError> {
        Server::new(self.take_unique(I::NAME, Role::Server)?)
    }

    /// The server end of channel `channel`, which must carry `I`.
    pub fn server_on<I: Interface>(&mut self, channel: &str) -> Result<Server<I>, IpcError> {
        let ep = self.take_endpoint(channel)?;
        Server::new(ep)
    }

    /// The server ends of every channel carrying `I` that this component
    /// serves (one per client), for a component that serves several peers.
    pub fn servers<I: Interface>(&mut self) -> Result<Vec<Server<I>>, IpcError> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.endpoints)
            .into_iter()
            .partition(|ep| ep.info().interface == I::NAME && ep.info().role == Role::Server);
        self.endpoints = rest;
        mine.into_iter().map(Server::new).collect()
    }

    fn take_unique(&mut self, interface: &str, role: Role) -> Result<Endpoint, IpcError> {
        let matching: Vec<usize> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, ep)| ep.info().interface == interface && ep.info().role == role)
            .map(|(i, _)| i)
            .collect();
        let what = format!("{interface} channel as {role}");
        match matching.as_slice() {
            [i] => Ok(self.endpoints.remove(*i)),
            [] => Err(IpcError::NotDeclared {
                component: self.component.clone(),
                what,
            }),
            several => Err(IpcError::Ambiguous {
                component: self.component.clone(),
                what,
                channels: several
                    .iter()
                    .map(|i| self.endpoints[*i].info().channel.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
