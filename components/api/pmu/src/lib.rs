//! `Pmu`: the pmu-driver's service to the monitor and the replay controller —
//! per-vCPU retired-event counters that can be read and armed to interrupt
//! after a number of events (with the backend's skid margin).
//!
//! Extending: append new variants at the end of each enum, never reorder
//! (postcard encodes the variant index).

use motion_ipc::Interface;
use serde::{Deserialize, Serialize};

/// The `Pmu` interface.
#[derive(Debug, Clone, Copy)]
pub struct Pmu;

impl Interface for Pmu {
    const NAME: &'static str = "Pmu";
    type Request = Request;
    type Response = Result<Reply, PmuError>;
}

/// What a counter counts (Intel architectural events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterEvent {
    /// Branch instructions retired (C4H): the record/replay clock.
    BranchesRetired,
    /// Instructions retired (C0H).
    InstructionsRetired,
}

/// How a counter is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterConfig {
    /// The event.
    pub event: CounterEvent,
    /// Count in guest user mode (ring 3).
    pub user: bool,
    /// Count in guest kernel mode (rings 0-2).
    pub kernel: bool,
}

/// A counter of one vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CounterRef {
    /// The vCPU index.
    pub vcpu: u32,
    /// The counter index on that vCPU.
    pub counter: u8,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// What this driver can do.
    Capabilities,
    /// Set up a counter and reset it to zero (disarmed).
    Program {
        /// Which counter.
        counter: CounterRef,
        /// How.
        config: CounterConfig,
    },
    /// Interrupt the vCPU (a PMI exit) once the counter has counted
    /// `overflow_after` more events. Hardware may overshoot by up to the skid
    /// margin of [`PmuCapabilities`]; arm that much early and single-step.
    Arm {
        /// Which counter.
        counter: CounterRef,
        /// Events until the interrupt.
        overflow_after: u64,
    },
    /// Cancel an armed interrupt.
    Disarm {
        /// Which counter.
        counter: CounterRef,
    },
    /// The counter's value.
    Read {
        /// Which counter.
        counter: CounterRef,
    },
    /// The counter's configuration and state.
    Status {
        /// Which counter.
        counter: CounterRef,
    },
}

/// What the driver can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmuCapabilities {
    /// Where counts come from ("soft": the interpreter's exact counters;
    /// "perf": host hardware through perf_event_open).
    pub source: String,
    /// Counters per vCPU.
    pub counters_per_vcpu: u8,
    /// Whether counts are exact (no over- or under-count).
    pub exact: bool,
    /// How many events an overflow interrupt may arrive late.
    pub skid_margin: u64,
}

/// A counter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterStatus {
    /// Its configuration, if programmed.
    pub config: Option<CounterConfig>,
    /// The value.
    pub count: u64,
    /// The count at which the armed interrupt fires, if armed.
    pub armed_at: Option<u64>,
    /// Whether the armed interrupt has fired since it was armed.
    pub overflowed: bool,
}

/// The driver's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Request::Capabilities`].
    Capabilities(PmuCapabilities),
    /// The counter is programmed and zero.
    Programmed,
    /// The interrupt is armed.
    Armed,
    /// The interrupt is cancelled.
    Disarmed,
    /// The counter's value.
    Count(u64),
    /// The counter's state.
    Status(CounterStatus),
}

/// Why the driver refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PmuError {
    /// No such vCPU or counter.
    #[error("no counter {counter} on vCPU {vcpu}")]
    NoSuchCounter {
        /// The vCPU.
        vcpu: u32,
        /// The counter.
        counter: u8,
    },
    /// Arm or read before program.
    #[error("counter {counter} of vCPU {vcpu} is not programmed")]
    NotProgrammed {
        /// The vCPU.
        vcpu: u32,
        /// The counter.
        counter: u8,
    },
    /// This host or backend cannot do it (e.g. no hardware PMU).
    #[error("not supported here: {what}")]
    Unsupported {
        /// What is missing.
        what: String,
    },
    /// Programming the hardware failed.
    #[error("counter hardware failed: {what}")]
    Device {
        /// What failed.
        what: String,
    },
}
