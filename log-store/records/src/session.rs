//! Session control on the `LogAppend` channel.
//!
//! The channel carries opaque `(record_type, timepoint, payload)` records; the
//! monitor and the log store agree on the types. Record type id
//! [`BEGIN_TYPE_ID`] (0, never a [`crate::RecordType`], never written into a
//! log) opens a recording: it must be the first record a store sees on a
//! session, and names the log, the machine description for its header, and
//! the durability policy. Everything after it is ordinary records.

use serde::{Deserialize, Serialize};

use crate::{MachineInfo, RecordError};

/// The record type id of [`Begin`].
pub const BEGIN_TYPE_ID: u16 = 0;

/// Open a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {
    /// The log's file name inside the store's log directory (a plain name).
    pub log: String,
    /// The machine description for the header.
    pub machine: MachineInfo,
    /// When appended records become durable.
    pub durability: DurabilityRequest,
    /// If the log exists unsealed (the store restarted mid-recording),
    /// recover it and continue; otherwise an existing log is an error.
    pub resume: bool,
}

/// The durability policy a recorder asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DurabilityRequest {
    /// fsync before acknowledging each batch.
    EveryBatch,
    /// fsync at most this many milliseconds after a record arrives.
    IntervalMs(u32),
    /// fsync only on flush and seal.
    AtSeal,
}

impl Begin {
    /// The payload of the `Begin` record.
    pub fn to_payload(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode a `Begin` payload; every byte must be used.
    pub fn from_payload(payload: &[u8]) -> Result<Begin, RecordError> {
        let (b, rest) =
            postcard::take_from_bytes::<Begin>(payload).map_err(|e| RecordError::Malformed {
                kind: "begin",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(RecordError::TrailingBytes {
                kind: "begin",
                extra: rest.len(),
            });
        }
        Ok(b)
    }
}

/// A short, stable name for a CPUID policy (entry count and BLAKE3 of its
/// encoding), for interfaces that carry the policy by name: two policies
/// have the same name exactly when their entries are equal.
pub fn cpuid_policy_id(policy: &vcpu::CpuidPolicy) -> String {
    let bytes = postcard::to_allocvec(policy).unwrap_or_default();
    let hash = blake3::hash(&bytes);
    format!(
        "{} entries, blake3 {}",
        policy.entries.len(),
        crate::hex(&hash.as_bytes()[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_round_trips_and_is_not_a_log_record_type() {
        let b = Begin {
            log: "run1.motionlog".into(),
            machine: MachineInfo {
                backend: "soft".into(),
                guest_name: "timer".into(),
                vcpus: 1,
                memory_bytes: 1 << 26,
                guest_image: [1; 32],
                disk_image: None,
                cpuid: vcpu::CpuidPolicy::baseline(),
                counter_mode: vcpu::CounterMode::Exact,
                untrapped: Vec::new(),
            },
            durability: DurabilityRequest::IntervalMs(10),
            resume: false,
        };
        assert_eq!(Begin::from_payload(&b.to_payload()).unwrap(), b);
        assert!(crate::RecordType::from_id(BEGIN_TYPE_ID).is_err());
        let p = vcpu::CpuidPolicy::baseline();
        assert_eq!(cpuid_policy_id(&p), cpuid_policy_id(&p.clone()));
        let mut q = p.clone();
        q.hide_unrecordable();
        assert_ne!(cpuid_policy_id(&p), cpuid_policy_id(&q));
    }
}
