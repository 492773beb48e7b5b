//! The machine description stored in a log's header.

use serde::{Deserialize, Serialize};

pub use vcpu::{CounterMode, CpuidEntry, CpuidPolicy};

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
    pub cpuid: CpuidPolicy,
    /// How asynchronous events were timed.
    pub counter_mode: CounterMode,
    /// Instructions the recording backend could not trap (stock KVM: RDTSC,
    /// RDRAND, RDSEED): the guest got their values from the host CPU and
    /// the log does not hold them, so a replay of a guest that executed one
    /// diverges (and says so). Empty on backends that trap everything.
    /// Absent in logs written before the field existed (read as empty).
    pub untrapped: Vec<Untrapped>,
}

/// An instruction whose result a backend cannot intercept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Untrapped {
    /// RDTSC, RDTSCP and RDMSR of IA32_TSC.
    Rdtsc,
    /// RDRAND.
    Rdrand,
    /// RDSEED.
    Rdseed,
    /// CPUID: answered by the host CPU, not from the logged policy (ring-3
    /// code on a KVM that runs it natively without CPUID faulting).
    Cpuid,
}

impl Untrapped {
    /// Its name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Untrapped::Rdtsc => "rdtsc",
            Untrapped::Rdrand => "rdrand",
            Untrapped::Rdseed => "rdseed",
            Untrapped::Cpuid => "cpuid",
        }
    }

    /// What a vCPU with `controls` leaves untrapped.
    pub fn of_controls(controls: &vcpu::ExecControls) -> Vec<Untrapped> {
        let mut v = Vec::new();
        if !controls.rdtsc_exiting {
            v.push(Untrapped::Rdtsc);
        }
        if !controls.rdrand_exiting {
            v.push(Untrapped::Rdrand);
        }
        if !controls.rdseed_exiting {
            v.push(Untrapped::Rdseed);
        }
        v
    }
}

/// The machine description as written before `untrapped` existed.
#[derive(Deserialize)]
struct MachineInfoV1 {
    backend: String,
    guest_name: String,
    vcpus: u32,
    memory_bytes: u64,
    guest_image: Hash32,
    disk_image: Option<Hash32>,
    cpuid: CpuidPolicy,
    counter_mode: CounterMode,
}

impl From<MachineInfoV1> for MachineInfo {
    fn from(m: MachineInfoV1) -> Self {
        MachineInfo {
            backend: m.backend,
            guest_name: m.guest_name,
            vcpus: m.vcpus,
            memory_bytes: m.memory_bytes,
            guest_image: m.guest_image,
            disk_image: m.disk_image,
            cpuid: m.cpuid,
            counter_mode: m.counter_mode,
            untrapped: Vec::new(),
        }
    }
}

/// The name of a counter mode in the CLI and JSON (`exact`, `exit-synchronous`).
pub fn counter_mode_name(mode: CounterMode) -> &'static str {
    match mode {
        CounterMode::Exact => "exact",
        CounterMode::ExitSynchronous => "exit-synchronous",
    }
}

/// Parse [`counter_mode_name`]'s names.
pub fn parse_counter_mode(name: &str) -> Option<CounterMode> {
    match name {
        "exact" => Some(CounterMode::Exact),
        "exit-synchronous" => Some(CounterMode::ExitSynchronous),
        _ => None,
    }
}

impl MachineInfo {
    /// Encode for the log header.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain types into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode a log header's machine description; every byte must be used.
    /// Descriptions written before `untrapped` existed (they end after the
    /// counter mode) are accepted with an empty list.
    pub fn from_bytes(bytes: &[u8]) -> Result<MachineInfo, crate::RecordError> {
        // Unambiguous: the current form has at least one more byte (the
        // list's length).
        if let Ok((v1, [])) = postcard::take_from_bytes::<MachineInfoV1>(bytes) {
            return Ok(v1.into());
        }
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
            cpuid: CpuidPolicy::baseline(),
            counter_mode: CounterMode::ExitSynchronous,
            untrapped: vec![Untrapped::Rdtsc, Untrapped::Rdrand],
        };
        let mut b = m.to_bytes();
        assert_eq!(MachineInfo::from_bytes(&b).unwrap(), m);
        b.push(0);
        assert!(MachineInfo::from_bytes(&b).is_err());
        // A description from before `untrapped`: the same bytes without
        // the list.
        let old = MachineInfo {
            untrapped: Vec::new(),
            ..m.clone()
        };
        let mut b = old.to_bytes();
        assert_eq!(b.pop(), Some(0), "an empty list is one zero byte");
        assert_eq!(MachineInfo::from_bytes(&b).unwrap(), old);
        assert!(MachineInfo::from_bytes(&b[..b.len() - 1]).is_err());
        assert_eq!(
            parse_counter_mode(counter_mode_name(CounterMode::ExitSynchronous)),
            Some(CounterMode::ExitSynchronous)
        );
    }
}
