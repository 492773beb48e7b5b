//! The typed event records of a CAS Motion recording.
//!
//! Every part that produces or consumes a recording (vm-monitor, log-store,
//! replay-controller, the CLI) shares these types, so the meaning of a record
//! is defined once. A recording is a [`MachineInfo`] (what machine was
//! recorded: replay refuses a log made from a different guest or disk image)
//! followed by an ordered sequence of [`Record`]s.
//!
//! Each record kind has a stable numeric [`RecordType`] id. The log-store
//! writes the id into each frame and the record's postcard encoding as the
//! frame's payload, so the id, not the Rust enum's layout, is the wire
//! contract. Extending the format means adding a new id; the payload of an
//! existing id never changes (a changed payload gets a new id), so an old
//! reader meeting a newer log fails with [`RecordError::UnknownType`] naming
//! the id instead of misreading it.

pub mod machine;
pub mod record;
pub mod session;

pub use machine::{
    CounterMode, CpuidEntry, CpuidPolicy, MachineInfo, Untrapped, counter_mode_name,
    parse_counter_mode,
};
pub use record::{
    Digest, DmaWrite, End, EndStatus, Interrupt, MmioBytes, MmioRead, PageHashes, PortIn, Rdrand,
    Rdseed, Rdtsc, Rdtscp, Record, RecordType, SerialInput, StateCheck,
};

/// A BLAKE3 hash (of a guest image, a disk image, guest memory).
pub type Hash32 = [u8; 32];

/// Why bytes could not be turned into a record (or a record into bytes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The type id is not one this build knows: the log was written by a
    /// newer version, or the bytes are not a record.
    #[error("unknown record type id {type_id} (written by a newer format version, or corrupt)")]
    UnknownType {
        /// The id found.
        type_id: u16,
    },
    /// The payload does not decode as the record its type id names.
    #[error("malformed {kind} record payload: {reason}")]
    Malformed {
        /// The record type's name.
        kind: &'static str,
        /// What postcard reported.
        reason: String,
    },
    /// The payload decoded but bytes were left over.
    #[error("{kind} record payload has {extra} trailing bytes")]
    TrailingBytes {
        /// The record type's name.
        kind: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// An MMIO access wider than [`record::MMIO_MAX`] bytes.
    #[error("MMIO read of {size} bytes exceeds the {max}-byte maximum")]
    MmioTooWide {
        /// The requested width.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// Serialization failed (only possible for a serializer bug).
    #[error("cannot encode {kind} record: {reason}")]
    Encode {
        /// The record type's name.
        kind: &'static str,
        /// What postcard reported.
        reason: String,
    },
}

/// Lower-case hex of a byte string (hashes in human and JSON output).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_pairs() {
        assert_eq!(super::hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
