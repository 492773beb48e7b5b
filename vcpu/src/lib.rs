//! The virtual CPU interface every CAS Motion backend implements.
//!
//! The vm-monitor is written as a VT-x VMM: it sees **exits** carrying the
//! SDM's basic exit reason numbers and qualification layouts, sets **execution
//! controls** (HLT/RDTSC/RDRAND exiting, I/O and MSR bitmaps, interrupt-window
//! exiting, monitor trap flag, preemption timer) and **injects events**. Writing
//! the monitor against this shape, rather than against one backend, is what
//! lets the same record/replay code drive the deterministic software vCPU
//! (`vcpu-soft`) and hardware virtualization (`vcpu-kvm`).
//!
//! One deliberate departure from raw VT-x: instead of the monitor emulating
//! the exiting instruction itself (decoding `in al, dx`, writing RAX, advancing
//! RIP), it answers each instruction exit with one [`Completion`] and the
//! backend retires the instruction. That keeps instruction semantics in the
//! backend, where the retired-instruction and retired-branch counters live, and
//! it is also how KVM reports I/O and MMIO.
//!
//! The run protocol:
//! 1. [`Vcpu::run`] returns a [`VmExit`].
//! 2. If the exit's reason [`ExitReason::needs_completion`], the monitor calls
//!    [`Vcpu::complete`] exactly once before the next `run` (to retire the
//!    instruction with a value, or to fault it instead).
//! 3. Between runs the monitor may read/write state, change controls and
//!    [`Vcpu::inject`] an event.
//!
//! When an instruction retires: an exit that cannot repeat (CPUID, HLT,
//! RDTSC/RDTSCP, RDMSR/WRMSR, RDRAND/RDSEED, non-string IN/OUT) retires inside
//! `complete()`, as if the monitor had emulated it: RIP, the retired counters
//! and the end of an STI interrupt shadow are visible before the next `run`
//! (so `sti; hlt` followed by completing the HLT leaves the guest
//! interruptible). MMIO accesses and string I/O elements may exit again, so
//! they retire on the next `run`. Setting RIP with [`Vcpu::set_regs`] while
//! such an answer is pending abandons the instruction.

#![forbid(unsafe_code)]

pub mod clocked;
pub mod controls;
pub mod cpuid;
pub mod event;
pub mod exit;
pub mod pmu;
pub mod regs;
pub mod timepoint;

use std::sync::Arc;

pub use clocked::ExitClocked;
pub use controls::{ExecControls, IoBitmap, MsrBitmap};
pub use cpuid::{CpuidEntry, CpuidPolicy};
pub use event::{Event, Exception};
pub use exit::{
    Completion, EptQualification, ExitInfo, ExitReason, IoDirection, IoQualification, VmExit,
};
pub use pmu::{PmuBank, PmuError};
pub use regs::{DescriptorTable, FpuState, Regs, Segment, SpecialRegs};
pub use timepoint::Timepoint;

/// Counts of retired guest work, exact on backends that can count exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RetiredCounts {
    /// Retired instructions (Intel architectural event C0H semantics).
    pub instructions: u64,
    /// Retired branch instructions (Intel architectural event C4H semantics).
    pub branches: u64,
}

/// Why a backend could not do what was asked. The guest never causes one of
/// these by misbehaving: guest faults become guest exceptions or exits.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The backend met guest code it cannot execute for an internal reason
    /// (not an invalid instruction, which is a #UD in the guest).
    #[error("internal error at rip {rip:#x} (bytes {bytes:02x?}): {what}")]
    Internal {
        /// Guest RIP of the instruction.
        rip: u64,
        /// Up to 15 bytes of the instruction, as fetched.
        bytes: Vec<u8>,
        /// What went wrong.
        what: String,
    },
    /// `run` was called while the previous exit still waits for a [`Completion`].
    #[error("the previous {0:?} exit was not completed before run()")]
    ExitNotCompleted(ExitReason),
    /// `complete` was called with a completion that does not fit the pending exit.
    #[error("completion {completion} does not fit the pending exit ({pending:?})")]
    BadCompletion {
        /// The exit waiting for completion, if any.
        pending: Option<ExitReason>,
        /// What was offered.
        completion: &'static str,
    },
    /// The event cannot be injected now (e.g. an external interrupt while
    /// RFLAGS.IF = 0 or in an interrupt shadow; use interrupt-window exiting).
    #[error("cannot inject {event:?}: {why}")]
    CannotInject {
        /// The event.
        event: Event,
        /// Why not.
        why: &'static str,
    },
    /// The backend does not offer this control, register or feature.
    #[error("not supported by the {backend} backend: {what}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The missing feature.
        what: String,
    },
    /// State given to a setter is invalid.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// The host backend failed (e.g. an ioctl).
    #[error("backend failure: {0}")]
    Backend(String),
}

/// Makes a running [`Vcpu::run`] return soon with an
/// [`ExitReason::ExternalInterrupt`] exit carrying [`HOST_KICK_VECTOR`], as a
/// host interrupt does under VT-x. Safe to call from any thread, any number of
/// times; a kick that arrives while the vCPU is not running makes the next
/// `run` return at once.
pub trait Kicker: Send + Sync {
    /// Request the exit.
    fn kick(&self);
}

/// The vector reported in the external-interrupt exit caused by a [`Kicker`].
pub const HOST_KICK_VECTOR: u8 = 0xF0;
/// The vector reported when a host-owned performance counter overflows (PMI).
pub const HOST_PMI_VECTOR: u8 = 0xFE;

/// A virtual CPU. One per guest CPU; `Send` so a monitor can run each on its
/// own host thread.
pub trait Vcpu: Send {
    /// Short backend name ("soft", "kvm"), for reports and log headers.
    fn backend(&self) -> &'static str;

    /// Run guest code until the next exit.
    fn run(&mut self) -> Result<VmExit, VcpuError>;

    /// Answer the pending instruction exit (see the crate docs).
    fn complete(&mut self, completion: Completion) -> Result<(), VcpuError>;

    /// General-purpose registers, RIP and RFLAGS.
    fn regs(&self) -> Result<Regs, VcpuError>;
    /// Set general-purpose registers, RIP and RFLAGS.
    fn set_regs(&mut self, regs: &Regs) -> Result<(), VcpuError>;

    /// Segment, descriptor-table and control registers, EFER.
    fn special_regs(&self) -> Result<SpecialRegs, VcpuError>;
    /// Set segment, descriptor-table and control registers, EFER.
    fn set_special_regs(&mut self, sregs: &SpecialRegs) -> Result<(), VcpuError>;

    /// x87/SSE state.
    fn fpu(&self) -> Result<FpuState, VcpuError>;
    /// Set x87/SSE state.
    fn set_fpu(&mut self, fpu: &FpuState) -> Result<(), VcpuError>;

    /// Read a guest MSR as the guest would see it.
    fn msr(&mut self, index: u32) -> Result<u64, VcpuError>;
    /// Write a guest MSR.
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError>;

    /// The current execution controls.
    fn controls(&self) -> &ExecControls;
    /// Replace the execution controls; backends that cannot honour a control
    /// return [`VcpuError::Unsupported`] naming it.
    fn set_controls(&mut self, controls: ExecControls) -> Result<(), VcpuError>;

    /// Whether an external interrupt could be delivered now
    /// (RFLAGS.IF = 1 and no STI/MOV SS interrupt shadow).
    fn interruptible(&self) -> Result<bool, VcpuError>;

    /// Queue an event for delivery at the next VM entry.
    fn inject(&mut self, event: Event) -> Result<(), VcpuError>;

    /// A handle other threads use to force an exit.
    fn kicker(&self) -> Arc<dyn Kicker>;

    /// Exact retired-instruction and retired-branch counts since reset, where
    /// the backend can count exactly; `None` where it cannot (KVM without a
    /// usable PMU).
    fn retired(&self) -> Option<RetiredCounts>;

    /// The host-owned performance counter bank (the recorder's, invisible to
    /// the guest), where the backend has one.
    fn host_pmu(&mut self) -> Option<&mut dyn PmuBank>;

    /// The controls a recording monitor should start from on this backend:
    /// every source of non-determinism the backend can make exit, exits. A
    /// backend that cannot trap something (stock KVM and RDTSC) leaves it off
    /// here rather than fail `set_controls`.
    fn default_controls(&self) -> ExecControls {
        ExecControls::default()
    }

    /// On a backend without exact counters, the number of deterministic
    /// instruction exits so far: the clock of exit-synchronous mode, in which
    /// asynchronous events are delivered only at such exits. `None` where
    /// [`Vcpu::retired`] is exact and events land at precise timepoints.
    fn deterministic_exits(&self) -> Option<u64> {
        None
    }

    /// The host (a loader, a device's DMA) wrote guest memory directly, not
    /// through the guest: backends that cache translated code drop what
    /// they translated from `gpa..gpa + len`.
    fn host_wrote_memory(&mut self, gpa: u64, len: u64) {
        let _ = (gpa, len);
    }
}

/// How a backend timestamps asynchronous events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CounterMode {
    /// Exact retired-branch counts: events land at any instruction boundary.
    Exact,
    /// No precise counter: events are delivered only at deterministic exits,
    /// timestamped by the exit count.
    ExitSynchronous,
}

impl CounterMode {
    /// The mode a vCPU supports.
    pub fn of(vcpu: &dyn Vcpu) -> Option<CounterMode> {
        if vcpu.retired().is_some() {
            Some(CounterMode::Exact)
        } else if vcpu.deterministic_exits().is_some() {
            Some(CounterMode::ExitSynchronous)
        } else {
            None
        }
    }
}
