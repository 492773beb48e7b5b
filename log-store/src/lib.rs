//! Append-only, framed, checksummed, hash-chained, compressed, crash-safe
//! event log: where a CAS Motion recording is kept.
//!
//! A log is evidence. Its writer ([`LogWriter`]) only ever appends; records
//! are acknowledged ([`Ack`]) only once durable under the chosen
//! [`Durability`] policy; a writer that dies leaves at most a torn tail that
//! [`LogWriter::recover`] cuts without losing an acknowledged record; and
//! every byte is covered by a CRC32C or the BLAKE3 chain, so [`verify`] names
//! the first altered region and its offset. The layout is in
//! docs/log-format.md and [`format`](mod@format).
//!
//! The API is transport-independent: the log-store component's server loop
//! drives the same writer and reader over IPC.

pub mod error;
pub mod format;
pub mod reader;
pub mod sample;
pub mod scan;
pub mod service;
pub mod source;
pub mod writer;

pub use error::{Fault, LogError, Region};
pub use reader::{LogReader, Records};
pub use scan::{BlockInfo, Scan};
pub use source::Source;
pub use writer::{Ack, Durability, EncodedRecord, LogWriter, Recovery, SealSummary, WriterConfig};

/// Check a whole log: header, every block along the chain, every frame and
/// record, and (if sealed) the index and trailer. The result's `fault` is the
/// first bad region in file order.
pub fn verify<S: Source + ?Sized>(src: &S) -> std::io::Result<Scan> {
    scan::scan(src)
}

/// [`verify`] a file by path.
pub fn verify_path(path: impl AsRef<std::path::Path>) -> Result<Scan, LogError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| LogError::io("open", path, e))?;
    scan::scan(&file).map_err(|e| LogError::io("read", path, e))
}

/// The fuzz entry: treat `data` as a log and exercise everything that parses
/// it (verify, open, iterate, seek by number and by timepoint). It must
/// return normally for every input; a panic is a bug.
pub fn fuzz_read(data: &[u8]) {
    // The first two bytes as a record type id and the rest as its payload:
    // record decoding directly, which frames' CRCs otherwise shield.
    if let [a, b, payload @ ..] = data {
        let _ = motion_records::Record::decode(u16::from_le_bytes([*a, *b]) % 16, payload);
        let _ = motion_records::session::Begin::from_payload(payload);
    }
    let _ = verify(data);
    let Ok(r) = LogReader::from_source(data) else {
        return;
    };
    for item in r.records().take(100_000) {
        if item.is_err() {
            break;
        }
    }
    let n = r.record_count();
    if let Ok(it) = r.records_from(n / 2) {
        for item in it.take(16) {
            if item.is_err() {
                break;
            }
        }
    }
    let _ = r.find_timepoint(&vcpu::Timepoint {
        vcpu: 0,
        branches: n.wrapping_mul(9),
        rip: 0,
        rcx: 0,
    });
}
