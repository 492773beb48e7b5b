//! `LogAppend`: the high-rate channel from the monitor to the log store.
//!
//! Records are opaque typed bytes at this layer: the monitor and the log store
//! agree on what a `record_type` means; the channel only moves them, in order,
//! in batches, and reports how many the store has accepted and how many are
//! durable. The log is append-only: no request rewrites, truncates or deletes.
//!
//! Use [`Appender`] on the client side: it batches records into messages,
//! pipelines batches, and tracks the store's acknowledgements.
//!
//! Extending: append new variants at the end of each enum, never reorder
//! (postcard encodes the variant index).

mod appender;

use motion_ipc::Interface;
use motion_records::MachineInfo;
use motion_records::session::DurabilityRequest;
use serde::{Deserialize, Serialize};
use vcpu::Timepoint;

pub use appender::{AppendError, Appender, BatchLimits};
pub use motion_records::session::DurabilityRequest as Durability;

/// The `LogAppend` interface.
#[derive(Debug, Clone, Copy)]
pub struct LogAppend;

impl Interface for LogAppend {
    const NAME: &'static str = "LogAppend";
    type Request = Request;
    type Response = Result<Reply, LogAppendError>;
}

/// One event record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What the payload is (defined by the monitor and the log format).
    pub record_type: u16,
    /// Where in the guest's execution an asynchronous event happened, for the
    /// store's timepoint index; `None` for synchronous events, which are
    /// ordered by occurrence alone.
    pub timepoint: Option<Timepoint>,
    /// The record's bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes this record adds to a message at most, beyond its payload:
    /// type, timepoint and length prefixes as postcard varints.
    pub const MAX_OVERHEAD: usize = 3 + 1 + (5 + 3 * 10) + 5;

    /// Upper bound of this record's encoded size.
    pub fn encoded_size_bound(&self) -> usize {
        self.payload.len() + Self::MAX_OVERHEAD
    }
}

/// What the monitor asks of the log store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Append these records, in order, after everything appended before.
    Append {
        /// The batch.
        records: Vec<Record>,
    },
    /// Make every record accepted so far durable before replying.
    Flush,
    /// Flush, then close the log for good: write the trailer (chain head and
    /// counts). Appends after this are refused.
    Seal,
    /// Open a recording: create the named log with this machine description
    /// in its header (or resume an unsealed one). The first request of a
    /// session; the older way is a `Begin` record (type id 0) at the head of
    /// the first batch.
    Create(Box<CreateLog>),
}

/// What [`Request::Create`] opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateLog {
    /// The log's file name in the store's log directory (a plain name).
    pub log: String,
    /// The machine description for the header.
    pub machine: MachineInfo,
    /// When appended records become durable.
    pub durability: DurabilityRequest,
    /// If the log exists unsealed (the store restarted mid-recording),
    /// recover it and continue; otherwise an existing log is an error.
    pub resume: bool,
}

/// Cumulative counts since the log was opened for this writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {
    /// Records the store has taken, in order (a crash may still lose those
    /// beyond `durable`).
    pub accepted: u64,
    /// Records that survive a crash of the store or the host from now on.
    pub durable: u64,
}

/// The log store's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The batch was accepted.
    Appended(Ack),
    /// Everything accepted is durable.
    Flushed(Ack),
    /// The log is sealed; no further appends.
    Sealed(Ack),
    /// The log is open for appends (after [`Request::Create`]); the counts
    /// are those of the log (non-zero when resumed).
    Created(Ack),
}

impl Reply {
    /// The acknowledgement every reply carries.
    pub fn ack(&self) -> Ack {
        match self {
            Reply::Appended(a) | Reply::Flushed(a) | Reply::Sealed(a) | Reply::Created(a) => *a,
        }
    }
}

/// Why the log store refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LogAppendError {
    /// The log is sealed.
    #[error("the log is sealed: no more appends")]
    Sealed,
    /// A record of the batch is unacceptable; none of the batch was taken.
    #[error("record {index} of the batch is invalid: {why}")]
    InvalidRecord {
        /// Its index in the batch.
        index: u32,
        /// Why.
        why: String,
    },
    /// The store cannot write (disk full, I/O error); what was durable stays durable.
    #[error("log storage failed: {what}")]
    Storage {
        /// What failed.
        what: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_overhead_bound_holds_for_the_largest_fields() {
        let r = Record {
            record_type: u16::MAX,
            timepoint: Some(Timepoint {
                vcpu: u32::MAX,
                branches: u64::MAX,
                rip: u64::MAX,
                rcx: u64::MAX,
            }),
            payload: vec![0xAB; 70_000],
        };
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert!(bytes.len() <= r.encoded_size_bound(), "{}", bytes.len());
        let back: Record = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn payload_is_encoded_as_bytes_not_a_sequence() {
        // serde_bytes: length prefix then the raw bytes, one copy.
        let r = Record {
            record_type: 1,
            timepoint: None,
            payload: vec![200, 201],
        };
        assert_eq!(postcard::to_allocvec(&r).unwrap(), [1, 0, 2, 200, 201]);
    }
}
