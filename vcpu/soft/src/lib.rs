//! Software VT-x: an x86-64 interpreter with exact retired-instruction and
//! retired-branch counting and a virtual PMU, behind the [`vcpu::Vcpu`] trait.
//!
//! # What it runs
//! 32-bit protected mode with flat segments (paging off, 32-bit paging, PAE
//! paging), IA-32e mode (compatibility and 64-bit), CPL 0 and 3. Instructions
//! are decoded once by iced-x86 and translated into blocks of pre-decoded ops
//! (see `exec` and `translate`); see `CONTROLS.md` in this crate for the exits
//! and controls, and the README section for what is not implemented.
//!
//! # What counts
//! **Retired instructions** (Intel event C0H): every instruction that
//! completes. An instruction that faults does not retire; event delivery
//! (exceptions, interrupts, NMIs) is not an instruction. An instruction that
//! exits to the monitor retires when the monitor completes it (once): inside
//! `complete` for CPUID, HLT, RDTSC(P), RDMSR/WRMSR, RDRAND/RDSEED and
//! non-string IN/OUT (so RIP, the counters and the end of an STI/MOV SS
//! shadow are visible before the next `run`, as after a VMM emulated it);
//! on the next `run` for MMIO accesses and string I/O, which may exit again.
//! A REP-prefixed string instruction retires **once**, when its last
//! iteration completes (or at once if the count register is 0). Iterations
//! interrupted by a fault, an exit, a kick or single-stepping (MTF, TF) leave
//! RIP at the instruction with RCX/RSI/RDI updated for the iterations done;
//! they count nothing. So a timepoint `(branches, rip, rcx)` names an
//! iteration boundary inside a REP instruction exactly, and single-stepping
//! with MTF visits every iteration.
//!
//! **Retired branches** (Intel event C4H, BR_INST_RETIRED.ALL_BRANCHES):
//! retired instances of JMP (near and far, direct and indirect), CALL (near
//! and far), RET (near and far, with or without an immediate), Jcc (taken or
//! not), LOOP/LOOPE/LOOPNE and JrCXZ (taken or not), IRET, SYSCALL, SYSRET,
//! INT n, INT3, INT1 and INTO (also when INTO does not trap). Not counted:
//! exceptions, external interrupts, NMIs, and anything that faults. A branch
//! that faults (e.g. RET with an unmapped stack) does not retire, so it does
//! not count. These are exactly the instructions that end a translated block
//! with `br` set; tests in `tests/counts.rs` pin the definition.
//!
//! # Memory
//! Guest RAM is a caller-provided `vm_memory::GuestMemoryMmap`; the host
//! address of each region is taken once (the `Ram` keeps a clone of the
//! memory object, so the mappings outlive every pointer). Guest-physical
//! addresses outside RAM are MMIO: accesses exit with EPT_VIOLATION.

#![deny(missing_docs)]

pub mod bench;
pub mod cpu;
pub mod exec;
pub mod exits;
pub mod flags;
pub mod fuzz;
pub mod interrupt;
pub mod mem;
pub mod op;
pub mod ops;
pub mod pmu;
pub mod translate;

use std::sync::Arc;

use vcpu::{
    Completion, Event, ExecControls, ExitInfo, ExitReason, FpuState, Kicker, PmuBank, Regs,
    RetiredCounts, SpecialRegs, Vcpu, VcpuError, VmExit,
};
use vm_memory::GuestMemoryMmap;

use crate::cpu::{Cpu, Stop};
use crate::exec::{Cache, Kick, Outcome};
use crate::exits::Answer;
use crate::interrupt::{Delivered, EventKind};

impl Kicker for Kick {
    fn kick(&self) {
        Kick::kick(self)
    }
}

/// The software vCPU.
pub struct SoftVcpu {
    cpu: Cpu,
    cache: Cache,
    controls: ExecControls,
    pending_exit: Option<VmExit>,
    pending_event: Option<Event>,
    pending_fault: Option<vcpu::Exception>,
    host: pmu::HostBank,
    skid: u64,
    pmi_at: Option<u64>,
    insn_deadline: u64,
    br_deadline: u64,
    guest_pmi: bool,
    dead: bool,
    /// An exit produced while executing a completed instruction inside
    /// `complete`, returned by the next `run`.
    stashed_exit: Option<VmExit>,
    /// MTF: the completed instruction retired inside `complete`; the next
    /// `run` reports the MTF exit first.
    pending_mtf: bool,
}

fn mk_exit(reason: ExitReason, rip: u64, info: ExitInfo) -> VmExit {
    VmExit {
        reason,
        qualification: 0,
        instruction_len: 0,
        rip,
        info,
    }
}

impl SoftVcpu {
    /// A vCPU over guest RAM `mem`, in flat 32-bit protected mode at CPL 0
    /// with paging off (the PVH entry state); set registers before running.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let controls = ExecControls::default();
        let mut cpu = Cpu::new(mem::Ram::new(mem));
        cpu.ctl = controls.clone();
        SoftVcpu {
            cpu,
            cache: Cache::new(),
            controls,
            pending_exit: None,
            pending_event: None,
            pending_fault: None,
            host: pmu::HostBank::default(),
            skid: 0,
            pmi_at: None,
            insn_deadline: u64::MAX,
            br_deadline: u64::MAX,
            guest_pmi: false,
            dead: false,
            stashed_exit: None,
            pending_mtf: false,
        }
    }

    /// Retired instructions between a host-counter overflow and the PMI exit
    /// (0 = exact; real hardware skids by a few instructions).
    pub fn set_host_pmi_skid(&mut self, k: u64) {
        self.skid = k;
    }

    /// Whether a guest counter with INT set overflowed since the last call
    /// (the monitor raises the LAPIC's performance-counter interrupt).
    pub fn take_guest_pmi(&mut self) -> bool {
        std::mem::take(&mut self.guest_pmi)
    }

    /// CPUID.0AH as the guest should see it (CPUID always exits; the monitor answers with this).
    pub fn guest_cpuid_0a(&self) -> [u32; 4] {
        self.cpu.pmu.cpuid()
    }

    /// Blocks translated so far (statistics for benchmarks).
    pub fn translated_blocks(&self) -> u64 {
        self.cache.translated
    }

    /// The host (a device model, a loader) wrote guest-physical memory
    /// directly: drop translations of code in `gpa..gpa+len`. Guest stores
    /// are tracked by the vCPU itself; host writes are not.
    pub fn host_wrote(&mut self, gpa: u64, len: u64) {
        let first = gpa & !0xfff;
        let last = gpa.saturating_add(len.max(1) - 1) & !0xfff;
        let mut p = first;
        loop {
            if self.cpu.tlb.code_pages.remove(&p) {
                self.cache.invalidate_page(p);
                self.cpu.epoch = self.cpu.epoch.wrapping_add(1);
            }
            if p >= last {
                break;
            }
            p += 0x1000;
        }
    }

    /// Direct access to the interpreter state (tests, debuggers).
    pub fn cpu(&self) -> &Cpu {
        &self.cpu
    }

    /// Mutable access to the interpreter state. Changing translation-relevant
    /// state here must be followed by [`SoftVcpu::state_changed`].
    pub fn cpu_mut(&mut self) -> &mut Cpu {
        &mut self.cpu
    }

    /// Recompute derived state after direct changes through [`SoftVcpu::cpu_mut`].
    pub fn state_changed(&mut self) {
        self.pmu_sync();
        self.cpu.flush_tlb();
        self.cpu.mode_changed();
    }

    fn pmu_sync(&mut self) {
        let c = &mut self.cpu;
        let (i, b, u) = (c.insns, c.branches, c.cpl == 3);
        c.pmu.sync(i, b, u);
        self.host.bank.sync(i, b, u);
        if self.host.bank.pmi_pending {
            self.host.bank.pmi_pending = false;
            if self.pmi_at.is_none() {
                self.pmi_at = Some(i.saturating_add(self.skid));
            }
        }
        if c.pmu.pmi_pending {
            c.pmu.pmi_pending = false;
            self.guest_pmi = true;
        }
        let (hi, hb) = self.host.bank.deadlines();
        let (gi, gb) = c.pmu.deadlines();
        self.insn_deadline = hi.min(gi);
        self.br_deadline = hb.min(gb);
        c.cpl_changed = false;
        c.pmu_dirty = false;
        self.host.dirty = false;
    }

    fn internal(&self, what: String) -> VcpuError {
        VcpuError::Internal {
            rip: self.cpu.rip,
            bytes: self.cache.bytes_at(self.cpu.rip),
            what,
        }
    }

    /// Deliver an event; Some(exit) for a triple fault.
    fn deliver(
        &mut self,
        vector: u8,
        err: Option<u32>,
        kind: EventKind,
    ) -> Result<Option<VmExit>, VcpuError> {
        self.cpu.answers.clear();
        let rip = self.cpu.rip;
        match interrupt::deliver(&mut self.cpu, vector, err, kind, rip) {
            Delivered::Ok => Ok(None),
            Delivered::TripleFault => {
                self.dead = true;
                Ok(Some(mk_exit(ExitReason::TripleFault, rip, ExitInfo::None)))
            }
            Delivered::Internal(s) => Err(self.internal(s)),
        }
    }

    fn mtf_exit(&self) -> VmExit {
        mk_exit(ExitReason::MonitorTrapFlag, self.cpu.rip, ExitInfo::None)
    }

    /// Execute the just-completed instruction now, as a VMM that emulates
    /// it would: it retires (RIP advances, counters count, an STI/MOV SS
    /// shadow ends) before `complete` returns, so `interruptible` and `inject`
    /// see the state after it. Only for instructions whose re-execution
    /// cannot exit again (not MMIO, not string I/O).
    fn execute_completed(&mut self) -> Result<(), VcpuError> {
        let c = &mut self.cpu;
        let tf = c.rf & flags::TF != 0;
        c.rep_chunk = 1;
        let before = c.insns;
        let stop_at = c.insns + 1;
        let out = self.cache.run(c, stop_at, self.br_deadline);
        if c.shadow_req {
            c.shadow_req = false;
            c.shadow = true;
            c.shadow_insns = c.insns;
        }
        let retired = c.insns > before;
        c.answers.clear();
        let mut delivered = false;
        if let Outcome::Stopped = out {
            match std::mem::replace(&mut c.stop, Stop::None) {
                Stop::Exception(v, e) => {
                    if let Some(x) = self.deliver(v, e, EventKind::Exception)? {
                        self.stashed_exit = Some(x);
                        return Ok(());
                    }
                    delivered = true;
                }
                Stop::Exit(mut x) => {
                    x.rip = self.cpu.rip;
                    self.stashed_exit = Some(x);
                    return Ok(());
                }
                Stop::Yield | Stop::None => {}
                Stop::Internal(s) => return Err(self.internal(s)),
            }
        }
        if tf && retired && !delivered {
            self.cpu.dr[6] |= 1 << 14;
            if let Some(x) = self.deliver(1, None, EventKind::Exception)? {
                self.stashed_exit = Some(x);
                return Ok(());
            }
        }
        if let Some(t) = self.controls.preemption_timer.as_mut() {
            *t = t.saturating_sub(self.cpu.insns - before);
            self.cpu.ctl.preemption_timer = Some(*t);
        }
        self.pmu_sync();
        if self.controls.monitor_trap_flag {
            self.pending_mtf = true;
        }
        Ok(())
    }

    fn run_inner(&mut self, timer_at: Option<u64>) -> Result<VmExit, VcpuError> {
        let mtf = self.controls.monitor_trap_flag;
        // VM entry: a fault answer, then an injected event.
        if let Some(ex) = self.pending_fault.take() {
            if let Some(x) = self.deliver(ex.vector, ex.error_code, EventKind::Exception)? {
                return Ok(x);
            }
            if mtf {
                return Ok(self.mtf_exit());
            }
        }
        if let Some(ev) = self.pending_event.take() {
            let r = match ev {
                Event::ExternalInterrupt(v) => self.deliver(v, None, EventKind::External)?,
                Event::Nmi => {
                    self.cpu.nmi_blocked = true;
                    self.deliver(2, None, EventKind::External)?
                }
                Event::Exception(e) => {
                    self.deliver(e.vector, e.error_code, EventKind::Exception)?
                }
            };
            if let Some(x) = r {
                return Ok(x);
            }
            self.pmu_sync();
            if mtf {
                return Ok(self.mtf_exit());
            }
        }
        loop {
            let c = &mut self.cpu;
            if c.kick.flag.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Ok(mk_exit(
                    ExitReason::ExternalInterrupt,
                    c.rip,
                    ExitInfo::ExternalInterrupt {
                        vector: vcpu::HOST_KICK_VECTOR,
                    },
                ));
            }
            if let Some(at) = self.pmi_at {
                if c.insns >= at {
                    self.pmi_at = None;
                    return Ok(mk_exit(
                        ExitReason::ExternalInterrupt,
                        c.rip,
                        ExitInfo::ExternalInterrupt {
                            vector: vcpu::HOST_PMI_VECTOR,
                        },
                    ));
                }
            }
            if let Some(t) = timer_at {
                if c.insns >= t {
                    return Ok(mk_exit(ExitReason::PreemptionTimer, c.rip, ExitInfo::None));
                }
            }
            if self.controls.interrupt_window_exiting && c.interruptible() {
                return Ok(mk_exit(ExitReason::InterruptWindow, c.rip, ExitInfo::None));
            }
            if c.halted {
                c.kick.wait();
                continue;
            }
            let tf = c.rf & flags::TF != 0;
            let single = mtf || tf || c.shadow_active() || !c.answers.is_empty();
            let mut stop_at = self.insn_deadline;
            if let Some(t) = timer_at {
                stop_at = stop_at.min(t);
            }
            if let Some(at) = self.pmi_at {
                stop_at = stop_at.min(at);
            }
            if single {
                stop_at = stop_at.min(c.insns + 1);
                c.rep_chunk = 1;
            } else {
                c.rep_chunk = 4096;
            }
            let before = c.insns;
            let before_rip = c.rip;
            let before_rcx = c.gpr[1];
            let out = self.cache.run(c, stop_at, self.br_deadline);
            if c.shadow_req {
                c.shadow_req = false;
                c.shadow = true;
                c.shadow_insns = c.insns;
            }
            let retired = c.insns > before;
            if retired && !c.answers.is_empty() {
                c.answers.clear();
            }
            let mut delivered = false;
            let mut yielded = false;
            if let Outcome::Stopped = out {
                match std::mem::replace(&mut c.stop, Stop::None) {
                    Stop::Exception(v, e) => {
                        if c.cpl_changed
                            || c.insns >= self.insn_deadline
                            || c.branches >= self.br_deadline
                        {
                            self.pmu_sync();
                        }
                        if let Some(x) = self.deliver(v, e, EventKind::Exception)? {
                            return Ok(x);
                        }
                        delivered = true;
                    }
                    Stop::Exit(mut x) => {
                        x.rip = c.rip;
                        if x.instruction_len == 0 && x.reason != ExitReason::EptViolation {
                            x.instruction_len = c.last_len;
                        }
                        if x.reason == ExitReason::EptViolation {
                            if let ExitInfo::Mmio { fetch: false, .. } = x.info {
                                x.instruction_len = c.last_len;
                            }
                        }
                        c.answers.rewind();
                        self.pending_exit = Some(x.clone());
                        return Ok(x);
                    }
                    Stop::Yield => yielded = true,
                    Stop::Internal(s) => return Err(self.internal(s)),
                    Stop::None => {
                        return Err(self.internal("execution stopped without a reason".into()));
                    }
                }
            }
            let c = &mut self.cpu;
            // RFLAGS.TF: #DB (a trap) after each retired instruction and after
            // each iteration of a REP string instruction.
            if tf && (retired || yielded) && !delivered {
                c.dr[6] |= 1 << 14;
                if let Some(x) = self.deliver(1, None, EventKind::Exception)? {
                    return Ok(x);
                }
                delivered = true;
            }
            let c = &mut self.cpu;
            if c.cpl_changed
                || c.pmu_dirty
                || self.host.dirty
                || c.insns >= self.insn_deadline
                || c.branches >= self.br_deadline
            {
                self.pmu_sync();
            }
            let c = &self.cpu;
            let progressed = retired || delivered || c.rip != before_rip || c.gpr[1] != before_rcx;
            if mtf && progressed {
                return Ok(self.mtf_exit());
            }
        }
    }
}

impl Vcpu for SoftVcpu {
    fn backend(&self) -> &'static str {
        "soft"
    }

    fn run(&mut self) -> Result<VmExit, VcpuError> {
        if let Some(e) = &self.pending_exit {
            return Err(VcpuError::ExitNotCompleted(e.reason));
        }
        if let Some(x) = self.stashed_exit.take() {
            if x.reason.needs_completion() {
                self.cpu.answers.rewind();
                self.pending_exit = Some(x.clone());
            }
            return Ok(x);
        }
        if self.dead {
            return Ok(mk_exit(
                ExitReason::TripleFault,
                self.cpu.rip,
                ExitInfo::None,
            ));
        }
        if std::mem::take(&mut self.pending_mtf) {
            return Ok(self.mtf_exit());
        }
        self.pmu_sync();
        let timer_at = self
            .controls
            .preemption_timer
            .map(|t| self.cpu.insns.saturating_add(t));
        let r = self.run_inner(timer_at);
        if let Some(t) = timer_at {
            self.controls.preemption_timer = Some(t.saturating_sub(self.cpu.insns));
            self.cpu.ctl.preemption_timer = self.controls.preemption_timer;
        }
        self.pmu_sync();
        r
    }

    fn complete(&mut self, completion: Completion) -> Result<(), VcpuError> {
        let Some(pending) = self.pending_exit.take() else {
            return Err(VcpuError::BadCompletion {
                pending: None,
                completion: completion.name(),
            });
        };
        let bad = |p: &VmExit| VcpuError::BadCompletion {
            pending: Some(p.reason),
            completion: completion.name(),
        };
        if let Completion::Fault(ex) = completion {
            if ex.vector > 31 {
                self.pending_exit = Some(pending.clone());
                return Err(bad(&pending));
            }
            self.cpu.answers.clear();
            self.pending_fault = Some(ex);
            return Ok(());
        }
        let answer = match (&pending.reason, &pending.info, completion) {
            (ExitReason::IoInstruction, ExitInfo::Io { qual, .. }, Completion::IoIn(_))
                if qual.direction == vcpu::IoDirection::In =>
            {
                Answer::Value(completion)
            }
            (ExitReason::IoInstruction, ExitInfo::Io { qual, .. }, Completion::Retire)
                if qual.direction == vcpu::IoDirection::Out =>
            {
                Answer::Value(completion)
            }
            (
                ExitReason::EptViolation,
                ExitInfo::Mmio {
                    write_data: None,
                    fetch: false,
                    ..
                },
                Completion::MmioRead(b),
            ) => Answer::Mmio(b),
            (
                ExitReason::EptViolation,
                ExitInfo::Mmio {
                    write_data: Some(_),
                    ..
                },
                Completion::Retire,
            ) => Answer::Mmio([0; 16]),
            (ExitReason::EptViolation, ExitInfo::Mmio { fetch: true, .. }, Completion::Retire) => {
                // Retry the fetch (the monitor may have mapped RAM there).
                return Ok(());
            }
            (ExitReason::Cpuid, _, Completion::Cpuid { .. })
            | (ExitReason::Hlt, _, Completion::Retire)
            | (ExitReason::Rdtsc, _, Completion::Rdtsc(_))
            | (ExitReason::Rdtscp, _, Completion::Rdtscp { .. })
            | (ExitReason::Rdmsr, _, Completion::Rdmsr(_))
            | (ExitReason::Wrmsr, _, Completion::Retire)
            | (ExitReason::Rdrand, _, Completion::Random { .. })
            | (ExitReason::Rdseed, _, Completion::Random { .. }) => Answer::Value(completion),
            _ => {
                let e = bad(&pending);
                self.pending_exit = Some(pending);
                return Err(e);
            }
        };
        self.cpu.answers.push(answer);
        let string_io = matches!(&pending.info, ExitInfo::Io { qual, .. } if qual.string);
        if pending.reason != ExitReason::EptViolation && !string_io {
            self.execute_completed()?;
        }
        Ok(())
    }

    fn regs(&self) -> Result<Regs, VcpuError> {
        let c = &self.cpu;
        let mut r = Regs::default();
        let mut g = [0u64; 16];
        g.copy_from_slice(&c.gpr[..16]);
        r.set_gprs(g);
        r.rip = c.rip;
        r.rflags = c.rflags();
        Ok(r)
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), VcpuError> {
        let c = &mut self.cpu;
        if regs.rip != c.rip {
            // Moving RIP abandons an instruction that was completed but has
            // not re-executed yet: its answers must not reach another one.
            c.answers.clear();
        }
        c.gpr[..16].copy_from_slice(&regs.gprs());
        c.rip = regs.rip;
        c.set_rflags(regs.rflags);
        Ok(())
    }

    fn special_regs(&self) -> Result<SpecialRegs, VcpuError> {
        let c = &self.cpu;
        Ok(SpecialRegs {
            es: c.seg[cpu::ES],
            cs: c.seg[cpu::CS],
            ss: c.seg[cpu::SS],
            ds: c.seg[cpu::DS],
            fs: c.seg[cpu::FS],
            gs: c.seg[cpu::GS],
            tr: c.tr,
            ldt: c.ldt,
            gdt: c.gdt,
            idt: c.idt,
            cr0: c.cr0,
            cr2: c.cr2,
            cr3: c.cr3,
            cr4: c.cr4,
            cr8: c.cr8,
            efer: c.efer,
            apic_base: c.apic_base,
        })
    }

    fn set_special_regs(&mut self, s: &SpecialRegs) -> Result<(), VcpuError> {
        if s.cr0 & cpu::cr0::PG != 0 && s.cr0 & cpu::cr0::PE == 0 {
            return Err(VcpuError::InvalidState("CR0.PG without CR0.PE".into()));
        }
        if s.cr0 & cpu::cr0::PE == 0 {
            return Err(VcpuError::Unsupported {
                backend: "soft",
                what: "real mode (CR0.PE = 0)".into(),
            });
        }
        if s.efer & cpu::efer::LMA != 0 && (s.cr0 & cpu::cr0::PG == 0 || s.cr4 & cpu::cr4::PAE == 0)
        {
            return Err(VcpuError::InvalidState(
                "EFER.LMA without CR0.PG and CR4.PAE".into(),
            ));
        }
        self.pmu_sync();
        let c = &mut self.cpu;
        c.seg = [s.es, s.cs, s.ss, s.ds, s.fs, s.gs];
        c.tr = s.tr;
        c.ldt = s.ldt;
        c.gdt = s.gdt;
        c.idt = s.idt;
        c.cr0 = s.cr0;
        c.cr2 = s.cr2;
        c.cr3 = s.cr3;
        c.cr4 = s.cr4;
        c.cr8 = s.cr8;
        c.efer = s.efer;
        c.apic_base = s.apic_base;
        c.set_cpl((s.cs.selector & 3) as u8);
        c.flush_tlb();
        c.mode_changed();
        self.pmu_sync();
        Ok(())
    }

    fn fpu(&self) -> Result<FpuState, VcpuError> {
        let c = &self.cpu;
        let mut f = c.fpu_misc;
        for (i, x) in c.xmm.iter().enumerate() {
            f.xmm[i][..8].copy_from_slice(&x[0].to_le_bytes());
            f.xmm[i][8..].copy_from_slice(&x[1].to_le_bytes());
        }
        f.mxcsr = c.mxcsr;
        Ok(f)
    }

    fn set_fpu(&mut self, f: &FpuState) -> Result<(), VcpuError> {
        let c = &mut self.cpu;
        c.fpu_misc = *f;
        for (i, x) in f.xmm.iter().enumerate() {
            let mut lo = [0u8; 8];
            let mut hi = [0u8; 8];
            lo.copy_from_slice(&x[..8]);
            hi.copy_from_slice(&x[8..]);
            c.xmm[i] = [u64::from_le_bytes(lo), u64::from_le_bytes(hi)];
        }
        c.mxcsr = f.mxcsr;
        Ok(())
    }

    fn msr(&mut self, index: u32) -> Result<u64, VcpuError> {
        self.pmu_sync();
        if let Some(v) = pmu::guest_rdmsr(&mut self.cpu, index) {
            return Ok(v);
        }
        ops::sys::core_rdmsr(&self.cpu, index).ok_or_else(|| VcpuError::Unsupported {
            backend: "soft",
            what: format!("MSR {index:#x}"),
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError> {
        self.pmu_sync();
        if let Some(r) = pmu::guest_wrmsr(&mut self.cpu, index, value) {
            self.pmu_sync();
            return r.map_err(|()| {
                VcpuError::InvalidState(format!(
                    "reserved bits writing {value:#x} to MSR {index:#x}"
                ))
            });
        }
        match ops::sys::core_wrmsr(&mut self.cpu, index, value) {
            Ok(true) => Ok(()),
            Ok(false) => Err(VcpuError::Unsupported {
                backend: "soft",
                what: format!("MSR {index:#x}"),
            }),
            Err(ops::sys::BadMsrValue) => Err(VcpuError::InvalidState(format!(
                "invalid value {value:#x} for MSR {index:#x}"
            ))),
        }
    }

    fn controls(&self) -> &ExecControls {
        &self.controls
    }

    fn set_controls(&mut self, controls: ExecControls) -> Result<(), VcpuError> {
        self.cpu.ctl = controls.clone();
        self.controls = controls;
        Ok(())
    }

    fn interruptible(&self) -> Result<bool, VcpuError> {
        Ok(self.cpu.interruptible())
    }

    fn inject(&mut self, event: Event) -> Result<(), VcpuError> {
        if self.pending_event.is_some() {
            return Err(VcpuError::CannotInject {
                event,
                why: "another event is already queued",
            });
        }
        if self.pending_exit.is_some() {
            return Err(VcpuError::CannotInject {
                event,
                why: "the pending instruction exit must be completed first",
            });
        }
        match event {
            Event::ExternalInterrupt(v) => {
                if v < 32 {
                    return Err(VcpuError::InvalidState(format!(
                        "external interrupt vector {v} < 32"
                    )));
                }
                if !self.cpu.interruptible() {
                    return Err(VcpuError::CannotInject {
                        event,
                        why: if self.cpu.rf & flags::IF == 0 {
                            "RFLAGS.IF = 0"
                        } else {
                            "interrupt shadow (STI / MOV SS)"
                        },
                    });
                }
            }
            Event::Nmi => {
                if self.cpu.nmi_blocked {
                    return Err(VcpuError::CannotInject {
                        event,
                        why: "NMIs blocked until IRET",
                    });
                }
            }
            Event::Exception(e) => {
                if e.vector > 31 {
                    return Err(VcpuError::InvalidState(format!(
                        "exception vector {} > 31",
                        e.vector
                    )));
                }
            }
        }
        self.pending_event = Some(event);
        Ok(())
    }

    fn kicker(&self) -> Arc<dyn Kicker> {
        self.cpu.kick.clone()
    }

    fn retired(&self) -> Option<RetiredCounts> {
        Some(RetiredCounts {
            instructions: self.cpu.insns,
            branches: self.cpu.branches,
        })
    }

    fn host_pmu(&mut self) -> Option<&mut dyn PmuBank> {
        self.pmu_sync();
        self.host.dirty = true;
        Some(&mut self.host)
    }

    fn host_wrote_memory(&mut self, gpa: u64, len: u64) {
        self.host_wrote(gpa, len);
    }
}
