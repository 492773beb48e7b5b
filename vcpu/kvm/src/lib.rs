//! Hardware virtualization through Linux KVM behind the [`vcpu::Vcpu`] trait,
//! and the ring-3 oracle ([`ring3`]) that runs code natively on the host CPU
//! as a reference for the soft vCPU.

pub mod conv;
pub mod kick;
pub mod ring3;
pub mod vm;
