//! Typed IPC: interfaces, postcard encoding, in-process and cross-process transports.

/// The interfaces a channel in `system.toml` may carry. Each has its own API
/// crate with its request/response messages.
pub const INTERFACE_NAMES: &[&str] = &["LogAppend", "LogRead", "Pmu", "VmControl", "Supervisor"];
