//! Helpers shared by the end-to-end tests.

pub mod harness;
pub mod motion_bin;
