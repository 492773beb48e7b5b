//! `LogRead`: read-only access to a recorded log (replay-controller, `motion log`).
//!
//! A session opens one log, then reads records by number, seeks by record
//! number or timepoint, and verifies the log's integrity. Nothing here can
//! change a log.
//!
//! Extending: append new variants at the end of each enum, never reorder
//! (postcard encodes the variant index).

use motion_ipc::Interface;
use motion_records::MachineInfo;
use serde::{Deserialize, Serialize};
use vcpu::Timepoint;

pub use log_append_api::Record;

/// The `LogRead` interface.
#[derive(Debug, Clone, Copy)]
pub struct LogRead;

impl Interface for LogRead {
    const NAME: &'static str = "LogRead";
    type Request = Request;
    type Response = Result<Reply, LogReadError>;
}

/// What a reader asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Open the named log (relative to the store's log directory) for this
    /// session, replacing any log opened before.
    Open {
        /// The log's name.
        log: String,
    },
    /// The open log's header.
    Header,
    /// Up to `max_records` records starting at record number `from`. The
    /// store may return fewer (a reply must fit in one message).
    Read {
        /// First record number (0-based).
        from: u64,
        /// At most this many.
        max_records: u32,
    },
    /// Find a record.
    Seek(SeekTarget),
    /// Check the whole log: frame checksums, block hash chain, trailer, index.
    Verify,
}

/// Where to seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeekTarget {
    /// Record number N.
    Record(u64),
    /// The first record of that vCPU at or after the timepoint.
    Timepoint(Timepoint),
}

/// What the open log says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSummary {
    /// Records in the log.
    pub records: u64,
    /// Whether a writer sealed it (otherwise it was recovered or is still open).
    pub sealed: bool,
}

/// The log's header: the machine the recording ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeader {
    /// Log format version.
    pub format_version: u32,
    /// vCPU backend that recorded ("soft", "kvm").
    pub backend: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory size in bytes.
    pub memory_bytes: u64,
    /// BLAKE3 of the guest image.
    pub guest_image_hash: [u8; 32],
    /// BLAKE3 of the disk image, if the guest had one.
    pub disk_image_hash: Option<[u8; 32]>,
    /// The CPUID policy the guest saw, by name.
    pub cpuid_policy: String,
    /// The whole machine description (what a replay needs to rebuild the
    /// machine: the CPUID policy itself, the counter mode, the guest's name).
    pub machine: Box<MachineInfo>,
}

/// The result of [`Request::Verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// The first problem found, or `None` for an intact log.
    pub first_bad: Option<BadSpot>,
}

/// Where a log stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadSpot {
    /// Byte offset in the file.
    pub offset: u64,
    /// Block number, when the problem is inside a block.
    pub block: Option<u64>,
    /// Frame number within the block, when known.
    pub frame: Option<u64>,
    /// What is wrong.
    pub what: String,
}

/// The store's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The log is open.
    Opened(LogSummary),
    /// The header.
    Header(LogHeader),
    /// Records `first ..first + records.len()`; `end` when the last record of
    /// the log is among them (or there are none from `first` on).
    Records {
        /// Number of the first record returned.
        first: u64,
        /// The records.
        records: Vec<Record>,
        /// No records after these.
        end: bool,
    },
    /// The record number a seek found (the record count when none matches).
    Position {
        /// Record number.
        record: u64,
    },
    /// The verification result.
    Verified(VerifyReport),
}

/// Why the store refused a read request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LogReadError {
    /// No log is open in this session.
    #[error("no log is open: send Open first")]
    NotOpen,
    /// The named log does not exist or is not a log.
    #[error("no log `{log}`: {why}")]
    NoSuchLog {
        /// The name asked for.
        log: String,
        /// Why.
        why: String,
    },
    /// The name tries to leave the log directory.
    #[error("log name `{log}` is not a plain name inside the log directory")]
    BadName {
        /// The name.
        log: String,
    },
    /// A record number past the end.
    #[error("record {from} is past the end of the log ({records} records)")]
    OutOfRange {
        /// Asked for.
        from: u64,
        /// Records in the log.
        records: u64,
    },
    /// The log is damaged where the request needed to read.
    #[error("log damaged at offset {offset}: {what}")]
    Corrupt {
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Reading failed.
    #[error("log storage failed: {what}")]
    Storage {
        /// What failed.
        what: String,
    },
}
