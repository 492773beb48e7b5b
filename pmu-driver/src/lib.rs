//! Per-vCPU branch counters: programming, overflow with skid margin,
//! timepoints and landing.

pub mod perf;
