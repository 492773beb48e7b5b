//! Op handlers, grouped by instruction family.

pub mod alu;
pub mod branch;
pub mod sse;
pub mod string;
pub mod sys;
