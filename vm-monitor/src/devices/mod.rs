//! Device models. Each is a plain state machine driven by port accesses and,
//! where time matters, an explicit time argument: none reads a clock, a file
//! descriptor or guest memory on its own. The live environment
//! ([`crate::live`]) wires them to the host.

pub mod pci;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod virtio_blk;
