//! A toy machine behind the [`Vcpu`] trait: a scripted instruction stream
//! with branches, RIP and RCX, retiring through a [`SimCore`] so that the
//! landing algorithm can be tested against hardware-like skid before (and
//! beside) the soft vCPU.
//!
//! Exit behaviour follows VT-x where it matters for landing: the monitor
//! trap flag exits after each instruction *or REP iteration*; an overflow
//! PMI is an EXTERNAL_INTERRUPT exit with [`HOST_PMI_VECTOR`] at the
//! boundary after the skid; an MTF exit has priority over a PMI at the same
//! boundary (so the PMI arrives at the next `run` without progress); `out`
//! and `hlt` are instruction exits the caller completes, and with MTF on the
//! completed instruction is followed by an MTF exit on the next `run`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vcpu::{
    Completion, ExecControls, ExitInfo, ExitReason, FpuState, HOST_KICK_VECTOR, HOST_PMI_VECTOR,
    IoDirection, IoQualification, Kicker, PmuBank, Regs, RetiredCounts, SpecialRegs, Vcpu,
    VcpuError, VmExit,
};

use super::{Retired, SimConfig, SimCore};

/// Where the first instruction sits.
pub const BASE_RIP: u64 = 0x1000;

/// One toy instruction. Targets are instruction indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// 1 byte, nothing.
    Nop,
    /// `mov rcx, imm` (7 bytes).
    MovRcx(u64),
    /// `jmp` to an instruction (2 bytes; a branch). `Jmp(self)` is `jmp $`.
    Jmp(usize),
    /// `loop`: RCX −= 1, jump if RCX ≠ 0 (2 bytes; a branch taken or not).
    Loop(usize),
    /// `rep movsb` (2 bytes): one iteration per step while RCX ≠ 0, RCX
    /// counting down at the same RIP; not a branch.
    RepMovsb,
    /// `out imm8, al` (2 bytes): an I/O exit.
    Out(u8),
    /// `hlt` (1 byte): a HLT exit.
    Hlt,
    /// Switch the CPL the following instructions count at (1 byte; models
    /// a ring change without a branch, for USR/OS filtering).
    SetCpl(u8),
}

impl Op {
    fn len(self) -> u64 {
        match self {
            Op::Nop | Op::Hlt | Op::SetCpl(_) => 1,
            Op::MovRcx(_) => 7,
            Op::Jmp(_) | Op::Loop(_) | Op::RepMovsb | Op::Out(_) => 2,
        }
    }
}

/// A toy program with each instruction's RIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    ops: Vec<Op>,
    rips: Vec<u64>,
}

impl Program {
    /// Lay out `ops` from [`BASE_RIP`].
    pub fn new(ops: Vec<Op>) -> Self {
        let mut rip = BASE_RIP;
        let rips = ops
            .iter()
            .map(|op| {
                let r = rip;
                rip += op.len();
                r
            })
            .collect();
        Program { ops, rips }
    }

    /// The instructions.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// RIP of instruction `i` (one past the end for `i == len`).
    pub fn rip(&self, i: usize) -> u64 {
        self.rips.get(i).copied().unwrap_or_else(|| {
            self.rips
                .last()
                .map_or(BASE_RIP, |r| r + self.ops[self.ops.len() - 1].len())
        })
    }

    fn index_of(&self, rip: u64) -> Option<usize> {
        self.rips.binary_search(&rip).ok()
    }
}

#[derive(Debug, Default)]
struct ToyKicker(AtomicBool);

impl Kicker for ToyKicker {
    fn kick(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The toy vCPU.
#[derive(Debug)]
pub struct ToyVcpu {
    prog: Program,
    pc: usize,
    regs: Regs,
    cpl: u8,
    bank: SimCore,
    controls: ExecControls,
    awaiting: Option<ExitReason>,
    mtf_pending: bool,
    pmi_pending: bool,
    retired: RetiredCounts,
    kicker: Arc<ToyKicker>,
}

impl ToyVcpu {
    /// At instruction 0 with RCX = 0, CPL 0, a fresh host bank.
    pub fn new(prog: Program, pmu: SimConfig) -> Self {
        let regs = Regs {
            rip: prog.rip(0),
            rflags: 2,
            ..Default::default()
        };
        ToyVcpu {
            prog,
            pc: 0,
            regs,
            cpl: 0,
            bank: SimCore::new(pmu),
            controls: ExecControls::default(),
            awaiting: None,
            mtf_pending: false,
            pmi_pending: false,
            retired: RetiredCounts::default(),
            kicker: Arc::new(ToyKicker::default()),
        }
    }

    /// The host bank (also reachable through [`Vcpu::host_pmu`]).
    pub fn bank(&mut self) -> &mut SimCore {
        &mut self.bank
    }

    fn retire(&mut self, branch: bool) {
        self.retired.instructions += 1;
        self.retired.branches += branch as u64;
        if self.bank.retire(Retired {
            branch,
            cpl: self.cpl,
        }) {
            self.pmi_pending = true;
        }
    }

    fn goto(&mut self, pc: usize) {
        self.pc = pc;
        self.regs.rip = self.prog.rip(pc);
    }

    fn exit(&self, reason: ExitReason, info: ExitInfo, qualification: u64, len: u8) -> VmExit {
        VmExit {
            reason,
            qualification,
            instruction_len: len,
            rip: self.regs.rip,
            info,
        }
    }

    /// Execute one instruction or REP iteration; `Some` for an instruction
    /// exit (nothing retired).
    fn step(&mut self) -> Result<Option<VmExit>, VcpuError> {
        let Some(&op) = self.prog.ops.get(self.pc) else {
            return Err(VcpuError::Internal {
                rip: self.regs.rip,
                bytes: vec![],
                what: "ran off the end of the toy program".into(),
            });
        };
        let next = self.pc + 1;
        match op {
            Op::Nop => {
                self.goto(next);
                self.retire(false);
            }
            Op::SetCpl(c) => {
                self.goto(next);
                self.retire(false);
                self.cpl = c;
            }
            Op::MovRcx(v) => {
                self.regs.rcx = v;
                self.goto(next);
                self.retire(false);
            }
            Op::Jmp(t) => {
                self.goto(t);
                self.retire(true);
            }
            Op::Loop(t) => {
                self.regs.rcx = self.regs.rcx.wrapping_sub(1);
                self.goto(if self.regs.rcx != 0 { t } else { next });
                self.retire(true);
            }
            Op::RepMovsb => {
                if self.regs.rcx != 0 {
                    self.regs.rcx -= 1;
                }
                if self.regs.rcx == 0 {
                    self.goto(next);
                }
                self.retire(false);
            }
            Op::Out(port) => {
                let qual = IoQualification {
                    size: 1,
                    direction: IoDirection::Out,
                    string: false,
                    rep: false,
                    immediate: true,
                    port: port as u16,
                };
                self.awaiting = Some(ExitReason::IoInstruction);
                return Ok(Some(self.exit(
                    ExitReason::IoInstruction,
                    ExitInfo::Io {
                        qual,
                        out_value: Some(self.regs.rax as u8 as u32),
                    },
                    qual.encode(),
                    2,
                )));
            }
            Op::Hlt => {
                self.awaiting = Some(ExitReason::Hlt);
                return Ok(Some(self.exit(ExitReason::Hlt, ExitInfo::None, 0, 1)));
            }
        }
        Ok(None)
    }
}

impl Vcpu for ToyVcpu {
    fn backend(&self) -> &'static str {
        "toy"
    }

    fn run(&mut self) -> Result<VmExit, VcpuError> {
        if let Some(r) = self.awaiting {
            return Err(VcpuError::ExitNotCompleted(r));
        }
        let mut budget = self.controls.preemption_timer;
        loop {
            if std::mem::take(&mut self.mtf_pending) {
                return Ok(self.exit(ExitReason::MonitorTrapFlag, ExitInfo::None, 0, 0));
            }
            if std::mem::take(&mut self.pmi_pending) {
                let info = ExitInfo::ExternalInterrupt {
                    vector: HOST_PMI_VECTOR,
                };
                return Ok(self.exit(ExitReason::ExternalInterrupt, info, 0, 0));
            }
            if self.kicker.0.swap(false, Ordering::SeqCst) {
                let info = ExitInfo::ExternalInterrupt {
                    vector: HOST_KICK_VECTOR,
                };
                return Ok(self.exit(ExitReason::ExternalInterrupt, info, 0, 0));
            }
            if budget == Some(0) {
                return Ok(self.exit(ExitReason::PreemptionTimer, ExitInfo::None, 0, 0));
            }
            if let Some(exit) = self.step()? {
                return Ok(exit);
            }
            budget = budget.map(|b| b - 1);
            if self.controls.monitor_trap_flag {
                self.mtf_pending = true;
            }
        }
    }

    fn complete(&mut self, completion: Completion) -> Result<(), VcpuError> {
        let bad = |pending| VcpuError::BadCompletion {
            pending,
            completion: completion.name(),
        };
        match (self.awaiting, completion) {
            (Some(ExitReason::IoInstruction | ExitReason::Hlt), Completion::Retire) => {
                self.awaiting = None;
                self.goto(self.pc + 1);
                self.retire(false);
                self.mtf_pending = self.controls.monitor_trap_flag;
                Ok(())
            }
            (pending, _) => Err(bad(pending)),
        }
    }

    fn regs(&self) -> Result<Regs, VcpuError> {
        Ok(self.regs)
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), VcpuError> {
        let pc = self.prog.index_of(regs.rip).ok_or_else(|| {
            VcpuError::InvalidState(format!("rip {:#x} is not a toy instruction", regs.rip))
        })?;
        self.regs = *regs;
        self.pc = pc;
        Ok(())
    }

    fn special_regs(&self) -> Result<SpecialRegs, VcpuError> {
        Ok(SpecialRegs::default())
    }

    fn set_special_regs(&mut self, _: &SpecialRegs) -> Result<(), VcpuError> {
        Err(self.unsupported("special registers"))
    }

    fn fpu(&self) -> Result<FpuState, VcpuError> {
        Ok(FpuState::default())
    }

    fn set_fpu(&mut self, _: &FpuState) -> Result<(), VcpuError> {
        Err(self.unsupported("FPU state"))
    }

    fn msr(&mut self, index: u32) -> Result<u64, VcpuError> {
        Err(self.unsupported(&format!("guest MSR {index:#x}")))
    }

    fn set_msr(&mut self, index: u32, _: u64) -> Result<(), VcpuError> {
        Err(self.unsupported(&format!("guest MSR {index:#x}")))
    }

    fn controls(&self) -> &ExecControls {
        &self.controls
    }

    fn set_controls(&mut self, controls: ExecControls) -> Result<(), VcpuError> {
        self.controls = controls;
        Ok(())
    }

    fn interruptible(&self) -> Result<bool, VcpuError> {
        Ok(true)
    }

    fn inject(&mut self, event: vcpu::Event) -> Result<(), VcpuError> {
        Err(self.unsupported(&format!("injecting {event:?}")))
    }

    fn kicker(&self) -> Arc<dyn Kicker> {
        self.kicker.clone()
    }

    fn retired(&self) -> Option<RetiredCounts> {
        Some(self.retired)
    }

    fn host_pmu(&mut self) -> Option<&mut dyn PmuBank> {
        Some(&mut self.bank)
    }
}

impl ToyVcpu {
    fn unsupported(&self, what: &str) -> VcpuError {
        VcpuError::Unsupported {
            backend: "toy",
            what: what.into(),
        }
    }
}
