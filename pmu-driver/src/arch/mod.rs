//! The counter hardware: Intel's architectural performance monitoring (what
//! [`vcpu::PmuBank`] models and the driver programs) and the AMD equivalents.

pub mod amd;
mod caps;
mod intel;

pub use caps::PmuCaps;
pub use intel::{ArchEvent, CounterConfig, IA32_A_PMC0, IntelPmu, Rings};
