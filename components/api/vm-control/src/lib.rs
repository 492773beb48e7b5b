//! `VmControl`: how the replay controller (or a debugger front end) drives the
//! vm-monitor — run to a timepoint or the next logged event, step, inspect
//! registers, take a digest, inject an event, stop.
//!
//! Sessions (appended to the original run/step/inspect requests):
//!
//! * **Recording** — a front end (the CLI) asks the vm-monitor to
//!   [`Request::Record`] a guest into a new log; sends
//!   [`Request::SerialInput`] as input arrives; polls [`Request::Progress`]
//!   (counts and the guest's serial output since the last poll) until the
//!   state is [`SessionState::Finished`]; [`Request::Stop`] ends it early.
//! * **Replay** — a front end asks the replay-controller to
//!   [`Request::Replay`] a log and polls it with [`Request::Progress`]. The
//!   controller reads the log over `LogRead`, has the vm-monitor load the
//!   recorded machine ([`Request::LoadReplay`], which reports the hashes of
//!   the images it loaded so the controller can refuse a mismatch), then
//!   streams records in batches ([`Request::Feed`]): each reply says how far
//!   the replay got, so there is no round trip per exit.
//!
//! Extending: append new variants at the end of each enum, never reorder
//! (postcard encodes the variant index).

use motion_ipc::Interface;
use motion_records::session::DurabilityRequest;
use motion_records::{EndStatus, Hash32, MachineInfo};
use serde::{Deserialize, Serialize};
use vcpu::{CounterMode, Event, Regs, SpecialRegs, Timepoint};

pub use log_append_api::Record as WireRecord;

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
    /// Record a guest (vm-monitor): build the machine from the domain's
    /// `guest-image` (and `disk-image`) resources and record it into a new
    /// log over `LogAppend`. Answered with [`Reply::Recording`] at once.
    Record(Box<RecordSetup>),
    /// Serial input for the guest being recorded.
    SerialInput {
        /// The bytes, in arrival order.
        bytes: Vec<u8>,
        /// No more input will come (end of file).
        end: bool,
    },
    /// The session's state and counts, with the guest's serial output since
    /// the last `Progress`.
    Progress,
    /// Load the machine a log was recorded on, for replay (vm-monitor):
    /// answered with [`Reply::Loaded`], the hashes of the images loaded.
    LoadReplay(Box<ReplayLoad>),
    /// Records for the replay (vm-monitor), in log order. Answered when the
    /// replay wants more, has stopped, or `wait_ms` has passed.
    Feed(Box<Feed>),
    /// Replay a log (replay-controller). Answered at once; poll with `Progress`.
    Replay(Box<ReplaySetup>),
}

/// What to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSetup {
    /// The log's file name in the log store's directory.
    pub log: String,
    /// The guest's name or path, for the log header.
    pub guest_name: String,
    /// Guest RAM in bytes.
    pub ram: u64,
    /// The vCPU backend (`soft`, `kvm`).
    pub backend: String,
    /// How asynchronous events are timed; `None`: the backend's best
    /// (`exact` on soft, `exit-synchronous` on kvm). `exit-synchronous` on
    /// soft records what a kvm recording would, for replay on either.
    pub counter_mode: Option<CounterMode>,
    /// A digest every this many inputs.
    pub digest_every: u64,
    /// When the store makes records durable.
    pub durability: DurabilityRequest,
    /// Serial input will come through [`Request::SerialInput`].
    pub serial_input: bool,
    /// Stop the recording after this long (milliseconds of wall-clock time).
    pub time_limit_ms: Option<u64>,
}

/// The machine to load for a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayLoad {
    /// The log header's machine description.
    pub machine: MachineInfo,
    /// Host PMI skid of the soft vCPU (instructions), to exercise landing;
    /// the landing margin follows it.
    pub pmi_skid: u32,
    /// The vCPU backend to replay on (`soft`, `kvm`), whichever recorded.
    pub backend: String,
}

/// The hashes of the images the vm-monitor loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedImages {
    /// BLAKE3 of the guest image.
    pub guest_image: Hash32,
    /// BLAKE3 of the disk image, if the domain was given one.
    pub disk_image: Option<Hash32>,
}

/// A batch of records for the replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    /// Log number of the first record.
    pub first: u64,
    /// The records, as the log store returned them.
    pub records: Vec<WireRecord>,
    /// These are the log's last records.
    pub end_of_log: bool,
    /// Answer after at most this long even if nothing changed (progress).
    pub wait_ms: u32,
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySetup {
    /// The log's file name in the log store's directory.
    pub log: String,
    /// Host PMI skid of the soft vCPU (0 = exact), to exercise landing.
    pub pmi_skid: u32,
    /// The vCPU backend to replay on (`soft`, `kvm`).
    pub backend: String,
}

/// Where a session is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Nothing started yet.
    Idle,
    /// Running.
    Running,
    /// Done, with this outcome.
    Finished(Outcome),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A recording ended with this `end` record, every record durable.
    Recorded {
        /// The end status written.
        end: EndStatus,
    },
    /// A replay matched every record of the log through its end.
    Verified {
        /// The recording's end status, reproduced.
        end: EndStatus,
    },
    /// The log ends without an `end` record (a recording cut short); every
    /// record in it was replayed and matched.
    Truncated {
        /// Records in the log.
        records: u64,
    },
    /// Replay and log parted.
    Diverged(Box<DivergenceReport>),
    /// The log cannot be replayed here (another guest or disk image, …).
    Refused(String),
    /// A host-side failure.
    Failed(String),
}

/// Where and how a replay parted from its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivergenceReport {
    /// Number of the log record that did not match.
    pub record: u64,
    /// What differed.
    pub what: String,
    /// Where the vCPU was.
    pub at: Option<Timepoint>,
    /// The recording's registers (known at digest records).
    pub expected_regs: Option<Regs>,
    /// The replay's registers.
    pub actual_regs: Option<Regs>,
    /// The first differing page: (page number, recorded hash, replayed hash).
    pub page: Option<(u64, u64, u64)>,
}

/// A session's progress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Status {
    /// Where the session is.
    pub state: Option<SessionState>,
    /// Records written (recording) or replayed (replay).
    pub records: u64,
    /// Records the log store acknowledged as durable (recording).
    pub durable: u64,
    /// Records in the log (replay), once known.
    pub total: Option<u64>,
    /// Guest instructions retired, where the backend counts them (0 where
    /// it cannot: kvm, and every exit-synchronous session).
    pub instructions: u64,
    /// The exit clock of an exit-synchronous session (`vcpu::ExitClocked`:
    /// port I/O, MMIO and HLT exits so far); 0 in exact sessions.
    pub exits: u64,
    /// State checks compared (replay) or written (recording).
    pub checks: u64,
    /// Digests compared (replay) or written (recording).
    pub digests: u64,
    /// The last digest that matched (replay) or was written (recording):
    /// its record number and memory hash.
    pub last_digest: Option<(u64, Hash32)>,
    /// Asynchronous events landed (replay).
    pub landings: u64,
    /// Wall time of the finished session, measured where it ran: from the
    /// machine's start to the sealed log (recording) or the verdict (replay).
    pub session_ns: u64,
    /// The guest's serial output since the previous status.
    pub output: Vec<u8>,
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
    /// A recording started with this machine description in its header.
    Recording(Box<MachineInfo>),
    /// Serial input taken.
    InputTaken,
    /// A session's status.
    Status(Box<Status>),
    /// The machine is loaded for replay.
    Loaded(LoadedImages),
    /// A replay started.
    ReplayStarted,
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
    /// A session is already running here.
    #[error("a session is already running: {what}")]
    Busy {
        /// Which.
        what: String,
    },
    /// The request does not fit the session's state.
    #[error("{what}")]
    BadRequest {
        /// Why.
        what: String,
    },
    /// Loading the machine failed (image missing or refused).
    #[error("cannot load the machine: {what}")]
    Load {
        /// Why.
        what: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineInfo {
        MachineInfo {
            backend: "soft".into(),
            guest_name: "timer".into(),
            vcpus: 1,
            memory_bytes: 128 << 20,
            guest_image: [1; 32],
            disk_image: Some([2; 32]),
            cpuid: vcpu::CpuidPolicy::baseline(),
            counter_mode: CounterMode::Exact,
            untrapped: Vec::new(),
        }
    }

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(v: T) {
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<T>(&bytes).unwrap(), v);
    }

    #[test]
    fn session_messages_round_trip() {
        round_trip(Request::Record(Box::new(RecordSetup {
            log: "t.motionlog".into(),
            guest_name: "timer".into(),
            ram: 1 << 27,
            backend: "soft".into(),
            counter_mode: Some(CounterMode::ExitSynchronous),
            digest_every: 500,
            durability: DurabilityRequest::IntervalMs(10),
            serial_input: true,
            time_limit_ms: Some(2000),
        })));
        round_trip(Request::SerialInput {
            bytes: b"hi\n".to_vec(),
            end: true,
        });
        round_trip(Request::Progress);
        round_trip(Request::LoadReplay(Box::new(ReplayLoad {
            machine: machine(),
            pmi_skid: 64,
            backend: "kvm".into(),
        })));
        round_trip(Request::Feed(Box::new(Feed {
            first: 7,
            records: vec![WireRecord {
                record_type: 1,
                timepoint: None,
                payload: vec![1, 2, 3],
            }],
            end_of_log: true,
            wait_ms: 100,
        })));
        round_trip(Request::Replay(Box::new(ReplaySetup {
            log: "t.motionlog".into(),
            pmi_skid: 0,
            backend: "soft".into(),
        })));
        let tp = Timepoint {
            vcpu: 0,
            branches: 9,
            rip: 0x1000,
            rcx: 3,
        };
        round_trip(Reply::Status(Box::new(Status {
            state: Some(SessionState::Finished(Outcome::Diverged(Box::new(
                DivergenceReport {
                    record: 12,
                    what: "digest".into(),
                    at: Some(tp),
                    expected_regs: Some(Regs::default()),
                    actual_regs: Some(Regs {
                        rax: 1,
                        ..Regs::default()
                    }),
                    page: Some((0x10c, 1, 2)),
                },
            )))),
            records: 12,
            durable: 10,
            total: Some(20),
            instructions: 1000,
            exits: 3,
            checks: 5,
            digests: 1,
            last_digest: Some((3, [9; 32])),
            landings: 2,
            session_ns: 123,
            output: b"out".to_vec(),
        })));
        round_trip(Reply::Recording(Box::new(machine())));
        round_trip(Reply::Loaded(LoadedImages {
            guest_image: [1; 32],
            disk_image: None,
        }));
        for o in [
            Outcome::Recorded {
                end: EndStatus::GuestShutdown { code: 0 },
            },
            Outcome::Verified {
                end: EndStatus::GuestHalted,
            },
            Outcome::Truncated { records: 4 },
            Outcome::Refused("other image".into()),
            Outcome::Failed("io".into()),
        ] {
            round_trip(SessionState::Finished(o));
        }
    }
}
