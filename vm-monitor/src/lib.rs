//! The CAS Motion virtual machine monitor: machine model, devices, exit
//! dispatch, and the interposition boundary that record/replay uses. This is
//! the trusted record path.
//!
//! Building and running a machine:
//!
//! ```ignore
//! let mut machine = Machine::new(elf_bytes, &MachineConfig::default())?;
//! let mut vcpu = /* a backend built over machine.memory().clone() */;
//! machine.reset_vcpu(&mut vcpu, ExecControls::default())?;
//! let mut env = LiveEnvironment::new(machine.memory().clone(), LiveConfig {
//!     serial_out: Box::new(std::io::stdout()), input: None, disk: None });
//! let outcome = machine.run(&mut vcpu, &mut env, &RunLimits::default())?;
//! ```
//!
//! * [`machine`]: guest RAM, the PVH loader's entry state, the exit loop.
//! * [`env`](mod@env): [`env::Environment`], the one interface every
//!   non-deterministic input crosses (what a recorder wraps, what a replayer
//!   implements).
//! * [`live`]: the live environment (devices on the host clock).
//! * [`devices`]: i8259 PIC pair, i8254 PIT, CMOS RTC, 16550 UART
//!   (vm-superio), PCI host, legacy virtio-blk.
//! * [`loader`]: the PVH ELF loader and `hvm_start_info`.
//! * [`fuzzing`]: entry points the fuzz targets and seeded tests share.

pub mod component;
pub mod devices;
pub mod digest;
pub mod env;
pub mod fuzzing;
pub mod live;
pub mod loader;
pub mod machine;
pub mod record;
pub mod replay;

pub use env::{
    AsyncInput, AsyncPoint, EnvError, Environment, Idle, Input, RandomKind, Tap, TscRead,
};
pub use live::{InputFeed, LiveConfig, LiveEnvironment};
pub use machine::{Machine, MachineConfig, MachineError, RunLimits, RunOutcome, StopReason};
