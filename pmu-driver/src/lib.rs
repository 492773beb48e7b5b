//! Per-vCPU branch counters: programming, overflow with skid margin,
//! timepoints and landing.

pub mod arch;
mod error;
pub mod perf;

pub use error::DriverError;
mod counter;
pub mod model;

pub use counter::{BranchCounter, CounterContext, Overflow};
pub mod landing;
pub mod margin;

pub use landing::{
    LandError, LandOptions, LandStats, LandStep, Phase, abandon, land, timepoint_now,
};
pub use margin::CounterHardware;
