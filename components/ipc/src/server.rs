//! The answering end of a channel.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::client::check_binding;
use crate::endpoint::{Endpoint, EndpointInfo, Role};
use crate::error::{IpcError, Rejection};
use crate::frame::{self, Kind, RequestId};
use crate::interface::Interface;

/// A request that passed every check.
#[derive(Debug)]
pub struct Incoming<R> {
    /// Its id, to pass to [`Server::reply`].
    pub id: RequestId,
    /// [`Kind::Call`] (answer it) or [`Kind::Notify`] (do not).
    pub kind: Kind,
    /// The decoded request.
    pub request: R,
}

impl<R> Incoming<R> {
    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.kind == Kind::Call
    }
}

/// The server end of a channel carrying interface `I`.
///
/// Receiving checks every message: a bad header, another interface's id, a
/// reply kind, or a payload that does not decode as `I::Request` is answered
/// with a [`Rejection`] frame and skipped, so [`recv`](Server::recv) only
/// ever returns well-formed requests and never panics on what a peer sent.
pub struct Server<I: Interface> {
    ep: Endpoint,
    rejected: u64,
    _iface: PhantomData<fn() -> I>,
}

impl<I: Interface> Server<I> {
    /// Bind an endpoint to interface `I`. Fails if the channel carries
    /// another interface or this end is not the channel's server.
    pub fn new(ep: Endpoint) -> Result<Server<I>, IpcError> {
        check_binding::<I>(ep.info(), Role::Server)?;
        Ok(Server {
            ep,
            rejected: 0,
            _iface: PhantomData,
        })
    }

    /// Give the endpoint back (e.g. to read what is left on it raw).
    pub fn into_endpoint(self) -> Endpoint {
        self.ep
    }

    /// The channel this server is bound to.
    pub fn info(&self) -> &EndpointInfo {
        self.ep.info()
    }

    /// How many messages were refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The next well-formed request.
    pub fn recv(&mut self) -> Result<Incoming<I::Request>, IpcError> {
        self.recv_until(None)
    }

    /// The next well-formed request, or [`IpcError::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Incoming<I::Request>, IpcError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Incoming<I::Request>, IpcError> {
        loop {
            let decoded = {
                let received = self.ep.recv_message(deadline)?;
                decode_request::<I>(received.bytes, received.total_len)
            };
            match decoded {
                Ok(incoming) => return Ok(incoming),
                Err((id, rejection)) => {
                    self.rejected += 1;
                    let info = self.ep.info();
                    tracing::warn!(
                        channel = %info.channel,
                        peer = %info.peer,
                        request_id = id,
                        "refused a message: {rejection}"
                    );
                    self.ep.send_frame(Kind::Reject, id, &rejection)?;
                }
            }
        }
    }

    /// Answer call `id`. A response too large for one message is refused
    /// locally ([`IpcError::TooLarge`]) and the client is sent
    /// [`Rejection::ResponseTooLarge`] instead, so it is not left waiting.
    pub fn reply(&mut self, id: RequestId, response: &I::Response) -> Result<(), IpcError> {
        match self.ep.send_frame(Kind::Reply, id, response) {
            Err(IpcError::TooLarge { len, max }) => {
                let rejection = Rejection::ResponseTooLarge {
                    len: len as u64,
                    max: max as u64,
                };
                self.ep.send_frame(Kind::Reject, id, &rejection)?;
                Err(IpcError::TooLarge { len, max })
            }
            other => other,
        }
    }

    /// Answer each request with `handler` until the client disconnects or a
    /// shutdown is requested (both return `Ok`). Notifications are handled
    /// and their responses dropped.
    pub fn serve(
        &mut self,
        mut handler: impl FnMut(I::Request) -> I::Response,
    ) -> Result<(), IpcError> {
        loop {
            let incoming = match self.recv() {
                Ok(i) => i,
                Err(IpcError::Disconnected { .. } | IpcError::Shutdown) => return Ok(()),
                Err(e) => return Err(e),
            };
            let response = handler(incoming.request);
            if incoming.kind == Kind::Call {
                match self.reply(incoming.id, &response) {
                    Ok(()) | Err(IpcError::TooLarge { .. }) => {}
                    Err(IpcError::Disconnected { .. } | IpcError::Shutdown) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Check and decode one message arriving at a server of `I`: the request, or
/// the id to answer and the rejection to answer with.
pub fn decode_request<I: Interface>(
    bytes: &[u8],
    total_len: usize,
) -> Result<Incoming<I::Request>, (RequestId, Rejection)> {
    let hint = frame::request_id_hint(bytes);
    let f = frame::parse(bytes, total_len).map_err(|r| (hint, r))?;
    if f.interface != I::ID {
        return Err((
            f.request_id,
            Rejection::WrongInterface {
                expected: I::ID,
                got: f.interface,
            },
        ));
    }
    if !matches!(f.kind, Kind::Call | Kind::Notify) {
        return Err((f.request_id, Rejection::BadKind { got: f.kind as u8 }));
    }
    let request = frame::decode_payload::<I::Request>(f.payload).map_err(|r| (f.request_id, r))?;
    Ok(Incoming {
        id: f.request_id,
        kind: f.kind,
        request,
    })
}

impl<I: Interface> std::fmt::Debug for Server<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("interface", &I::NAME)
            .field("ep", &self.ep)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}
