//! Hardware virtualization through Linux KVM behind the [`vcpu::Vcpu`] trait
//! ([`KvmVm`], [`KvmVcpu`]), the ring-3 oracle ([`ring3`]) that runs code
//! natively on the host CPU as a reference for the soft vCPU, and the host
//! probes behind `motion doctor` ([`probe`]).
//!
//! What this backend offers and cannot offer, on real hosts and on the
//! nested KVM of the development machines, is tabulated in README.md beside
//! Cargo.toml (included below).
//!
#![doc = include_str!("../README.md")]

pub mod backend;
pub mod conv;
pub mod cpuid;
pub mod decode;
pub mod kick;
pub mod probe;
pub mod ring3;
pub mod state;
pub mod vm;

pub use backend::{KvmKicker, KvmVcpu, KvmVm};
pub use state::{FastPath, IoctlCounts};
