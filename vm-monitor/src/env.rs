//! The interposition boundary: every input the guest can observe that it did
//! not compute itself crosses [`Environment`], and nothing else reaches it.
//!
//! The exit dispatcher ([`crate::machine`]) asks the environment for each
//! synchronous input (port and MMIO reads, the time-stamp counter, random
//! numbers), tells it each guest output (port and MMIO writes), and between
//! runs asks it for asynchronous inputs (DMA writes into guest memory and
//! external interrupts). Live runs use [`crate::live::LiveEnvironment`]
//! (devices, host clock, host randomness); a recorder wraps it and logs what
//! each call returned ([`Tap`] shows the shape); a replayer answers the same
//! calls from a log without any devices. The machine itself only adds
//! deterministic things: the CPUID policy, the isa-debug-exit port and the
//! memory layout.
//!
//! This is the trusted record path: keep it small.

use std::time::Instant;

use vcpu::{Timepoint, Vcpu, VcpuError, VmExit};

/// Why the environment could not answer.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A replay log has no more records.
    #[error("no more recorded inputs")]
    Exhausted,
    /// The guest asked for something other than what was recorded.
    #[error("divergence: {0}")]
    Diverged(String),
    /// A host-side failure (I/O, a lost thread).
    #[error("host failure: {0}")]
    Host(String),
    /// The vCPU failed while the environment ran it ([`Environment::run_vcpu`]).
    #[error("vCPU: {0}")]
    Vcpu(VcpuError),
    /// The environment ended the run on purpose: a recording stopped by the
    /// host, or a replay that reached the recording's stop point.
    #[error("stopped by the environment")]
    Stopped,
}

// Manual: the message already includes the cause (see `MachineError`).
impl From<VcpuError> for EnvError {
    fn from(e: VcpuError) -> Self {
        EnvError::Vcpu(e)
    }
}

/// Which instruction read the time-stamp counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscRead {
    /// RDTSC.
    Rdtsc,
    /// RDTSCP (the machine answers IA32_TSC_AUX = 0 itself).
    Rdtscp,
    /// RDMSR of IA32_TSC.
    Rdmsr,
}

/// RDRAND or RDSEED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomKind {
    /// RDRAND.
    Rdrand,
    /// RDSEED.
    Rdseed,
}

/// An asynchronous input: delivered between instructions, at a point of the
/// environment's choosing (recorded with a [`Timepoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsyncInput {
    /// A device writes guest memory.
    DmaWrite {
        /// Guest-physical address.
        gpa: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Deliver an external interrupt with this vector (only offered when the
    /// guest is interruptible).
    Interrupt(u8),
}

/// Where the guest is when asynchronous inputs are offered.
pub struct AsyncPoint<'a> {
    /// Whether an external interrupt can be delivered now.
    pub interruptible: bool,
    vcpu: &'a dyn Vcpu,
    index: u32,
}

impl<'a> AsyncPoint<'a> {
    /// The point for vCPU `index`.
    pub fn new(vcpu: &'a dyn Vcpu, index: u32, interruptible: bool) -> Self {
        AsyncPoint {
            interruptible,
            vcpu,
            index,
        }
    }

    /// On backends without exact counters (KVM here), how many
    /// deterministic instruction exits preceded this point: the clock of
    /// exit-synchronous recording (`vcpu::Vcpu::deterministic_exits`).
    pub fn deterministic_exits(&self) -> Option<u64> {
        self.vcpu.deterministic_exits()
    }

    /// The vCPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The vCPU (read-only: recorders and replayers look at its state).
    pub fn vcpu(&self) -> &dyn Vcpu {
        self.vcpu
    }

    /// The point in either counter mode: the exact timepoint, or on a
    /// backend without exact counters `(vcpu, deterministic exits, rip,
    /// rcx)`; `None` only if the registers cannot be read.
    pub fn point(&self) -> Option<Timepoint> {
        crate::digest::point(self.vcpu, self.index).ok()
    }

    /// The exact timepoint, where the backend counts branches exactly.
    /// Computed on demand (reading registers costs a round trip on KVM).
    pub fn timepoint(&self) -> Option<Timepoint> {
        let counts = self.vcpu.retired()?;
        let regs = self.vcpu.regs().ok()?;
        Some(Timepoint {
            vcpu: self.index,
            branches: counts.branches,
            rip: regs.rip,
            rcx: regs.rcx,
        })
    }
}

/// What happened while the guest was idle (halted, interruptible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Something may be ready (or the wait limit passed): poll again.
    Woke,
    /// Nothing can ever wake the guest: no timer armed, no input left.
    Never,
}

/// The guest's view of the world outside its CPU and memory.
pub trait Environment: Send {
    /// IN from `port`, `size` bytes (1, 2 or 4).
    fn port_in(&mut self, port: u16, size: u8) -> Result<u32, EnvError>;
    /// OUT of `value` (low `size` bytes) to `port`.
    fn port_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), EnvError>;
    /// A load of `size` bytes (1..=16) from non-RAM guest-physical `gpa`;
    /// the first `size` bytes of the answer are used.
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<[u8; 16], EnvError>;
    /// A store to non-RAM guest-physical `gpa`.
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> Result<(), EnvError>;
    /// The time-stamp counter (RDTSC, RDTSCP, RDMSR of IA32_TSC).
    fn tsc(&mut self) -> Result<u64, EnvError>;
    /// The time-stamp counter for a given instruction: what the machine
    /// calls. Recorders override it to tell RDTSCP (its own record type)
    /// from RDTSC; the default is [`Environment::tsc`].
    fn tsc_for(&mut self, read: TscRead) -> Result<u64, EnvError> {
        let _ = read;
        self.tsc()
    }
    /// RDRAND/RDSEED of `size` bytes: a value, or `None` for CF = 0.
    fn random(&mut self, kind: RandomKind, size: u8) -> Result<Option<u64>, EnvError>;
    /// The next asynchronous input to deliver now, if any. The machine calls
    /// this until it returns `None` or an interrupt (one injection per entry).
    fn next_async(&mut self, at: &AsyncPoint<'_>) -> Result<Option<AsyncInput>, EnvError>;
    /// Whether an interrupt waits for the guest to become interruptible
    /// (the machine then asks for an interrupt-window exit).
    fn interrupt_waiting(&mut self) -> Result<bool, EnvError>;
    /// The guest is halted with interrupts enabled: wait until something may
    /// have happened, but not past `limit`.
    fn idle(&mut self, limit: Option<Instant>) -> Result<Idle, EnvError>;
    /// When the running guest must next be interrupted so that timed inputs
    /// are delivered (the machine kicks the vCPU then).
    fn next_deadline(&mut self) -> Option<Instant>;
    /// A handle that makes a running vCPU exit; environments whose inputs
    /// arrive on other threads keep it to kick the vCPU.
    fn set_kicker(&mut self, _kicker: std::sync::Arc<dyn vcpu::Kicker>) {}
    /// Called right before each entry: a replayer arms the host counter or
    /// the monitor trap flag here to stop the vCPU at the next recorded
    /// timepoint (the resulting PMI/MTF exits bring the machine back to
    /// `next_async`). Live environments do nothing.
    fn prepare_entry(&mut self, _vcpu: &mut dyn Vcpu) -> Result<(), EnvError> {
        Ok(())
    }
    /// Run the vCPU to its next exit (right after [`Environment::prepare_entry`]).
    /// A replayer overrides it to land on the next recorded timepoint with
    /// the PMU driver's landing algorithm, handing back the exits met on
    /// the way and returning `None` once the vCPU stands exactly there; the
    /// machine then offers asynchronous inputs at that point.
    fn run_vcpu(&mut self, vcpu: &mut dyn Vcpu) -> Result<Option<VmExit>, EnvError> {
        Ok(Some(vcpu.run()?))
    }
    /// An instruction exit has just been answered: a deterministic point,
    /// where recorders write state checks and digests and replayers compare
    /// them. `retired`: the instruction's results are visible (false while
    /// an MMIO access or a string I/O element waits for the next run to
    /// retire).
    fn exit_completed(&mut self, _vcpu: &mut dyn Vcpu, _retired: bool) -> Result<(), EnvError> {
        Ok(())
    }
}

/// One input as observed at the boundary, for recorders and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A port read and its value.
    PortIn {
        /// Port.
        port: u16,
        /// Size.
        size: u8,
        /// Value.
        value: u32,
    },
    /// An MMIO read and its bytes.
    MmioRead {
        /// Address.
        gpa: u64,
        /// Size.
        size: u8,
        /// Bytes.
        value: [u8; 16],
    },
    /// A time-stamp counter value.
    Tsc(u64),
    /// A random value (`None`: CF = 0).
    Random(RandomKind, Option<u64>),
    /// An asynchronous input and where it was delivered.
    Async(AsyncInput, Option<Timepoint>),
}

/// Wraps an environment and shows every input it returns to `observe`: the
/// shape of a recorder. Outputs and idle waits pass through unobserved.
pub struct Tap<E, F> {
    /// The wrapped environment.
    pub inner: E,
    observe: F,
}

impl<E: Environment, F: FnMut(&Input) + Send> Tap<E, F> {
    /// Observe `inner`'s inputs with `observe`.
    pub fn new(inner: E, observe: F) -> Self {
        Tap { inner, observe }
    }
}

impl<E: Environment, F: FnMut(&Input) + Send> Environment for Tap<E, F> {
    fn port_in(&mut self, port: u16, size: u8) -> Result<u32, EnvError> {
        let value = self.inner.port_in(port, size)?;
        (self.observe)(&Input::PortIn { port, size, value });
        Ok(value)
    }
    fn port_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), EnvError> {
        self.inner.port_out(port, size, value)
    }
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<[u8; 16], EnvError> {
        let value = self.inner.mmio_read(gpa, size)?;
        (self.observe)(&Input::MmioRead { gpa, size, value });
        Ok(value)
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> Result<(), EnvError> {
        self.inner.mmio_write(gpa, data)
    }
    fn tsc(&mut self) -> Result<u64, EnvError> {
        let v = self.inner.tsc()?;
        (self.observe)(&Input::Tsc(v));
        Ok(v)
    }
    fn tsc_for(&mut self, read: TscRead) -> Result<u64, EnvError> {
        let v = self.inner.tsc_for(read)?;
        (self.observe)(&Input::Tsc(v));
        Ok(v)
    }
    fn random(&mut self, kind: RandomKind, size: u8) -> Result<Option<u64>, EnvError> {
        let v = self.inner.random(kind, size)?;
        (self.observe)(&Input::Random(kind, v));
        Ok(v)
    }
    fn next_async(&mut self, at: &AsyncPoint<'_>) -> Result<Option<AsyncInput>, EnvError> {
        let v = self.inner.next_async(at)?;
        if let Some(a) = &v {
            (self.observe)(&Input::Async(a.clone(), at.timepoint()));
        }
        Ok(v)
    }
    fn interrupt_waiting(&mut self) -> Result<bool, EnvError> {
        self.inner.interrupt_waiting()
    }
    fn idle(&mut self, limit: Option<Instant>) -> Result<Idle, EnvError> {
        self.inner.idle(limit)
    }
    fn next_deadline(&mut self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn set_kicker(&mut self, kicker: std::sync::Arc<dyn vcpu::Kicker>) {
        self.inner.set_kicker(kicker)
    }
    fn prepare_entry(&mut self, vcpu: &mut dyn Vcpu) -> Result<(), EnvError> {
        self.inner.prepare_entry(vcpu)
    }
    fn run_vcpu(&mut self, vcpu: &mut dyn Vcpu) -> Result<Option<VmExit>, EnvError> {
        self.inner.run_vcpu(vcpu)
    }
    fn exit_completed(&mut self, vcpu: &mut dyn Vcpu, retired: bool) -> Result<(), EnvError> {
        self.inner.exit_completed(vcpu, retired)
    }
}
