//! The machine: guest memory with a PVH kernel loaded, the boot state of the
//! vCPU, and the exit dispatch loop on `dyn Vcpu` that routes every exit to
//! the [`Environment`] (or to the machine's deterministic parts: CPUID policy,
//! isa-debug-exit) and decides every interrupt injection.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vcpu::{
    Completion, Event, Exception, ExecControls, ExitInfo, ExitReason, IoDirection, Regs, Segment,
    SpecialRegs, Vcpu, VcpuError,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::env::{AsyncInput, AsyncPoint, EnvError, Environment, Idle, RandomKind, TscRead};
use crate::loader::{self, LoadError, START_INFO_ADDR};

/// The isa-debug-exit port (as QEMU's `-device isa-debug-exit,iobase=0xf4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Default guest RAM: 128 MiB, as QEMU's default.
pub const DEFAULT_RAM: u64 = 128 << 20;
/// IA32_TSC.
const MSR_TSC: u32 = 0x10;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Why a machine could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The kernel image was refused.
    #[error("cannot boot the kernel: {0}")]
    Load(LoadError),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The vCPU backend failed.
    #[error("vCPU: {0}")]
    Vcpu(VcpuError),
    /// The environment failed.
    #[error("environment: {0}")]
    Env(EnvError),
}

// Manual `From`s: the messages above already include the cause, so the
// causes are not also reported as `source()` (which would print them twice
// in an error chain).
impl From<LoadError> for MachineError {
    fn from(e: LoadError) -> Self {
        MachineError::Load(e)
    }
}
impl From<VcpuError> for MachineError {
    fn from(e: VcpuError) -> Self {
        MachineError::Vcpu(e)
    }
}
impl From<EnvError> for MachineError {
    fn from(e: EnvError) -> Self {
        MachineError::Env(e)
    }
}

/// How a run ended. Every guest behaviour ends in one of these, never in a
/// monitor panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote `status` to isa-debug-exit.
    Exit(u32),
    /// The guest triple-faulted (the vCPU shuts down).
    TripleFault {
        /// RIP reported with the exit.
        rip: u64,
    },
    /// The guest executed HLT with interrupts disabled: it can never resume.
    HaltedWithInterruptsDisabled {
        /// RIP after the HLT.
        rip: u64,
    },
    /// The guest halted waiting for an interrupt that nothing will raise.
    NothingToWake {
        /// RIP after the HLT.
        rip: u64,
    },
    /// The guest tried to execute from an address that is not RAM. The
    /// vCPU is left at the faulting fetch, its exit not completed.
    FetchFromNonRam {
        /// Guest-physical address.
        gpa: u64,
        /// RIP.
        rip: u64,
    },
    /// The run's wall-clock limit passed.
    TimeLimit(Duration),
    /// The run's exit budget was used up.
    ExitLimit(u64),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Exit(s) => write!(f, "guest exited with status {s} (isa-debug-exit)"),
            StopReason::TripleFault { rip } => write!(f, "triple fault at rip {rip:#x}"),
            StopReason::HaltedWithInterruptsDisabled { rip } => {
                write!(f, "guest halted with interrupts disabled at rip {rip:#x}")
            }
            StopReason::NothingToWake { rip } => write!(
                f,
                "guest halted at rip {rip:#x} waiting for an interrupt nothing will raise (no timer armed, no input left)"
            ),
            StopReason::FetchFromNonRam { gpa, rip } => write!(
                f,
                "bad access: instruction fetch from non-RAM address {gpa:#x} (rip {rip:#x})"
            ),
            StopReason::TimeLimit(d) => write!(f, "time limit of {d:?} reached"),
            StopReason::ExitLimit(n) => write!(f, "exit limit of {n} reached"),
        }
    }
}

/// Limits and delivery policy of a run.
#[derive(Debug, Clone, Default)]
pub struct RunLimits {
    /// Stop after this much wall-clock time.
    pub wall: Option<Duration>,
    /// Stop after this many VM exits.
    pub exits: Option<u64>,
    /// Deliver asynchronous inputs only right after instruction exits that
    /// advance the vCPU's exit clock (`vcpu::ExitClocked`: port I/O, MMIO,
    /// HLT) and before the first entry: the exit-synchronous mode a recorder
    /// uses on backends without exact counters
    /// (`vcpu::CounterMode::ExitSynchronous`), where a kick or window exit
    /// is not a reproducible point. Live runs
    /// leave it off so a guest spinning without exits still gets its ticks.
    pub exit_synchronous: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Why it stopped.
    pub stop: StopReason,
    /// VM exits handled.
    pub exits: u64,
    /// Interrupts injected.
    pub interrupts: u64,
    /// Retired instructions and branches, where the backend counts them.
    pub retired: Option<vcpu::RetiredCounts>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl RunOutcome {
    /// The process exit status a command should end with: the guest's
    /// isa-debug-exit value (low 8 bits), or 255 for any other stop.
    pub fn exit_status(&self) -> u8 {
        match self.stop {
            StopReason::Exit(s) => s as u8,
            _ => 255,
        }
    }
}

/// Machine configuration.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Guest RAM in bytes (at least 2 MiB, at most 3 GiB: RAM is one range below 4 GiB).
    pub ram: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// The CPU model CPUID exits are answered from (backends that answer
    /// CPUID themselves, like KVM, are given the same table).
    pub cpuid: vcpu::CpuidPolicy,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram: DEFAULT_RAM,
            cmdline: String::new(),
            cpuid: vcpu::CpuidPolicy::baseline(),
        }
    }
}

/// A PVH machine with one vCPU.
pub struct Machine {
    mem: GuestMemoryMmap,
    ram: u64,
    entry: u32,
    cpuid: vcpu::CpuidPolicy,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("ram", &self.ram)
            .field("entry", &self.entry)
            .finish()
    }
}

impl Machine {
    /// Create guest RAM, load the PVH kernel `elf` and write the boot information.
    pub fn new(elf: &[u8], cfg: &MachineConfig) -> Result<Self, MachineError> {
        if !(2 << 20..=3 << 30).contains(&cfg.ram) {
            return Err(MachineError::Memory(format!(
                "RAM size {} bytes is outside 2 MiB..=3 GiB",
                cfg.ram
            )));
        }
        let img = loader::parse(elf)?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), cfg.ram as usize)])
            .map_err(|e| MachineError::Memory(e.to_string()))?;
        advise_huge_pages(&mem);
        loader::load(&mem, cfg.ram, elf, &img)?;
        loader::write_start_info(&mem, cfg.ram, &cfg.cmdline)?;
        Ok(Machine {
            mem,
            ram: cfg.ram,
            entry: img.entry,
            cpuid: cfg.cpuid.clone(),
        })
    }

    /// Guest memory (backends map or share it; clones share the same RAM).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Guest RAM size.
    pub fn ram_size(&self) -> u64 {
        self.ram
    }

    /// The CPUID policy.
    pub fn cpuid(&self) -> &vcpu::CpuidPolicy {
        &self.cpuid
    }

    /// The PVH entry point.
    pub fn entry(&self) -> u32 {
        self.entry
    }

    /// The PVH entry state: 32-bit protected mode, flat segments, paging
    /// off, EBX = `hvm_start_info`.
    pub fn boot_state(&self) -> (Regs, SpecialRegs) {
        let regs = Regs {
            rip: self.entry as u64,
            rbx: START_INFO_ADDR,
            rflags: 0x2,
            ..Default::default()
        };
        let flat = |type_: u8, selector: u16| Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: true,
            dpl: 0,
            db: true,
            s: true,
            l: false,
            g: true,
            avl: false,
            unusable: false,
        };
        let sregs = SpecialRegs {
            cs: flat(0xb, 0x10),
            ds: flat(0x3, 0x18),
            es: flat(0x3, 0x18),
            fs: flat(0x3, 0x18),
            gs: flat(0x3, 0x18),
            ss: flat(0x3, 0x18),
            tr: Segment {
                limit: 0x67,
                type_: 0xb,
                present: true,
                ..Default::default()
            },
            ldt: Segment {
                type_: 0x2,
                unusable: true,
                ..Default::default()
            },
            cr0: 0x11, // PE | ET
            ..Default::default()
        };
        (regs, sregs)
    }

    /// Put `vcpu` in the PVH entry state with execution `controls`: the
    /// recording set ([`ExecControls::default`]) where the backend offers it,
    /// or the backend's best (KVM cannot trap RDTSC). Port I/O and HLT must
    /// exit: the devices live here.
    pub fn reset_vcpu(
        &self,
        vcpu: &mut dyn Vcpu,
        controls: ExecControls,
    ) -> Result<(), MachineError> {
        let (regs, sregs) = self.boot_state();
        // The loader wrote RAM behind the vCPU's back.
        vcpu.host_wrote_memory(0, self.ram);
        vcpu.set_special_regs(&sregs)?;
        vcpu.set_regs(&regs)?;
        vcpu.set_fpu(&vcpu::FpuState::default())?;
        vcpu.set_controls(controls)?;
        Ok(())
    }

    /// Run `vcpu` (already reset) until the guest stops or a limit passes.
    pub fn run(
        &self,
        vcpu: &mut dyn Vcpu,
        env: &mut dyn Environment,
        limits: &RunLimits,
    ) -> Result<RunOutcome, MachineError> {
        let start = Instant::now();
        let wall_end = limits.wall.map(|d| start + d);
        let kicker = vcpu.kicker();
        env.set_kicker(kicker.clone());
        let timer = DeadlineTimer::start(kicker);
        let mut st = RunState {
            exits: 0,
            interrupts: 0,
            window: vcpu.controls().interrupt_window_exiting,
            at_deterministic_point: true,
            mid_instruction: false,
        };
        let stop = loop {
            if let Some(stop) = self.step(vcpu, env, &mut st, &timer, wall_end, limits)? {
                break stop;
            }
        };
        Ok(RunOutcome {
            stop,
            exits: st.exits,
            interrupts: st.interrupts,
            retired: vcpu.retired(),
            elapsed: start.elapsed(),
        })
    }

    /// Deliver asynchronous inputs: DMA writes, then at most one interrupt.
    /// Returns whether an interrupt was injected.
    fn deliver_async(
        &self,
        vcpu: &mut dyn Vcpu,
        env: &mut dyn Environment,
        st: &mut RunState,
    ) -> Result<bool, MachineError> {
        let interruptible = vcpu.interruptible()?;
        loop {
            let input = env.next_async(&AsyncPoint::new(&*vcpu, 0, interruptible))?;
            match input {
                None => return Ok(false),
                Some(AsyncInput::DmaWrite { gpa, data }) => {
                    // A device writing outside RAM: the bytes go nowhere (as
                    // on a bus with no target), the run continues.
                    match self.mem.write_slice(&data, GuestAddress(gpa)) {
                        Ok(()) => vcpu.host_wrote_memory(gpa, data.len() as u64),
                        Err(e) => tracing::warn!(
                            "DMA write of {} bytes at {gpa:#x} dropped: {e}",
                            data.len()
                        ),
                    }
                }
                Some(AsyncInput::Interrupt(vector)) => {
                    vcpu.inject(Event::ExternalInterrupt(vector))?;
                    st.interrupts += 1;
                    return Ok(true);
                }
            }
        }
    }

    fn set_window(vcpu: &mut dyn Vcpu, st: &mut RunState, on: bool) -> Result<(), MachineError> {
        if st.window != on {
            let mut c = vcpu.controls().clone();
            c.interrupt_window_exiting = on;
            vcpu.set_controls(c)?;
            st.window = on;
        }
        Ok(())
    }

    fn step(
        &self,
        vcpu: &mut dyn Vcpu,
        env: &mut dyn Environment,
        st: &mut RunState,
        timer: &DeadlineTimer,
        wall_end: Option<Instant>,
        limits: &RunLimits,
    ) -> Result<Option<StopReason>, MachineError> {
        if let (Some(end), Some(d)) = (wall_end, limits.wall) {
            if Instant::now() >= end {
                return Ok(Some(StopReason::TimeLimit(d)));
            }
        }
        if let Some(max) = limits.exits {
            if st.exits >= max {
                return Ok(Some(StopReason::ExitLimit(max)));
            }
        }
        // Not while an MMIO access or string I/O element waits to retire:
        // that point has the same timepoint as the instruction's start, so
        // a replay could not tell the two apart.
        let may_deliver =
            (st.at_deterministic_point || !limits.exit_synchronous) && !st.mid_instruction;
        let injected = may_deliver && self.deliver_async(vcpu, env, st)?;
        let waiting = may_deliver && !injected && env.interrupt_waiting()?;
        Self::set_window(vcpu, st, waiting)?;
        let deadline = match (env.next_deadline(), wall_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        timer.set(deadline);
        env.prepare_entry(vcpu)?;

        let clock = vcpu.deterministic_exits();
        let Some(exit) = env.run_vcpu(vcpu)? else {
            // A replayer landed on a recorded timepoint: offer its inputs.
            st.at_deterministic_point = false;
            st.mid_instruction = false;
            return Ok(None);
        };
        st.exits += 1;
        // On a backend with an exit clock, only the exits that advance it are
        // points another run (on another backend, too) can find again.
        st.at_deterministic_point = exit.reason.needs_completion()
            && (clock.is_none() || vcpu.deterministic_exits() != clock);
        st.mid_instruction = false;
        let completion = match (&exit.reason, &exit.info) {
            (ExitReason::IoInstruction, ExitInfo::Io { qual, out_value }) => {
                let size = qual.size;
                match qual.direction {
                    IoDirection::In => {
                        let v = if qual.port == DEBUG_EXIT_PORT {
                            0
                        } else {
                            env.port_in(qual.port, size)?
                        };
                        Completion::IoIn(v)
                    }
                    IoDirection::Out => {
                        let v = out_value.unwrap_or(0);
                        if qual.port == DEBUG_EXIT_PORT {
                            vcpu.complete(Completion::Retire)?;
                            env.exit_completed(vcpu, true)?;
                            let mask = if size >= 4 {
                                u32::MAX
                            } else {
                                (1 << (8 * size)) - 1
                            };
                            return Ok(Some(StopReason::Exit(v & mask)));
                        }
                        env.port_out(qual.port, size, v)?;
                        Completion::Retire
                    }
                }
            }
            (
                ExitReason::EptViolation,
                ExitInfo::Mmio {
                    gpa,
                    size,
                    write_data,
                    fetch,
                    ..
                },
            ) => {
                if *fetch {
                    return Ok(Some(StopReason::FetchFromNonRam {
                        gpa: *gpa,
                        rip: exit.rip,
                    }));
                }
                let size = (*size).clamp(1, 16);
                match write_data {
                    Some(d) => {
                        env.mmio_write(*gpa, &d[..size as usize])?;
                        Completion::Retire
                    }
                    None => Completion::MmioRead(env.mmio_read(*gpa, size)?),
                }
            }
            (ExitReason::Cpuid, ExitInfo::Cpuid { leaf, subleaf }) => {
                let [eax, ebx, ecx, edx] = self.cpuid.lookup(*leaf, *subleaf);
                Completion::Cpuid { eax, ebx, ecx, edx }
            }
            (ExitReason::Rdtsc, _) => Completion::Rdtsc(env.tsc_for(TscRead::Rdtsc)?),
            (ExitReason::Rdtscp, _) => Completion::Rdtscp {
                tsc: env.tsc_for(TscRead::Rdtscp)?,
                aux: 0,
            },
            (ExitReason::Rdrand | ExitReason::Rdseed, info) => {
                let size = match info {
                    ExitInfo::Random { size } => *size,
                    _ => 8,
                };
                let kind = if exit.reason == ExitReason::Rdrand {
                    RandomKind::Rdrand
                } else {
                    RandomKind::Rdseed
                };
                match env.random(kind, size)? {
                    Some(value) => Completion::Random { value, valid: true },
                    None => Completion::Random {
                        value: 0,
                        valid: false,
                    },
                }
            }
            (ExitReason::Rdmsr, ExitInfo::Rdmsr { index }) if *index == MSR_TSC => {
                Completion::Rdmsr(env.tsc_for(TscRead::Rdmsr)?)
            }
            // The monitor implements no other MSRs: the backend handles the
            // architectural ones; whatever reaches us faults as on a CPU
            // without that MSR.
            (ExitReason::Rdmsr | ExitReason::Wrmsr, _) => Completion::Fault(Exception::GP0),
            (ExitReason::Hlt, _) => {
                vcpu.complete(Completion::Retire)?;
                env.exit_completed(vcpu, true)?;
                return self.halted(vcpu, env, st, wall_end, limits);
            }
            (ExitReason::TripleFault, _) => {
                return Ok(Some(StopReason::TripleFault { rip: exit.rip }));
            }
            (
                ExitReason::InterruptWindow
                | ExitReason::ExternalInterrupt
                | ExitReason::MonitorTrapFlag
                | ExitReason::PreemptionTimer,
                _,
            ) => return Ok(None),
            (reason, info) => {
                return Err(MachineError::Vcpu(VcpuError::Internal {
                    rip: exit.rip,
                    bytes: Vec::new(),
                    what: format!("exit {reason:?} with mismatched detail {info:?}"),
                }));
            }
        };
        // MMIO accesses and string I/O elements retire on the next run.
        let retired = match &exit.info {
            ExitInfo::Mmio { .. } => false,
            ExitInfo::Io { qual, .. } => !qual.string,
            _ => true,
        };
        vcpu.complete(completion)?;
        st.mid_instruction = !retired;
        env.exit_completed(vcpu, retired)?;
        Ok(None)
    }

    /// HLT retired: wait for an interrupt (the guest is idle until one comes).
    fn halted(
        &self,
        vcpu: &mut dyn Vcpu,
        env: &mut dyn Environment,
        st: &mut RunState,
        wall_end: Option<Instant>,
        limits: &RunLimits,
    ) -> Result<Option<StopReason>, MachineError> {
        loop {
            if vcpu.regs()?.rflags & RFLAGS_IF == 0 {
                let rip = vcpu.regs()?.rip;
                return Ok(Some(StopReason::HaltedWithInterruptsDisabled { rip }));
            }
            if self.deliver_async(vcpu, env, st)? {
                return Ok(None);
            }
            // Pending but not deliverable yet (an interrupt shadow the
            // backend still reports): the main loop asks for a window.
            if env.interrupt_waiting()? {
                return Ok(None);
            }
            if let (Some(end), Some(d)) = (wall_end, limits.wall) {
                if Instant::now() >= end {
                    return Ok(Some(StopReason::TimeLimit(d)));
                }
            }
            if env.idle(wall_end)? == Idle::Never {
                let rip = vcpu.regs()?.rip;
                return Ok(Some(StopReason::NothingToWake { rip }));
            }
        }
    }
}

struct RunState {
    exits: u64,
    interrupts: u64,
    window: bool,
    /// The last exit was an instruction exit that advanced the vCPU's exit
    /// clock where it has one (or no exit happened yet).
    at_deterministic_point: bool,
    /// The last exit's instruction has not retired yet (MMIO, string I/O).
    mid_instruction: bool,
}

/// Ask the host to back guest RAM with transparent huge pages: fewer page
/// faults and TLB misses, and a digest's scan of never-written memory reads
/// the one huge zero page instead of faulting in 4 KiB zero pages one by one.
/// Advice only: where the host refuses, nothing changes.
fn advise_huge_pages(mem: &GuestMemoryMmap) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for r in mem.iter() {
        // SAFETY: the range is exactly one mapping owned by `mem`, which
        // outlives the call; MADV_HUGEPAGE changes no contents and no
        // permissions, only how the kernel backs the pages.
        unsafe {
            libc::madvise(r.as_ptr().cast(), r.len() as usize, libc::MADV_HUGEPAGE);
        }
    }
}

/// A thread that kicks the vCPU when the environment's next deadline passes,
/// so timer interrupts reach a guest that never exits on its own.
struct DeadlineTimer {
    shared: Arc<(Mutex<TimerState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct TimerState {
    deadline: Option<Instant>,
    quit: bool,
}

impl DeadlineTimer {
    fn start(kicker: Arc<dyn vcpu::Kicker>) -> Self {
        let shared = Arc::new((Mutex::new(TimerState::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("deadline-kicker".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if g.quit {
                        return;
                    }
                    match g.deadline {
                        None => g = cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                g.deadline = None;
                                kicker.kick();
                            } else {
                                g = cv
                                    .wait_timeout(g, d - now)
                                    .unwrap_or_else(|p| p.into_inner())
                                    .0;
                            }
                        }
                    }
                }
            })
            .ok();
        DeadlineTimer { shared, thread }
    }

    fn set(&self, deadline: Option<Instant>) {
        let (lock, cv) = &*self.shared;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        if g.deadline != deadline {
            g.deadline = deadline;
            cv.notify_one();
        }
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.shared;
            lock.lock().unwrap_or_else(|p| p.into_inner()).quit = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
