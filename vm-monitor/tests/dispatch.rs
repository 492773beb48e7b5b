//! The exit dispatch loop against a scripted vCPU: each test feeds a
//! sequence of exits and checks the completions, injections and stop reason
//! the machine produces, and that the completion protocol is followed
//! (exactly one `complete` per instruction exit, none otherwise).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use common::Shared;
use std::time::Duration;

use vcpu::{
    Completion, Event, Exception, ExecControls, ExitInfo, ExitReason, IoDirection, IoQualification,
    Kicker, VcpuError, VmExit,
};
use vm_monitor::{
    Environment, Input, LiveEnvironment, Machine, MachineConfig, RunLimits, StopReason, Tap,
};

/// One scripted step: an exit, optionally changing RFLAGS.IF first.
struct Step {
    exit: VmExit,
    interruptible: Option<bool>,
}

struct Scripted {
    script: VecDeque<Step>,
    pending: Option<ExitReason>,
    completions: Vec<Completion>,
    injected: Vec<Event>,
    interruptible: bool,
    controls: ExecControls,
    window_seen: bool,
}

struct NoKick;
impl Kicker for NoKick {
    fn kick(&self) {}
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Scripted {
            script: steps.into(),
            pending: None,
            completions: Vec::new(),
            injected: Vec::new(),
            interruptible: true,
            controls: ExecControls::default(),
            window_seen: false,
        }
    }
}

impl vcpu::Vcpu for Scripted {
    fn backend(&self) -> &'static str {
        "scripted"
    }
    fn run(&mut self) -> Result<VmExit, VcpuError> {
        if let Some(p) = self.pending {
            return Err(VcpuError::ExitNotCompleted(p));
        }
        let step = self.script.pop_front().ok_or_else(|| VcpuError::Internal {
            rip: 0,
            bytes: vec![],
            what: "script ended".into(),
        })?;
        if let Some(i) = step.interruptible {
            self.interruptible = i;
        }
        if step.exit.reason.needs_completion() {
            self.pending = Some(step.exit.reason);
        }
        Ok(step.exit)
    }
    fn complete(&mut self, c: Completion) -> Result<(), VcpuError> {
        if self.pending.take().is_none() {
            return Err(VcpuError::BadCompletion {
                pending: None,
                completion: c.name(),
            });
        }
        self.completions.push(c);
        Ok(())
    }
    fn regs(&self) -> Result<vcpu::Regs, VcpuError> {
        Ok(vcpu::Regs {
            rflags: 2 | if self.interruptible { 0x200 } else { 0 },
            ..Default::default()
        })
    }
    fn set_regs(&mut self, _: &vcpu::Regs) -> Result<(), VcpuError> {
        Ok(())
    }
    fn special_regs(&self) -> Result<vcpu::SpecialRegs, VcpuError> {
        Ok(vcpu::SpecialRegs::default())
    }
    fn set_special_regs(&mut self, _: &vcpu::SpecialRegs) -> Result<(), VcpuError> {
        Ok(())
    }
    fn fpu(&self) -> Result<vcpu::FpuState, VcpuError> {
        Ok(vcpu::FpuState::default())
    }
    fn set_fpu(&mut self, _: &vcpu::FpuState) -> Result<(), VcpuError> {
        Ok(())
    }
    fn msr(&mut self, _: u32) -> Result<u64, VcpuError> {
        Ok(0)
    }
    fn set_msr(&mut self, _: u32, _: u64) -> Result<(), VcpuError> {
        Ok(())
    }
    fn controls(&self) -> &ExecControls {
        &self.controls
    }
    fn set_controls(&mut self, c: ExecControls) -> Result<(), VcpuError> {
        self.window_seen |= c.interrupt_window_exiting;
        self.controls = c;
        Ok(())
    }
    fn interruptible(&self) -> Result<bool, VcpuError> {
        Ok(self.interruptible)
    }
    fn inject(&mut self, e: Event) -> Result<(), VcpuError> {
        if matches!(e, Event::ExternalInterrupt(_)) && !self.interruptible {
            return Err(VcpuError::CannotInject {
                event: e,
                why: "IF = 0",
            });
        }
        self.injected.push(e);
        Ok(())
    }
    fn kicker(&self) -> Arc<dyn Kicker> {
        Arc::new(NoKick)
    }
    fn retired(&self) -> Option<vcpu::RetiredCounts> {
        None
    }
    fn host_pmu(&mut self) -> Option<&mut dyn vcpu::PmuBank> {
        None
    }
}

fn exit(reason: ExitReason, info: ExitInfo) -> Step {
    Step {
        exit: VmExit {
            reason,
            qualification: 0,
            instruction_len: 1,
            rip: 0x10_0000,
            info,
        },
        interruptible: None,
    }
}

fn io(port: u16, size: u8, out: Option<u32>) -> Step {
    let qual = IoQualification {
        size,
        direction: if out.is_some() {
            IoDirection::Out
        } else {
            IoDirection::In
        },
        string: false,
        rep: false,
        immediate: false,
        port,
    };
    exit(
        ExitReason::IoInstruction,
        ExitInfo::Io {
            qual,
            out_value: out,
        },
    )
}

fn outb(port: u16, v: u8) -> Step {
    io(port, 1, Some(v as u32))
}

fn with_if(mut s: Step, on: bool) -> Step {
    s.interruptible = Some(on);
    s
}

fn machine() -> Machine {
    common::machine("hello")
}

fn live(m: &Machine, out: &Shared) -> LiveEnvironment {
    common::live(m, Box::new(out.clone()), None, None)
}

fn run(
    steps: Vec<Step>,
    env: &mut dyn Environment,
    m: &Machine,
) -> (Scripted, vm_monitor::RunOutcome) {
    let mut v = Scripted::new(steps);
    let limits = RunLimits {
        wall: Some(Duration::from_secs(20)),
        exits: None,
        exit_synchronous: false,
    };
    let out = m.run(&mut v, env, &limits).expect("run");
    // A bad fetch stops the machine at the faulting instruction, unretired.
    if !matches!(out.stop, StopReason::FetchFromNonRam { .. }) {
        assert!(v.pending.is_none(), "every instruction exit completed");
    }
    (v, out)
}

/// PIC init (vectors 0x20/0x28), all unmasked except what `mask` says.
fn pic_init(mask: u8) -> Vec<Step> {
    [
        (0x20, 0x11),
        (0xa0, 0x11),
        (0x21, 0x20),
        (0xa1, 0x28),
        (0x21, 4),
        (0xa1, 2),
        (0x21, 1),
        (0xa1, 1),
        (0x21, mask),
        (0xa1, 0xff),
    ]
    .into_iter()
    .map(|(p, v)| outb(p, v))
    .collect()
}

#[test]
fn serial_cpuid_and_debug_exit() {
    let m = machine();
    let cap = Shared::default();
    let mut env = live(&m, &cap);
    let steps = vec![
        exit(
            ExitReason::Cpuid,
            ExitInfo::Cpuid {
                leaf: 0,
                subleaf: 0,
            },
        ),
        outb(0x3f8, b'h'),
        outb(0x3f8, b'i'),
        io(0x3fd, 1, None),
        io(0xf4, 1, Some(3)),
    ];
    let (v, out) = run(steps, &mut env, &m);
    assert_eq!(out.stop, StopReason::Exit(3));
    assert_eq!(out.exit_status(), 3);
    assert_eq!(cap.bytes(), b"hi");
    let Completion::Cpuid { ebx, .. } = v.completions[0] else {
        panic!("{:?}", v.completions[0])
    };
    assert_eq!(&ebx.to_le_bytes(), b"Genu");
    assert_eq!(v.completions[3], Completion::IoIn(0x60), "LSR: THR empty");
    assert_eq!(v.completions.len(), 5);
}

#[test]
fn timer_interrupt_wakes_a_halted_guest() {
    let m = machine();
    let cap = Shared::default();
    let mut env = live(&m, &cap);
    let mut steps = pic_init(0xfe);
    // PIT channel 0, rate generator, ~1 kHz.
    steps.extend([outb(0x43, 0x34), outb(0x40, 0xa9), outb(0x40, 0x04)]);
    steps.push(with_if(exit(ExitReason::Hlt, ExitInfo::None), true));
    steps.push(outb(0x20, 0x20));
    steps.push(io(0xf4, 1, Some(0)));
    let (v, out) = run(steps, &mut env, &m);
    assert_eq!(out.stop, StopReason::Exit(0));
    assert_eq!(v.injected, vec![Event::ExternalInterrupt(0x20)]);
    assert_eq!(out.interrupts, 1);
}

#[test]
fn pending_interrupt_waits_for_an_interrupt_window() {
    let m = machine();
    let cap = Shared::default();
    let mut env = live(&m, &cap);
    let mut steps = pic_init(0xef);
    steps.push(outb(0x3f9, 2)); // THR-empty interrupt: IRQ 4 at once
    // IF = 0: the machine must ask for a window instead of injecting.
    steps.push(with_if(
        exit(ExitReason::ExternalInterrupt, ExitInfo::None),
        false,
    ));
    steps.push(with_if(
        exit(ExitReason::InterruptWindow, ExitInfo::None),
        true,
    ));
    steps.push(io(0xf4, 1, Some(0)));
    let mut v = Scripted::new(steps);
    v.interruptible = false;
    let out = m.run(&mut v, &mut env, &RunLimits::default()).expect("run");
    assert_eq!(out.stop, StopReason::Exit(0));
    assert!(v.window_seen, "interrupt-window exiting was requested");
    assert_eq!(v.injected, vec![Event::ExternalInterrupt(0x24)]);
}

#[test]
fn halts_that_can_never_end_stop_the_machine() {
    let m = machine();
    let cap = Shared::default();
    let mut env = live(&m, &cap);
    let (_, out) = run(
        vec![with_if(exit(ExitReason::Hlt, ExitInfo::None), false)],
        &mut env,
        &m,
    );
    assert!(matches!(
        out.stop,
        StopReason::HaltedWithInterruptsDisabled { .. }
    ));
    let (_, out) = run(
        vec![with_if(exit(ExitReason::Hlt, ExitInfo::None), true)],
        &mut env,
        &m,
    );
    assert!(
        matches!(out.stop, StopReason::NothingToWake { .. }),
        "{}",
        out.stop
    );
}

#[test]
fn faults_and_bad_accesses_have_clear_reasons() {
    let m = machine();
    let cap = Shared::default();
    let mut env = live(&m, &cap);
    let (_, out) = run(
        vec![exit(ExitReason::TripleFault, ExitInfo::None)],
        &mut env,
        &m,
    );
    assert_eq!(out.stop, StopReason::TripleFault { rip: 0x10_0000 });
    assert!(out.stop.to_string().contains("triple fault"));

    let mmio = |write: Option<[u8; 16]>, fetch: bool| {
        exit(
            ExitReason::EptViolation,
            ExitInfo::Mmio {
                gpa: 0xfee0_0000,
                linear: None,
                size: 4,
                write_data: write,
                fetch,
            },
        )
    };
    let steps = vec![
        mmio(None, false),
        mmio(Some([1; 16]), false),
        exit(ExitReason::Rdrand, ExitInfo::Random { size: 4 }),
        exit(
            ExitReason::Wrmsr,
            ExitInfo::Wrmsr {
                index: 0x1234,
                value: 1,
            },
        ),
        exit(ExitReason::Rdtsc, ExitInfo::None),
        mmio(None, true),
    ];
    let (v, out) = run(steps, &mut env, &m);
    assert!(out.stop.to_string().contains("bad access"), "{}", out.stop);
    assert_eq!(v.completions[0], Completion::MmioRead([0xff; 16]));
    assert_eq!(v.completions[1], Completion::Retire);
    assert!(
        matches!(v.completions[2], Completion::Random { value, valid: true } if value <= u32::MAX as u64)
    );
    assert_eq!(v.completions[3], Completion::Fault(Exception::GP0));
    assert!(matches!(v.completions[4], Completion::Rdtsc(_)));
}

#[test]
fn limits_stop_a_guest_that_never_ends() {
    let m = machine();
    let cap = Shared::default();
    let mut env = live(&m, &cap);
    let steps = (0..1000)
        .map(|_| exit(ExitReason::ExternalInterrupt, ExitInfo::None))
        .collect();
    let mut v = Scripted::new(steps);
    let out = m
        .run(
            &mut v,
            &mut env,
            &RunLimits {
                wall: None,
                exits: Some(10),
                exit_synchronous: false,
            },
        )
        .unwrap();
    assert_eq!(out.stop, StopReason::ExitLimit(10));
    assert_eq!(out.exit_status(), 255);
}

#[test]
fn every_input_crosses_the_environment() {
    let m = machine();
    let cap = Shared::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let mut env = Tap::new(live(&m, &cap), move |i: &Input| {
        s2.lock().unwrap().push(i.clone())
    });
    let mut steps = pic_init(0xef);
    steps.push(outb(0x3f9, 2));
    steps.push(exit(ExitReason::ExternalInterrupt, ExitInfo::None));
    steps.push(io(0x21, 1, None));
    steps.push(exit(ExitReason::Rdtsc, ExitInfo::None));
    steps.push(io(0xf4, 1, Some(0)));
    let (_, out) = run(steps, &mut env, &m);
    assert_eq!(out.stop, StopReason::Exit(0));
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|i| matches!(i, Input::Async(vm_monitor::AsyncInput::Interrupt(0x24), _)))
    );
    assert!(seen.iter().any(|i| matches!(
        i,
        Input::PortIn {
            port: 0x21,
            value: 0xef,
            ..
        }
    )));
    assert!(seen.iter().any(|i| matches!(i, Input::Tsc(_))));
}

#[test]
fn refuses_a_kernel_that_is_not_pvh() {
    let err = Machine::new(
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0",
        &MachineConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let err = Machine::new(b"#!/bin/sh\n", &MachineConfig::default()).unwrap_err();
    assert!(err.to_string().contains("not an ELF"), "{err}");
}

/// An environment that always has an interrupt to deliver.
struct AlwaysInterrupt;

impl Environment for AlwaysInterrupt {
    fn port_in(&mut self, _: u16, _: u8) -> Result<u32, vm_monitor::EnvError> {
        Ok(0)
    }
    fn port_out(&mut self, _: u16, _: u8, _: u32) -> Result<(), vm_monitor::EnvError> {
        Ok(())
    }
    fn mmio_read(&mut self, _: u64, _: u8) -> Result<[u8; 16], vm_monitor::EnvError> {
        Ok([0; 16])
    }
    fn mmio_write(&mut self, _: u64, _: &[u8]) -> Result<(), vm_monitor::EnvError> {
        Ok(())
    }
    fn tsc(&mut self) -> Result<u64, vm_monitor::EnvError> {
        Ok(0)
    }
    fn random(
        &mut self,
        _: vm_monitor::RandomKind,
        _: u8,
    ) -> Result<Option<u64>, vm_monitor::EnvError> {
        Ok(None)
    }
    fn next_async(
        &mut self,
        at: &vm_monitor::AsyncPoint<'_>,
    ) -> Result<Option<vm_monitor::AsyncInput>, vm_monitor::EnvError> {
        Ok(at
            .interruptible
            .then_some(vm_monitor::AsyncInput::Interrupt(0x30)))
    }
    fn interrupt_waiting(&mut self) -> Result<bool, vm_monitor::EnvError> {
        Ok(true)
    }
    fn idle(
        &mut self,
        _: Option<std::time::Instant>,
    ) -> Result<vm_monitor::Idle, vm_monitor::EnvError> {
        Ok(vm_monitor::Idle::Woke)
    }
    fn next_deadline(&mut self) -> Option<std::time::Instant> {
        None
    }
}

#[test]
fn exit_synchronous_runs_deliver_only_after_instruction_exits() {
    let m = machine();
    let script = || {
        vec![
            exit(ExitReason::ExternalInterrupt, ExitInfo::None),
            exit(ExitReason::ExternalInterrupt, ExitInfo::None),
            exit(
                ExitReason::Cpuid,
                ExitInfo::Cpuid {
                    leaf: 0,
                    subleaf: 0,
                },
            ),
            io(0xf4, 1, Some(0)),
        ]
    };
    // Live policy: before every entry.
    let mut v = Scripted::new(script());
    m.run(&mut v, &mut AlwaysInterrupt, &RunLimits::default())
        .unwrap();
    assert_eq!(v.injected.len(), 4);
    // Exit-synchronous: before the first entry and after the CPUID exit
    // only, never after the two kicks.
    let mut v = Scripted::new(script());
    let limits = RunLimits {
        exit_synchronous: true,
        ..RunLimits::default()
    };
    m.run(&mut v, &mut AlwaysInterrupt, &limits).unwrap();
    assert_eq!(v.injected.len(), 2);
    assert!(!v.window_seen, "no window requested at a kick either");
}
