//! Errors, and the description of where a log is damaged.

use std::path::PathBuf;

use serde::Serialize;

/// The part of a log file a fault lies in, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Region {
    /// The file header (magic, version, machine description).
    Header,
    /// A block: its header, its stored payload, or its place in the chain.
    Block {
        /// Block number (0-based).
        block: u64,
    },
    /// One frame inside a block that otherwise checked out.
    Frame {
        /// Block number.
        block: u64,
        /// Frame number within the block.
        frame: u32,
        /// The record number the frame would hold.
        record: u64,
        /// Offset of the frame within the block's uncompressed bytes.
        offset_in_block: u32,
    },
    /// The index section written at seal.
    Index,
    /// The trailer (the last bytes of a sealed log).
    Trailer,
}

impl Region {
    /// The block a fault is in, for block and frame faults.
    pub fn block(&self) -> Option<u64> {
        match *self {
            Region::Block { block } | Region::Frame { block, .. } => Some(block),
            _ => None,
        }
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Region::Header => f.write_str("file header"),
            Region::Block { block } => write!(f, "block {block}"),
            Region::Frame {
                block,
                frame,
                record,
                offset_in_block,
            } => write!(
                f,
                "block {block} frame {frame} (record {record}, offset {offset_in_block} in the uncompressed block)"
            ),
            Region::Index => f.write_str("index"),
            Region::Trailer => f.write_str("trailer"),
        }
    }
}

/// The first place a log fails its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Which part.
    pub region: Region,
    /// File offset where that part starts (for a frame: where its block starts).
    pub offset: u64,
    /// What check failed.
    pub reason: String,
    /// The damage reaches the end of the file with nothing valid after it:
    /// what a writer that died mid-write leaves (recovery may truncate it).
    pub torn_tail: bool,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.region, self.offset, self.reason
        )?;
        if self.torn_tail {
            f.write_str(" (torn tail)")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong using a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `create` refuses to replace an existing file: a log is evidence.
    #[error("{} already exists: refusing to overwrite a log", .0.display())]
    Exists(PathBuf),
    /// The log fails its checks here.
    #[error("log damaged: {0}")]
    Corrupt(Fault),
    /// Recovery found damage that is not a torn tail (valid data follows it,
    /// or it is in a sealed section): it truncates nothing.
    #[error("not recovering: {0} is not a torn tail; run `motion log verify`")]
    NotATornTail(Fault),
    /// A sealed log is final: nothing more may be appended.
    #[error("the log is sealed: nothing more can be appended")]
    Sealed,
    /// A record too large for one block.
    #[error("record of {size} bytes exceeds the {max}-byte maximum")]
    RecordTooLarge {
        /// Its encoded size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// A record of an encoded batch does not decode; none of the batch was taken.
    #[error("record {index} of the batch is invalid: {reason}")]
    InvalidRecord {
        /// Its index in the batch.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A record could not be encoded or decoded.
    #[error(transparent)]
    Record(#[from] motion_records::RecordError),
    /// An earlier write failed part-way, so the file's tail is unknown: the
    /// writer refuses further work (reopen to recover).
    #[error("an earlier write failed; the writer is stopped (reopen the log to recover)")]
    Poisoned,
    /// A record number past the end of the log.
    #[error("record {requested} is past the end of the log ({total} records)")]
    OutOfRange {
        /// The record asked for.
        requested: u64,
        /// Records in the log.
        total: u64,
    },
    /// An invalid writer configuration.
    #[error("invalid log-store configuration: {0}")]
    Config(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        LogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
