//! `VmControl`: how the replay controller (or a debugger front end) drives the
//! vm-monitor — run to a timepoint or the next logged event, step, inspect
//! registers, take a digest, inject an event, stop.
//!
//! Extending: append new variants at the end of each enum, never reorder
//! (postcard encodes the variant index).

use motion_ipc::Interface;
use serde::{Deserialize, Serialize};
use vcpu::{Event, Regs, SpecialRegs, Timepoint};

/// The `VmControl` interface.
#[derive(Debug, Clone, Copy)]
pub struct VmControl;

impl Interface for VmControl {
    const NAME: &'static str = "VmControl";
    type Request = Request;
    type Response = Result<Reply, VmControlError>;
}

/// Where a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunUntil {
    /// Exactly at this timepoint (before the instruction there executes).
    Timepoint(Timepoint),
    /// At the next asynchronous event from the log (replay) or the next
    /// exit that produces a record (recording).
    NextEvent,
    /// Until the guest halts for good, shuts down, or [`Request::Stop`].
    End,
}

/// What a controller asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Run all vCPUs until the condition holds.
    Run {
        /// The stop condition.
        until: RunUntil,
    },
    /// Execute exactly `instructions` instructions on one vCPU.
    Step {
        /// The vCPU.
        vcpu: u32,
        /// How many.
        instructions: u64,
    },
    /// A vCPU's registers.
    GetRegs {
        /// The vCPU.
        vcpu: u32,
    },
    /// Hash of the VM's state (registers of every vCPU and guest memory).
    Digest,
    /// Inject an event into a vCPU at its current point.
    Inject {
        /// The vCPU.
        vcpu: u32,
        /// The event.
        event: Event,
    },
    /// Stop a run in progress (or do nothing if stopped) and report where.
    Stop,
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The requested timepoint was reached.
    ReachedTimepoint,
    /// Stopped before the event with this log record number.
    Event {
        /// The record number.
        record: u64,
    },
    /// The steps asked for were executed.
    Stepped,
    /// The guest halted with interrupts off, or shut down.
    GuestEnded,
    /// [`Request::Stop`] arrived.
    Stopped,
    /// Replay found a mismatch with the log.
    Divergence {
        /// Record number of the event that did not match.
        record: u64,
        /// What differed.
        what: String,
    },
}

/// Where and why execution stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopInfo {
    /// Why.
    pub reason: StopReason,
    /// Each vCPU's current point, by vCPU index.
    pub at: Vec<Timepoint>,
}

/// A vCPU's architectural registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    /// General-purpose registers, RIP, RFLAGS.
    pub regs: Regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: SpecialRegs,
}

/// A state digest, for checking replay against recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDigest {
    /// Where each vCPU was.
    pub at: Vec<Timepoint>,
    /// BLAKE3 over every vCPU's registers.
    pub registers: [u8; 32],
    /// BLAKE3 over guest memory.
    pub memory: [u8; 32],
}

/// The monitor's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A run or step ended.
    Stopped(StopInfo),
    /// Registers (boxed: much larger than the other replies).
    Registers(Box<Registers>),
    /// The digest.
    Digest(VmDigest),
    /// The event will be delivered at the next entry of that vCPU.
    Injected,
}

/// Why the monitor refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VmControlError {
    /// No such vCPU.
    #[error("no vCPU {vcpu}")]
    NoSuchVcpu {
        /// The index.
        vcpu: u32,
    },
    /// The VM is running; stop it first.
    #[error("the VM is running: stop it first")]
    Running,
    /// The timepoint is behind the vCPU's current point.
    #[error("timepoint {target:?} is already behind vCPU {vcpu}")]
    InThePast {
        /// The vCPU.
        vcpu: u32,
        /// The target.
        target: Timepoint,
    },
    /// The event cannot be injected now.
    #[error("cannot inject: {why}")]
    CannotInject {
        /// Why.
        why: String,
    },
    /// The backend cannot do this here.
    #[error("not supported here: {what}")]
    Unsupported {
        /// What is missing.
        what: String,
    },
    /// The vCPU backend failed.
    #[error("vCPU failed: {what}")]
    Vcpu {
        /// What failed.
        what: String,
    },
}
