//! Per-vCPU branch counters: programming, overflow with skid margin,
//! timepoints and landing.

pub mod arch;
pub mod doctor;
mod error;
pub mod perf;

pub use error::DriverError;
mod counter;
pub mod model;

pub use counter::{BranchCounter, CounterContext, Overflow};
pub mod landing;
pub mod margin;

pub use doctor::{CounterReport, doctor_report};
pub use landing::{
    LandError, LandOptions, LandStats, LandStep, Phase, abandon, land, timepoint_now,
};
pub use margin::CounterHardware;
