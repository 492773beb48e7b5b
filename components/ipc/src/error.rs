//! Errors: [`IpcError`] for callers, [`Rejection`] on the wire.

use serde::{Deserialize, Serialize};

use crate::interface::{InterfaceId, interface_name};

/// Why a receiver refused a message. Sent back to the sender in a
/// [`Kind::Reject`](crate::Kind::Reject) frame, so it is plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The message is larger than [`MAX_MESSAGE_SIZE`](crate::MAX_MESSAGE_SIZE).
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// Shorter than a frame header.
    #[error("message of {len} bytes is shorter than the 16-byte frame header")]
    Truncated {
        /// Its length.
        len: u64,
    },
    /// The first two bytes are not "CM".
    #[error("bad frame magic {got:02x?}")]
    BadMagic {
        /// What was there.
        got: [u8; 2],
    },
    /// Unknown frame version.
    #[error("unsupported frame version {got}")]
    BadVersion {
        /// What was there.
        got: u8,
    },
    /// Unknown message kind, or a kind this side does not accept (a reply
    /// sent to a server).
    #[error("message kind {got} is not accepted here")]
    BadKind {
        /// What was there.
        got: u8,
    },
    /// Reserved header bits set.
    #[error("reserved frame flags {flags:#x} set")]
    ReservedFlags {
        /// What was there.
        flags: u16,
    },
    /// The header's payload length disagrees with the message.
    #[error("header declares a {declared}-byte payload but {actual} bytes follow")]
    LengthMismatch {
        /// Declared length.
        declared: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The frame names an interface other than the channel's.
    #[error("channel carries {} but the message is for {}", show_iface(*expected), show_iface(*got))]
    WrongInterface {
        /// The channel's interface.
        expected: InterfaceId,
        /// The frame's.
        got: InterfaceId,
    },
    /// The payload does not decode as the interface's message type.
    #[error("payload does not decode: {reason}")]
    BadPayload {
        /// The decoder's complaint.
        reason: String,
    },
    /// The server's answer did not fit in a message; the server was told.
    #[error("the response ({len} bytes) exceeds the maximum message size of {max}")]
    ResponseTooLarge {
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
}

fn show_iface(id: InterfaceId) -> String {
    match interface_name(id) {
        Some(name) => format!("{name} (id {id})"),
        None => format!("unknown interface id {id}"),
    }
}

/// What went wrong for a client, a server, or a component asking for an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A message to send would exceed [`MAX_MESSAGE_SIZE`](crate::MAX_MESSAGE_SIZE); nothing was sent.
    #[error("message of {len} bytes exceeds the maximum of {max}: split the batch")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// postcard could not encode the value (nothing was sent).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The peer refused our message.
    #[error("peer `{peer}` on channel `{channel}` rejected request {request_id}: {rejection}")]
    Rejected {
        /// The channel.
        channel: String,
        /// The peer component.
        peer: String,
        /// The refused request's id (0 when the peer could not read it).
        request_id: u32,
        /// Why.
        rejection: Rejection,
    },
    /// The peer sent something we cannot accept (a client receiving a bad reply).
    #[error("bad message from `{peer}` on channel `{channel}`: {rejection}")]
    BadMessage {
        /// The channel.
        channel: String,
        /// The peer component.
        peer: String,
        /// What was wrong.
        rejection: Rejection,
    },
    /// The peer is gone for good: its domain ended and will not be restarted.
    #[error("peer `{peer}` on channel `{channel}` disconnected")]
    Disconnected {
        /// The channel.
        channel: String,
        /// The peer component.
        peer: String,
    },
    /// No message within the time given.
    #[error("timed out waiting on channel `{channel}`")]
    Timeout {
        /// The channel.
        channel: String,
    },
    /// The domain was asked to shut down.
    #[error("shutdown requested")]
    Shutdown,
    /// Too many pipelined requests without collecting replies.
    #[error(
        "{in_flight} requests in flight on channel `{channel}` (window {window}): receive replies first"
    )]
    WindowFull {
        /// The channel.
        channel: String,
        /// Requests sent and not yet collected.
        in_flight: usize,
        /// The limit.
        window: usize,
    },
    /// A reply arrived for no outstanding request.
    #[error("unsolicited reply {request_id} from `{peer}` on channel `{channel}`")]
    UnexpectedReply {
        /// The channel.
        channel: String,
        /// The peer component.
        peer: String,
        /// The reply's id.
        request_id: u32,
    },
    /// `recv` with nothing outstanding: no reply can come.
    #[error("no request in flight on channel `{channel}`")]
    NothingInFlight {
        /// The channel.
        channel: String,
    },
    /// The endpoint carries another interface than the one asked for.
    #[error("channel `{channel}` carries {actual}, not {wanted}")]
    InterfaceMismatch {
        /// The channel.
        channel: String,
        /// Its interface.
        actual: String,
        /// The interface asked for.
        wanted: &'static str,
    },
    /// The endpoint's role (client or server) is not the one asked for.
    #[error("component `{component}` is the {actual} of channel `{channel}`, not its {wanted}")]
    WrongRole {
        /// The channel.
        channel: String,
        /// The component.
        component: String,
        /// Its role.
        actual: crate::Role,
        /// The role asked for.
        wanted: crate::Role,
    },
    /// The component has no such channel: it was not declared for it in
    /// `system.toml`, or it was already taken.
    #[error(
        "component `{component}` has no {what}: not declared for it in the system description (or already taken)"
    )]
    NotDeclared {
        /// The component asking.
        component: String,
        /// What it asked for.
        what: String,
    },
    /// More than one channel matches; name one.
    #[error("component `{component}` has several {what}: name the channel ({channels})")]
    Ambiguous {
        /// The component asking.
        component: String,
        /// What it asked for.
        what: String,
        /// The candidates.
        channels: String,
    },
    /// The transport failed (an unexpected socket error).
    #[error("transport error on channel `{channel}`: {source}")]
    Io {
        /// The channel.
        channel: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
