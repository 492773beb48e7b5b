//! Instructions a backend cannot trap (stock KVM: RDTSC, RDRAND, RDSEED):
//! the recording marks them in its header, and a replay of a guest that
//! executed one reports the divergence instead of hiding it.
//!
//! No TSC- or RDRAND-reading guest runs on the nested KVM of the machines
//! here (the `entropy` guest's ring-0 code meets KVM's emulator), so the
//! mechanism is tested with the soft vCPU made to behave like KVM: the
//! `Untrapping` wrapper answers RDTSC/RDRAND/RDSEED itself from the host,
//! as the CPU does under KVM, and never shows those exits to the monitor.
//! Its controls report them as not exiting, which is what the recorder
//! reads to fill the header's `untrapped` list.

mod common;

use std::sync::Arc;

use common::{Shared, every, live, record_run, replay_env, replay_run};
use motion_records::{Record, Untrapped};
use vcpu::{Completion, CounterMode, ExecControls, ExitClocked, ExitReason, Vcpu};
use vcpu_soft::SoftVcpu;
use vm_monitor::replay::ReplayEnd;
use vm_monitor::{Machine, RunLimits};

/// The soft vCPU as KVM runs a guest: RDTSC, RDTSCP, RDRAND and RDSEED
/// execute with host values and never reach the monitor.
struct Untrapping {
    inner: SoftVcpu,
    /// The controls as the monitor set them (what it believes).
    shown: ExecControls,
}

fn host_tsc() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Vcpu for Untrapping {
    fn backend(&self) -> &'static str {
        "untrapping-soft"
    }
    fn run(&mut self) -> Result<vcpu::VmExit, vcpu::VcpuError> {
        loop {
            let exit = self.inner.run()?;
            let answer = match exit.reason {
                ExitReason::Rdtsc => Completion::Rdtsc(host_tsc()),
                ExitReason::Rdtscp => Completion::Rdtscp {
                    tsc: host_tsc(),
                    aux: 0,
                },
                ExitReason::Rdrand | ExitReason::Rdseed => Completion::Random {
                    value: rand::random(),
                    valid: true,
                },
                _ => return Ok(exit),
            };
            self.inner.complete(answer)?;
        }
    }
    fn complete(&mut self, c: Completion) -> Result<(), vcpu::VcpuError> {
        self.inner.complete(c)
    }
    fn regs(&self) -> Result<vcpu::Regs, vcpu::VcpuError> {
        self.inner.regs()
    }
    fn set_regs(&mut self, r: &vcpu::Regs) -> Result<(), vcpu::VcpuError> {
        self.inner.set_regs(r)
    }
    fn special_regs(&self) -> Result<vcpu::SpecialRegs, vcpu::VcpuError> {
        self.inner.special_regs()
    }
    fn set_special_regs(&mut self, s: &vcpu::SpecialRegs) -> Result<(), vcpu::VcpuError> {
        self.inner.set_special_regs(s)
    }
    fn fpu(&self) -> Result<vcpu::FpuState, vcpu::VcpuError> {
        self.inner.fpu()
    }
    fn set_fpu(&mut self, f: &vcpu::FpuState) -> Result<(), vcpu::VcpuError> {
        self.inner.set_fpu(f)
    }
    fn msr(&mut self, i: u32) -> Result<u64, vcpu::VcpuError> {
        self.inner.msr(i)
    }
    fn set_msr(&mut self, i: u32, v: u64) -> Result<(), vcpu::VcpuError> {
        self.inner.set_msr(i, v)
    }
    fn controls(&self) -> &ExecControls {
        &self.shown
    }
    fn set_controls(&mut self, c: ExecControls) -> Result<(), vcpu::VcpuError> {
        // The inner vCPU must exit on them so that this wrapper can stand
        // in for the hardware executing them.
        let inner = ExecControls {
            rdtsc_exiting: true,
            rdrand_exiting: true,
            rdseed_exiting: true,
            ..c.clone()
        };
        self.inner.set_controls(inner)?;
        self.shown = c;
        Ok(())
    }
    fn interruptible(&self) -> Result<bool, vcpu::VcpuError> {
        self.inner.interruptible()
    }
    fn inject(&mut self, e: vcpu::Event) -> Result<(), vcpu::VcpuError> {
        self.inner.inject(e)
    }
    fn kicker(&self) -> Arc<dyn vcpu::Kicker> {
        self.inner.kicker()
    }
    fn retired(&self) -> Option<vcpu::RetiredCounts> {
        self.inner.retired()
    }
    fn host_pmu(&mut self) -> Option<&mut dyn vcpu::PmuBank> {
        self.inner.host_pmu()
    }
    fn default_controls(&self) -> ExecControls {
        ExecControls {
            rdtsc_exiting: false,
            rdrand_exiting: false,
            rdseed_exiting: false,
            ..self.inner.default_controls()
        }
    }
    fn host_wrote_memory(&mut self, gpa: u64, len: u64) {
        self.inner.host_wrote_memory(gpa, len)
    }
}

/// A vCPU as `motion` builds it for exit-synchronous sessions, over
/// `machine`: soft, or soft behaving like KVM.
fn vcpu(machine: &Machine, untrapping: bool) -> Box<dyn Vcpu> {
    let soft = SoftVcpu::new(machine.memory().clone());
    let mut v: Box<dyn Vcpu> = if untrapping {
        let shown = soft.controls().clone();
        Box::new(ExitClocked::new(Untrapping { inner: soft, shown }))
    } else {
        Box::new(ExitClocked::new(soft))
    };
    let c = v.default_controls();
    machine.reset_vcpu(&mut *v, c).unwrap();
    v
}

const LIMITS: RunLimits = RunLimits {
    wall: None,
    exits: None,
    exit_synchronous: true,
};

/// Record `guest` on the KVM-like vCPU: the header's untrapped list (as the
/// monitor component fills it) and the records.
fn record(guest: &str, input: Option<&[u8]>) -> (Vec<Untrapped>, Vec<Record>, Vec<u8>) {
    let machine = common::machine(guest);
    let mut v = vcpu(&machine, true);
    let untrapped = Untrapped::of_controls(v.controls());
    let out = Shared::default();
    let live = live(&machine, Box::new(out.clone()), input, None);
    let (result, records) = record_run(&machine, &mut *v, live, every(50), &LIMITS);
    result.unwrap();
    (untrapped, records, out.bytes())
}

fn replay(
    guest: &str,
    untrapped: &[Untrapped],
    records: Vec<Record>,
    untrapping: bool,
) -> ReplayEnd {
    let machine = common::machine(guest);
    let mut v = vcpu(&machine, untrapping);
    let env = replay_env(
        &machine,
        records,
        CounterMode::ExitSynchronous,
        0,
        Box::new(std::io::sink()),
    )
    .with_untrapped("kvm", untrapped.to_vec());
    replay_run(&machine, &mut *v, env, &LIMITS)
}

/// `entropy` reads the TSC, RDRAND and RDSEED. Recorded where they are not
/// trapped, the log holds none of their values and says so in its header;
/// replaying it where they are not trapped either (as on kvm) feeds the
/// guest other host values, and a state check or digest reports the
/// divergence; replaying it where they are trapped (soft) stops at the
/// first such instruction and says the recording could not trap it.
#[test]
fn a_guest_reading_untrapped_instructions_diverges_and_says_why() {
    let (untrapped, records, _) = record("entropy", None);
    assert_eq!(
        untrapped,
        [Untrapped::Rdtsc, Untrapped::Rdrand, Untrapped::Rdseed]
    );
    assert!(
        !records
            .iter()
            .any(|r| matches!(r, Record::Rdtsc(_) | Record::Rdrand(_) | Record::Rdseed(_))),
        "untrapped values cannot be in the log"
    );

    let end = replay("entropy", &untrapped, records.clone(), true);
    let ReplayEnd::Diverged(d) = end else {
        panic!("a replay with other TSC/RDRAND values verified: {end:?}");
    };
    let kind = records
        .get(d.record as usize)
        .map(|r| r.record_type().name());
    eprintln!(
        "like kvm: diverged at record {} ({kind:?}): {}",
        d.record, d.what
    );
    assert!(
        matches!(kind, Some("state-check" | "digest")),
        "the checks must catch it: record {} is {kind:?}: {}",
        d.record,
        d.what
    );
    assert!(
        d.what.contains("could not trap rdtsc, rdrand, rdseed"),
        "{}",
        d.what
    );

    let end = replay("entropy", &untrapped, records, false);
    let ReplayEnd::Diverged(d) = end else {
        panic!("a soft replay of untrapped values verified: {end:?}");
    };
    eprintln!("on soft: diverged at record {}: {}", d.record, d.what);
    assert!(
        d.what.contains("executes RDTSC")
            || d.what.contains("executes RDRAND")
            || d.what.contains("executes RDSEED"),
        "{}",
        d.what
    );
    assert!(d.what.contains("could not trap"), "{}", d.what);
}

/// The control: a guest that executes none of them replays exactly from
/// the same kind of recording, on both.
#[test]
fn a_guest_without_them_replays_exactly_from_such_a_recording() {
    let input = b"one\ntwo two\nquit\n";
    let (untrapped, records, _) = record("serial-echo", Some(input));
    assert!(!untrapped.is_empty());
    for untrapping in [true, false] {
        let end = replay("serial-echo", &untrapped, records.clone(), untrapping);
        assert!(
            matches!(end, ReplayEnd::Verified { .. }),
            "untrapping {untrapping}: {end:?}"
        );
    }
}
