//! The machine description stored in a log's header.

use serde::{Deserialize, Serialize};

use crate::Hash32;

/// What machine was recorded. Replay checks it before running anything: a
/// log made from another guest image, disk image, memory size or CPUID policy
/// cannot replay and is refused up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// The vCPU backend that recorded (`soft`, `kvm`).
    pub backend: String,
    /// The guest's name or path, for people reading `motion log inspect`.
    pub guest_name: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory size in bytes.
    pub memory_bytes: u64,
    /// BLAKE3 of the guest image as loaded.
    pub guest_image: Hash32,
    /// BLAKE3 of the disk image at the start of recording, if the machine had one.
    pub disk_image: Option<Hash32>,
    /// The CPUID values the guest was shown.
    pub cpuid: Vec<CpuidEntry>,
    /// How asynchronous events were timed.
    pub counter_mode: CounterMode,
}

/// One CPUID answer: (leaf, subleaf) → (eax, ebx, ecx, edx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CpuidEntry {
    pub leaf: u32,
    pub subleaf: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// How the recorder placed asynchronous events in the instruction stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterMode {
    /// A precise retired-branch counter: events land at arbitrary instruction
    /// boundaries, named by their timepoint.
    Exact,
    /// No precise counter: events were delivered only at deterministic exits,
    /// so their timepoints are exit points.
    ExitSynchronous,
}

impl CounterMode {
    /// The name used in the CLI and JSON (`exact`, `exit-synchronous`).
    pub fn as_str(self) -> &'static str {
        match self {
            CounterMode::Exact => "exact",
            CounterMode::ExitSynchronous => "exit-synchronous",
        }
    }

    /// Parse [`CounterMode::as_str`]'s names.
    pub fn parse(name: &str) -> Option<CounterMode> {
        match name {
            "exact" => Some(CounterMode::Exact),
            "exit-synchronous" => Some(CounterMode::ExitSynchronous),
            _ => None,
        }
    }
}

impl std::fmt::Display for CounterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MachineInfo {
    /// Encode for the log header.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode a log header's machine description; every byte must be used.
    pub fn from_bytes(bytes: &[u8]) -> Result<MachineInfo, crate::RecordError> {
        let (info, rest) = postcard::take_from_bytes::<MachineInfo>(bytes).map_err(|e| {
            crate::RecordError::Malformed {
                kind: "machine description",
                reason: e.to_string(),
            }
        })?;
        if !rest.is_empty() {
            return Err(crate::RecordError::TrailingBytes {
                kind: "machine description",
                extra: rest.len(),
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_info_round_trips_and_rejects_trailing_bytes() {
        let m = MachineInfo {
            backend: "soft".into(),
            guest_name: "timer".into(),
            vcpus: 2,
            memory_bytes: 64 << 20,
            guest_image: [7; 32],
            disk_image: None,
            cpuid: vec![CpuidEntry {
                leaf: 1,
                subleaf: 0,
                eax: 1,
                ebx: 2,
                ecx: 3,
                edx: 4,
            }],
            counter_mode: CounterMode::ExitSynchronous,
        };
        let mut b = m.to_bytes();
        assert_eq!(MachineInfo::from_bytes(&b).unwrap(), m);
        b.push(0);
        assert!(MachineInfo::from_bytes(&b).is_err());
        assert_eq!(
            CounterMode::parse("exit-synchronous"),
            Some(CounterMode::ExitSynchronous)
        );
    }
}
