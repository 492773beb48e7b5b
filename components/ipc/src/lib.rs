//! Typed IPC: interfaces, postcard encoding, in-process and cross-process transports.
//!
//! A component talks to another only through a **channel** declared in
//! `system.toml`. A channel carries one [`Interface`] (a request type and a
//! response type, both postcard-encoded) between two declared components: the
//! client, which sends requests, and the server, which answers them.
//!
//! * A message is one [`frame`]: a fixed 16-byte header (zerocopy) naming the
//!   interface, the message kind, a request id and the payload length, then the
//!   postcard payload. No message exceeds [`MAX_MESSAGE_SIZE`].
//! * Every message is checked by its receiver before anything else looks at
//!   it. A malformed, oversized or wrong-interface request is answered with a
//!   typed [`Rejection`] frame (the sender's call returns
//!   [`IpcError::Rejected`]); the receiver never panics and keeps serving.
//! * The transport is a [`Link`](link::Link): in-process (bounded channels, for
//!   threads) or cross-process (a Unix `SOCK_SEQPACKET` socket pair). Component
//!   code sees only [`Client`] and [`Server`] and cannot tell which it runs on.
//! * Batching: one request may carry many items (a `LogAppend` batch of
//!   records), and a client may pipeline requests ([`Client::send`] /
//!   [`Client::recv`]) up to a window, so the high-rate path needs about one
//!   system call per batch, not per record.
//! * An endpoint is bound to one interface and one declared peer. A
//!   `Client<A>` only accepts `A`'s requests (a type error otherwise), turning
//!   an endpoint of another interface into a `Client<A>` fails, and a raw frame
//!   naming another interface is refused by the receiver.
//!
//! Component code receives its endpoints in a [`ComponentContext`] built by
//! the runtime (`motion-runtime`), which hands out only the channels declared
//! for that component.

pub mod client;
pub mod context;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod fuzz_entry;
pub mod interface;
pub mod link;
pub mod server;
pub mod shutdown;
#[cfg(test)]
mod transport_tests;

pub use client::Client;
pub use context::{ComponentContext, ComponentResult, EntryFn};
pub use endpoint::{Endpoint, EndpointInfo, Role};
pub use error::{IpcError, Rejection};
pub use frame::{HEADER_SIZE, Kind, MAX_MESSAGE_SIZE, MAX_PAYLOAD_SIZE, RequestId};
pub use interface::{Interface, InterfaceId, interface_id, interface_name};
pub use server::{Incoming, Server};
pub use shutdown::ShutdownSignal;

/// The interfaces a channel in `system.toml` may carry. Each has its own API
/// crate with its request/response messages. An interface's wire id is its
/// position in this list plus one (0 is never a valid id), so names may only
/// be appended, never reordered.
pub const INTERFACE_NAMES: &[&str] = &["LogAppend", "LogRead", "Pmu", "VmControl", "Supervisor"];
