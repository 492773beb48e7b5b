//! Endpoints: one end of a declared channel, bound to its interface and peer.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::frame::{self, Kind, RequestId};
use crate::interface::{Interface, InterfaceId, interface_id};
use crate::link::{InProcLink, Link, LinkError, Received};
use crate::{IpcError, ShutdownSignal};

/// Which end of a channel an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Sends requests, receives replies.
    Client,
    /// Receives requests, sends replies.
    Server,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Server => "server",
        })
    }
}

/// What an endpoint is for: the declared channel, its interface, and the two
/// components it joins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointInfo {
    /// The channel's name in the system description.
    pub channel: String,
    /// The interface it carries.
    pub interface: String,
    /// That interface's wire id.
    pub interface_id: InterfaceId,
    /// The component holding this end.
    pub local: String,
    /// The component at the other end.
    pub peer: String,
    /// This end's role.
    pub role: Role,
}

impl EndpointInfo {
    /// The same channel seen from the other end.
    pub fn reversed(&self) -> EndpointInfo {
        EndpointInfo {
            local: self.peer.clone(),
            peer: self.local.clone(),
            role: match self.role {
                Role::Client => Role::Server,
                Role::Server => Role::Client,
            },
            ..self.clone()
        }
    }
}

/// Which transport a channel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Threads of one process.
    InProcess,
    /// Processes (Unix seqpacket sockets).
    #[cfg(unix)]
    Seqpacket,
}

/// One end of a channel, untyped. Components normally turn it into a
/// [`Client`](crate::Client) or [`Server`](crate::Server) of the channel's
/// interface; the raw send/receive methods exist for the runtime, the tests
/// and the fuzzers, and the receiver checks raw bytes exactly like typed ones.
#[derive(Debug)]
pub struct Endpoint {
    info: EndpointInfo,
    link: Link,
    shutdown: Option<ShutdownSignal>,
    scratch: Vec<u8>,
}

impl Endpoint {
    /// Wrap a link end.
    pub fn new(info: EndpointInfo, link: Link) -> Endpoint {
        Endpoint {
            info,
            link,
            shutdown: None,
            scratch: Vec::new(),
        }
    }

    /// A connected (client, server) pair for a channel carrying the listed
    /// interface `interface`.
    pub fn pair(
        channel: &str,
        interface: &str,
        client: &str,
        server: &str,
        transport: Transport,
    ) -> Result<(Endpoint, Endpoint), IpcError> {
        let id = interface_id(interface).ok_or_else(|| IpcError::NotDeclared {
            component: client.to_owned(),
            what: format!("interface `{interface}` (not in motion_ipc::INTERFACE_NAMES)"),
        })?;
        Self::pair_with_id(channel, interface, id, client, server, transport)
    }

    /// A connected (client, server) pair for interface `I`.
    pub fn pair_for<I: Interface>(
        channel: &str,
        client: &str,
        server: &str,
        transport: Transport,
    ) -> Result<(Endpoint, Endpoint), IpcError> {
        Self::pair_with_id(channel, I::NAME, I::ID, client, server, transport)
    }

    fn pair_with_id(
        channel: &str,
        interface: &str,
        interface_id: InterfaceId,
        client: &str,
        server: &str,
        transport: Transport,
    ) -> Result<(Endpoint, Endpoint), IpcError> {
        let info = EndpointInfo {
            channel: channel.to_owned(),
            interface: interface.to_owned(),
            interface_id,
            local: client.to_owned(),
            peer: server.to_owned(),
            role: Role::Client,
        };
        let (a, b) = match transport {
            Transport::InProcess => {
                let (a, b) = InProcLink::pair();
                (Link::InProc(a), Link::InProc(b))
            }
            #[cfg(unix)]
            Transport::Seqpacket => {
                let (a, b) = crate::link::SeqpacketLink::pair().map_err(|source| IpcError::Io {
                    channel: channel.to_owned(),
                    source,
                })?;
                (Link::Seqpacket(a), Link::Seqpacket(b))
            }
        };
        let server_info = info.reversed();
        Ok((Endpoint::new(info, a), Endpoint::new(server_info, b)))
    }

    /// What this endpoint is for.
    pub fn info(&self) -> &EndpointInfo {
        &self.info
    }

    /// The transport end.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Make blocking operations return [`IpcError::Shutdown`] once `signal` is set.
    pub fn set_shutdown(&mut self, signal: ShutdownSignal) {
        self.shutdown = Some(signal);
    }

    /// Another handle on the same end, with the same info and shutdown flag.
    pub fn try_clone(&self) -> std::io::Result<Endpoint> {
        Ok(Endpoint {
            info: self.info.clone(),
            link: self.link.try_clone()?,
            shutdown: self.shutdown.clone(),
            scratch: Vec::new(),
        })
    }

    /// Send arbitrary bytes as one message (no checks: the receiver does them).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), IpcError> {
        let mut msg = bytes.to_vec();
        let shutdown = self.shutdown.clone();
        self.link
            .send(&mut msg, shutdown.as_ref())
            .map_err(|e| self.link_error(e))
    }

    /// Receive one message as bytes, without checking it.
    pub fn recv_raw(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, IpcError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let received = self.recv_message(deadline)?;
        Ok(received.bytes.to_vec())
    }

    /// Encode and send one frame on this channel's interface.
    pub(crate) fn send_frame<T: Serialize + ?Sized>(
        &mut self,
        kind: Kind,
        request_id: RequestId,
        body: &T,
    ) -> Result<(), IpcError> {
        frame::encode_into(
            &mut self.scratch,
            kind,
            self.info.interface_id,
            request_id,
            body,
        )?;
        let shutdown = self.shutdown.clone();
        let result = self.link.send(&mut self.scratch, shutdown.as_ref());
        result.map_err(|e| self.link_error(e))
    }

    /// Receive one message, unchecked.
    pub(crate) fn recv_message(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Received<'_>, IpcError> {
        let shutdown = self.shutdown.clone();
        match self.link.recv(deadline, shutdown.as_ref()) {
            Ok(r) => Ok(r),
            // `r` borrows the link, so errors are built after the match.
            Err(e) => Err(link_error(&self.info, e)),
        }
    }

    fn link_error(&self, e: LinkError) -> IpcError {
        link_error(&self.info, e)
    }
}

fn link_error(info: &EndpointInfo, e: LinkError) -> IpcError {
    match e {
        LinkError::Disconnected => IpcError::Disconnected {
            channel: info.channel.clone(),
            peer: info.peer.clone(),
        },
        LinkError::Timeout => IpcError::Timeout {
            channel: info.channel.clone(),
        },
        LinkError::Shutdown => IpcError::Shutdown,
        LinkError::Io(source) => IpcError::Io {
            channel: info.channel.clone(),
            source,
        },
    }
}
