//! The records of a recording and their stable type ids.

use serde::{Deserialize, Serialize};
use vcpu::{Regs, RetiredCounts, Timepoint};

use crate::{Hash32, RecordError};

/// Widest MMIO access recorded (a 128-bit SSE load).
pub const MMIO_MAX: usize = 16;

/// The bytes an MMIO read returned, at most [`MMIO_MAX`] of them.
pub type MmioBytes = heapless::Vec<u8, MMIO_MAX>;

/// The value an `IN`/`INS` from an I/O port returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortIn {
    /// The port.
    pub port: u16,
    /// Access size in bytes (1, 2 or 4).
    pub size: u8,
    /// The value (zero-extended).
    pub value: u32,
}

/// The bytes an emulated MMIO read returned; its access size is `bytes.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioRead {
    /// Guest-physical address read.
    pub gpa: u64,
    /// The bytes returned, little-endian as the guest sees them.
    pub bytes: MmioBytes,
}

impl MmioRead {
    /// A read of `bytes.len()` bytes at `gpa`; wider than [`MMIO_MAX`] is an error.
    pub fn new(gpa: u64, bytes: &[u8]) -> Result<MmioRead, RecordError> {
        let bytes = MmioBytes::from_slice(bytes).map_err(|_| RecordError::MmioTooWide {
            size: bytes.len(),
            max: MMIO_MAX,
        })?;
        Ok(MmioRead { gpa, bytes })
    }
}

/// The value RDTSC returned (EDX:EAX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rdtsc {
    /// The time-stamp counter.
    pub value: u64,
}

/// The values RDTSCP returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rdtscp {
    /// The time-stamp counter (EDX:EAX).
    pub value: u64,
    /// IA32_TSC_AUX (ECX).
    pub aux: u32,
}

/// The result of RDRAND: the value and whether it was valid (CF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rdrand {
    /// The random value (the destination operand, zero-extended).
    pub value: u64,
    /// CF: a value was available.
    pub ok: bool,
}

/// The result of RDSEED: the value and whether it was valid (CF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rdseed {
    /// The seed value (the destination operand, zero-extended).
    pub value: u64,
    /// CF: a value was available.
    pub ok: bool,
}

/// An external interrupt delivered at an exact point of one vCPU's execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interrupt {
    /// The vector injected.
    pub vector: u8,
    /// Where it was injected (the vCPU is `at.vcpu`).
    pub at: Timepoint,
}

/// Bytes a device wrote into guest memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaWrite {
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// The data written.
    pub bytes: Vec<u8>,
    /// Where the write became visible: `None` when it happened while handling
    /// the exit that precedes it in record order (synchronous device
    /// emulation), `Some` when it landed asynchronously at that timepoint.
    pub at: Option<Timepoint>,
}

/// Bytes that arrived on the serial line (input the guest will read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialInput {
    /// The bytes, in arrival order.
    pub bytes: Vec<u8>,
}

/// A checkpoint of one vCPU's state: replay compares its own state here and
/// reports the first mismatch as a divergence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Where the digest was taken.
    pub at: Timepoint,
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: Regs,
    /// BLAKE3 of all guest memory.
    pub memory_hash: Hash32,
    /// Retired instructions and branches on this vCPU since reset.
    pub retired: RetiredCounts,
}

/// The per-page hashes of guest memory that changed since the previous
/// digest, written right after each [`Digest`]: with them a replay whose
/// memory hash differs names the first differing page instead of only
/// saying that memory differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageHashes {
    /// `(page number, hash)` for each 4 KiB page whose hash changed since the
    /// previous digest (all pages start as zero pages), in ascending page
    /// order. The hash is the first 8 bytes of the page's BLAKE3 (little
    /// endian), with 0 reserved for an all-zero page.
    pub pages: Vec<(u64, u64)>,
}

/// A cheap check of the vCPU's state, written after each exit that consumed
/// inputs: a replay compares it at the same exit and so notices a wrong
/// input right after it is used, not only at the next [`Digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCheck {
    /// The first 8 bytes (little endian) of the BLAKE3 of the registers (the
    /// [`vcpu::Regs`] fields in declaration order, each u64 little endian),
    /// the retired instruction and branch counts (u64 little endian each;
    /// both 0 where the backend does not count exactly), then for each 4 KiB
    /// page that DMA wrote since the previous check, in ascending order, its
    /// page number (u64 little endian) and its contents at this point.
    pub hash: u64,
}

/// How a recording ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndStatus {
    /// The guest asked to power off, with its exit code.
    GuestShutdown {
        /// The guest's exit code.
        code: u32,
    },
    /// Every vCPU halted with interrupts disabled.
    GuestHalted,
    /// The host stopped the recording (a limit was reached, or the user asked).
    Stopped,
    /// The recording ended on a host-side error.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// The last record of a complete recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Why the recording ended.
    pub status: EndStatus,
    /// Where execution stopped, if a vCPU was running.
    pub at: Option<Timepoint>,
}

macro_rules! records {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal; )*) => {
        /// The stable numeric id of each record kind, written into every frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum RecordType {
            $( $(#[$doc])* $variant = $id, )*
        }

        impl RecordType {
            /// Every known type, in id order.
            pub const ALL: &'static [RecordType] = &[$(RecordType::$variant),*];

            /// The largest id in use (sizes per-type count tables).
            pub const MAX_ID: u16 = {
                let mut max = 0;
                $( if $id > max { max = $id; } )*
                max
            };

            /// The id written into frames.
            pub fn id(self) -> u16 {
                self as u16
            }

            /// The type an id names, or [`RecordError::UnknownType`].
            pub fn from_id(type_id: u16) -> Result<RecordType, RecordError> {
                match type_id {
                    $( $id => Ok(RecordType::$variant), )*
                    _ => Err(RecordError::UnknownType { type_id }),
                }
            }

            /// A short name for output (`port-in`, `interrupt`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $( RecordType::$variant => $name, )*
                }
            }
        }

        /// One non-deterministic input (or checkpoint) of a recording.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Record {
            $( $(#[$doc])* $variant($variant), )*
        }

        impl Record {
            /// This record's type.
            pub fn record_type(&self) -> RecordType {
                match self {
                    $( Record::$variant(_) => RecordType::$variant, )*
                }
            }

            /// Append this record's payload (postcard) to `out`; the type id is
            /// written separately by the frame.
            pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
                let buf = std::mem::take(out);
                let result = match self {
                    $( Record::$variant(r) => postcard::to_extend(r, buf), )*
                };
                match result {
                    Ok(buf) => {
                        *out = buf;
                        Ok(())
                    }
                    Err(e) => Err(RecordError::Encode {
                        kind: self.record_type().name(),
                        reason: e.to_string(),
                    }),
                }
            }

            /// Decode a frame's payload given its type id. Every payload byte
            /// must be used; unknown ids and malformed payloads are errors.
            pub fn decode(type_id: u16, payload: &[u8]) -> Result<Record, RecordError> {
                match RecordType::from_id(type_id)? {
                    $( RecordType::$variant => decode_exact::<$variant>($name, payload).map(Record::$variant), )*
                }
            }
        }

        $(
            impl From<$variant> for Record {
                fn from(r: $variant) -> Record {
                    Record::$variant(r)
                }
            }
        )*
    };
}

records! {
    /// A port read's value.
    PortIn = 1, "port-in";
    /// An MMIO read's bytes.
    MmioRead = 2, "mmio-read";
    /// RDTSC's result.
    Rdtsc = 3, "rdtsc";
    /// RDTSCP's result.
    Rdtscp = 4, "rdtscp";
    /// RDRAND's result.
    Rdrand = 5, "rdrand";
    /// RDSEED's result.
    Rdseed = 6, "rdseed";
    /// An interrupt with its timepoint.
    Interrupt = 7, "interrupt";
    /// Device data written into guest memory.
    DmaWrite = 8, "dma-write";
    /// Serial input bytes.
    SerialInput = 9, "serial-input";
    /// A state checkpoint.
    Digest = 10, "digest";
    /// End of recording.
    End = 11, "end";
    /// Per-page memory hashes that changed since the previous digest.
    PageHashes = 12, "page-hashes";
    /// A hash of the vCPU's registers and retired counts.
    StateCheck = 13, "state-check";
}

fn decode_exact<'a, T: Deserialize<'a>>(
    kind: &'static str,
    payload: &'a [u8],
) -> Result<T, RecordError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|e| RecordError::Malformed {
            kind,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(RecordError::TrailingBytes {
            kind,
            extra: rest.len(),
        });
    }
    Ok(value)
}

impl Record {
    /// The timepoint of an asynchronous record (what the log's timepoint
    /// index is built from); synchronous records have none.
    pub fn timepoint(&self) -> Option<&Timepoint> {
        match self {
            Record::Interrupt(r) => Some(&r.at),
            Record::DmaWrite(r) => r.at.as_ref(),
            Record::Digest(r) => Some(&r.at),
            Record::End(r) => r.at.as_ref(),
            _ => None,
        }
    }

    /// The payload encoded into a new vector (tests and tools; the log
    /// writer uses [`Record::encode_into`] with a reused buffer).
    pub fn to_payload(&self) -> Result<Vec<u8>, RecordError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Timepoint {
        Timepoint {
            vcpu: 1,
            branches: 12345,
            rip: 0xffff_8000_0000_1000,
            rcx: 3,
        }
    }

    fn samples() -> Vec<Record> {
        vec![
            PortIn {
                port: 0x3f8,
                size: 1,
                value: 0x41,
            }
            .into(),
            MmioRead::new(0xfee0_0030, &[1, 2, 3, 4]).unwrap().into(),
            Rdtsc { value: u64::MAX }.into(),
            Rdtscp { value: 7, aux: 1 }.into(),
            Rdrand {
                value: 0xdead_beef,
                ok: true,
            }
            .into(),
            Rdseed {
                value: 0,
                ok: false,
            }
            .into(),
            Interrupt {
                vector: 0x20,
                at: tp(),
            }
            .into(),
            DmaWrite {
                gpa: 0x1000,
                bytes: vec![9; 600],
                at: Some(tp()),
            }
            .into(),
            SerialInput {
                bytes: b"hello\n".to_vec(),
            }
            .into(),
            Digest {
                at: tp(),
                regs: Regs {
                    rax: 1,
                    rip: 2,
                    ..Regs::default()
                },
                memory_hash: [5; 32],
                retired: RetiredCounts {
                    instructions: 10,
                    branches: 3,
                },
            }
            .into(),
            End {
                status: EndStatus::Error {
                    message: "x".into(),
                },
                at: None,
            }
            .into(),
            PageHashes {
                pages: vec![(0, 1), (0x7fff, u64::MAX)],
            }
            .into(),
            StateCheck { hash: 0x1234 }.into(),
        ]
    }

    #[test]
    fn every_type_round_trips_by_id() {
        let s = samples();
        assert_eq!(s.len(), RecordType::ALL.len());
        for r in s {
            let id = r.record_type().id();
            let bytes = r.to_payload().unwrap();
            assert_eq!(Record::decode(id, &bytes).unwrap(), r);
            assert_eq!(RecordType::from_id(id).unwrap(), r.record_type());
        }
    }

    #[test]
    fn ids_are_stable() {
        // These numbers are on disk in every log: they must never change.
        let ids: Vec<(u16, &str)> = RecordType::ALL.iter().map(|t| (t.id(), t.name())).collect();
        assert_eq!(
            ids,
            [
                (1, "port-in"),
                (2, "mmio-read"),
                (3, "rdtsc"),
                (4, "rdtscp"),
                (5, "rdrand"),
                (6, "rdseed"),
                (7, "interrupt"),
                (8, "dma-write"),
                (9, "serial-input"),
                (10, "digest"),
                (11, "end"),
                (12, "page-hashes"),
                (13, "state-check")
            ]
        );
        assert_eq!(RecordType::MAX_ID, 13);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            Record::decode(0, &[]),
            Err(RecordError::UnknownType { type_id: 0 })
        );
        assert_eq!(
            Record::decode(999, &[1]),
            Err(RecordError::UnknownType { type_id: 999 })
        );
        assert!(matches!(
            Record::decode(1, &[]),
            Err(RecordError::Malformed { .. })
        ));
        let mut b = Record::from(Rdtsc { value: 1 }).to_payload().unwrap();
        b.push(0);
        assert!(matches!(
            Record::decode(3, &b),
            Err(RecordError::TrailingBytes { .. })
        ));
        // An MMIO payload claiming 17 bytes.
        let mut m = vec![0x10, 17];
        m.extend([0u8; 17]);
        assert!(Record::decode(2, &m).is_err());
        assert!(MmioRead::new(0, &[0; 17]).is_err());
    }

    #[test]
    fn timepoints_of_async_records() {
        let s = samples();
        let with: Vec<&str> = s
            .iter()
            .filter(|r| r.timepoint().is_some())
            .map(|r| r.record_type().name())
            .collect();
        assert_eq!(with, ["interrupt", "dma-write", "digest"]);
    }
}
