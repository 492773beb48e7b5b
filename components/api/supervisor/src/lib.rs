//! `Supervisor`: how the runtime's supervisor talks to a running domain —
//! liveness, health of its components, orderly shutdown. The runtime serves
//! it inside every domain process on the domain's control channel.
//!
//! Extending: append new variants at the end of each enum, never reorder
//! (postcard encodes the variant index).

use motion_ipc::Interface;
use serde::{Deserialize, Serialize};

/// The `Supervisor` interface.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor;

impl Interface for Supervisor {
    const NAME: &'static str = "Supervisor";
    type Request = Request;
    type Response = Result<Reply, SupervisorError>;
}

/// What the supervisor asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Are you alive? Echoes the nonce.
    Ping {
        /// Any value.
        nonce: u64,
    },
    /// How are your components?
    Health,
    /// Stop: components see their shutdown flag set and should return.
    Shutdown {
        /// Why, for the domain's log.
        reason: String,
    },
}

/// State of one component in a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentState {
    /// Its entry function is running.
    Running,
    /// Its entry function returned `Ok`.
    Finished,
    /// Its entry function returned an error.
    Failed {
        /// The error.
        error: String,
    },
    /// Its entry function panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// The component.
    pub name: String,
    /// Its state.
    pub state: ComponentState,
}

/// A domain's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainHealth {
    /// The domain.
    pub domain: String,
    /// Its process id (the runtime's own for threaded domains).
    pub pid: u32,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Its components.
    pub components: Vec<ComponentHealth>,
}

/// The domain's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to a ping.
    Pong {
        /// The nonce received.
        nonce: u64,
    },
    /// Answer to a health request.
    Health(DomainHealth),
    /// Shutdown has begun.
    ShuttingDown,
}

/// Why a domain refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SupervisorError {
    /// The request cannot be honoured now.
    #[error("refused: {why}")]
    Refused {
        /// Why.
        why: String,
    },
}
