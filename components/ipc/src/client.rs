//! The calling end of a channel.

use std::collections::{HashSet, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::endpoint::{Endpoint, EndpointInfo, Role};
use crate::error::{IpcError, Rejection};
use crate::frame::{self, Kind, RequestId};
use crate::interface::Interface;

/// Default number of requests a client may have in flight.
pub const DEFAULT_WINDOW: usize = 32;

/// The client end of a channel carrying interface `I`.
///
/// Only `I`'s requests can be sent: handing it another interface's message
/// does not compile. This compiles:
///
/// ```
/// # use motion_ipc::{Client, Interface};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct LogReq;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct PmuReq;
/// # pub struct Log; impl Interface for Log { const NAME: &'static str = "LogAppend"; type Request = LogReq; type Response = (); }
/// # pub struct Pmu; impl Interface for Pmu { const NAME: &'static str = "Pmu"; type Request = PmuReq; type Response = (); }
/// fn append(c: &mut Client<Log>) { let _ = c.call(&LogReq); }
/// ```
///
/// and this, sending a `Pmu` request on a `LogAppend` channel, does not:
///
/// ```compile_fail
/// # use motion_ipc::{Client, Interface};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct LogReq;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct PmuReq;
/// # pub struct Log; impl Interface for Log { const NAME: &'static str = "LogAppend"; type Request = LogReq; type Response = (); }
/// # pub struct Pmu; impl Interface for Pmu { const NAME: &'static str = "Pmu"; type Request = PmuReq; type Response = (); }
/// fn append(c: &mut Client<Log>) { let _ = c.call(&PmuReq); }
/// ```
///
/// Calls may be pipelined: [`send`](Client::send) several requests, then
/// [`recv`](Client::recv) their replies, with at most
/// [`window`](Client::with_window) outstanding.
pub struct Client<I: Interface> {
    ep: Endpoint,
    next_id: RequestId,
    in_flight: HashSet<RequestId>,
    abandoned: HashSet<RequestId>,
    stash: VecDeque<(RequestId, Result<I::Response, IpcError>)>,
    /// Rejections of notifications (or of messages the peer could not read
    /// an id from) that arrived while waiting for a call's reply.
    unsolicited: VecDeque<IpcError>,
    window: usize,
    _iface: PhantomData<fn() -> I>,
}

impl<I: Interface> Client<I> {
    /// Bind an endpoint to interface `I`. Fails if the channel carries
    /// another interface or this end is not the channel's client.
    pub fn new(ep: Endpoint) -> Result<Client<I>, IpcError> {
        check_binding::<I>(ep.info(), Role::Client)?;
        Ok(Client {
            ep,
            next_id: 1,
            in_flight: HashSet::new(),
            abandoned: HashSet::new(),
            stash: VecDeque::new(),
            unsolicited: VecDeque::new(),
            window: DEFAULT_WINDOW,
            _iface: PhantomData,
        })
    }

    /// Set the pipelining window (at least 1). Keep it below the transport's
    /// queue depth so that client and server never both block sending.
    pub fn with_window(mut self, window: usize) -> Client<I> {
        self.window = window.clamp(1, crate::link::INPROC_QUEUE_DEPTH / 2);
        self
    }

    /// Give the endpoint back (e.g. to read what is left on it raw).
    pub fn into_endpoint(self) -> Endpoint {
        self.ep
    }

    /// The channel this client is bound to.
    pub fn info(&self) -> &EndpointInfo {
        self.ep.info()
    }

    /// Requests sent whose replies were not yet returned by [`recv`](Client::recv).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.stash.len()
    }

    /// Send a request and wait for its reply.
    pub fn call(&mut self, request: &I::Request) -> Result<I::Response, IpcError> {
        self.call_until(request, None)
    }

    /// [`call`](Client::call) with a time limit. A reply that arrives after
    /// the limit is dropped.
    pub fn call_timeout(
        &mut self,
        request: &I::Request,
        timeout: Duration,
    ) -> Result<I::Response, IpcError> {
        self.call_until(request, Some(Instant::now() + timeout))
    }

    fn call_until(
        &mut self,
        request: &I::Request,
        deadline: Option<Instant>,
    ) -> Result<I::Response, IpcError> {
        let id = self.send(request)?;
        loop {
            match self.recv_wire(deadline) {
                Ok((rid, result)) if rid == id => return result,
                Ok(other) => self.stash.push_back(other),
                Err(e @ IpcError::Rejected { .. }) => self.unsolicited.push_back(e),
                Err(e) => {
                    if self.in_flight.remove(&id) {
                        self.abandoned.insert(id);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Send a request without waiting; its reply comes from [`recv`](Client::recv).
    pub fn send(&mut self, request: &I::Request) -> Result<RequestId, IpcError> {
        if self.in_flight() >= self.window {
            return Err(IpcError::WindowFull {
                channel: self.ep.info().channel.clone(),
                in_flight: self.in_flight(),
                window: self.window,
            });
        }
        let id = self.fresh_id();
        self.ep.send_frame(Kind::Call, id, request)?;
        self.in_flight.insert(id);
        Ok(id)
    }

    /// Send a request that gets no reply (for notify channels).
    pub fn notify(&mut self, request: &I::Request) -> Result<(), IpcError> {
        let id = self.fresh_id();
        self.ep.send_frame(Kind::Notify, id, request)
    }

    /// The next reply to a pipelined request, in arrival order, with the id
    /// [`send`](Client::send) returned. A request the server refused comes
    /// back as [`IpcError::Rejected`] naming its id.
    pub fn recv(&mut self) -> Result<(RequestId, I::Response), IpcError> {
        self.recv_until(None)
    }

    /// [`recv`](Client::recv) with a time limit.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<(RequestId, I::Response), IpcError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(RequestId, I::Response), IpcError> {
        if let Some(e) = self.unsolicited.pop_front() {
            return Err(e);
        }
        let (id, result) = match self.stash.pop_front() {
            Some(entry) => entry,
            None => {
                if self.in_flight.is_empty() {
                    return Err(IpcError::NothingInFlight {
                        channel: self.ep.info().channel.clone(),
                    });
                }
                self.recv_wire(deadline)?
            }
        };
        result.map(|r| (id, r))
    }

    fn fresh_id(&mut self) -> RequestId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            // 0 means "unknown" in rejections; skip ids still in use after a wrap.
            if id != 0 && !self.in_flight.contains(&id) && !self.abandoned.contains(&id) {
                return id;
            }
        }
    }

    /// Receive one reply or rejection from the wire. `Err` is a failure of
    /// the channel; a failure of one request is `Ok((id, Err(..)))`.
    #[allow(clippy::type_complexity)]
    fn recv_wire(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(RequestId, Result<I::Response, IpcError>), IpcError> {
        loop {
            let info = self.ep.info().clone();
            let decoded = {
                let received = self.ep.recv_message(deadline)?;
                decode_reply::<I>(received.bytes, received.total_len)
            };
            let bad = |rejection| IpcError::BadMessage {
                channel: info.channel.clone(),
                peer: info.peer.clone(),
                rejection,
            };
            let (id, result) = match decoded {
                Err(rejection) => return Err(bad(rejection)),
                Ok(Reply::Response(id, Ok(response))) => (id, Ok(response)),
                Ok(Reply::Response(id, Err(rejection))) => (id, Err(bad(rejection))),
                Ok(Reply::Rejected(id, rejection)) => {
                    let e = IpcError::Rejected {
                        channel: info.channel.clone(),
                        peer: info.peer.clone(),
                        request_id: id,
                        rejection,
                    };
                    if !self.in_flight.contains(&id) && !self.abandoned.contains(&id) {
                        // A rejected notify, or a request the peer could not
                        // even read the id of: the channel's problem.
                        return Err(e);
                    }
                    (id, Err(e))
                }
            };
            if self.abandoned.remove(&id) {
                continue;
            }
            if !self.in_flight.remove(&id) {
                return Err(IpcError::UnexpectedReply {
                    channel: info.channel,
                    peer: info.peer,
                    request_id: id,
                });
            }
            return Ok((id, result));
        }
    }
}

/// A checked message arriving at a client.
#[derive(Debug)]
pub enum Reply<R> {
    /// A reply frame: its call's id and the decoded response (or why the
    /// payload did not decode).
    Response(RequestId, Result<R, Rejection>),
    /// The server refused the call with this id.
    Rejected(RequestId, Rejection),
}

/// Check and decode one message arriving at a client of `I`. `Err` when the
/// frame itself is unacceptable (bad header, wrong interface or kind).
pub fn decode_reply<I: Interface>(
    bytes: &[u8],
    total_len: usize,
) -> Result<Reply<I::Response>, Rejection> {
    let f = frame::parse(bytes, total_len)?;
    if f.interface != I::ID {
        return Err(Rejection::WrongInterface {
            expected: I::ID,
            got: f.interface,
        });
    }
    match f.kind {
        Kind::Reply => Ok(Reply::Response(
            f.request_id,
            frame::decode_payload::<I::Response>(f.payload),
        )),
        Kind::Reject => Ok(Reply::Rejected(
            f.request_id,
            frame::decode_payload::<Rejection>(f.payload)?,
        )),
        Kind::Call | Kind::Notify => Err(Rejection::BadKind { got: f.kind as u8 }),
    }
}

pub(crate) fn check_binding<I: Interface>(info: &EndpointInfo, role: Role) -> Result<(), IpcError> {
    if info.interface != I::NAME || info.interface_id != I::ID {
        return Err(IpcError::InterfaceMismatch {
            channel: info.channel.clone(),
            actual: info.interface.clone(),
            wanted: I::NAME,
        });
    }
    if info.role != role {
        return Err(IpcError::WrongRole {
            channel: info.channel.clone(),
            component: info.local.clone(),
            actual: info.role,
            wanted: role,
        });
    }
    Ok(())
}

impl<I: Interface> std::fmt::Debug for Client<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("interface", &I::NAME)
            .field("ep", &self.ep)
            .field("in_flight", &self.in_flight)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}
