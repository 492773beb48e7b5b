//! The exit-synchronous clock: a vCPU seen as a backend without exact
//! counters, whose asynchronous events are timed by a count of exits that
//! every backend produces alike.
//!
//! Where no precise retired-branch counter exists (KVM without a usable PMU,
//! as on the nested KVM of the machines here), asynchronous events can only
//! be delivered right after exits the guest causes deterministically, and
//! their timepoint is the number of such exits so far
//! ([`crate::CounterMode::ExitSynchronous`]). For a recording made on one
//! backend to replay on another, both must count the same exits for the
//! same guest execution. Backends differ in what exits at all: the soft vCPU
//! exits on CPUID, RDTSC/RDTSCP and RDRAND/RDSEED, KVM answers CPUID in the
//! kernel and cannot trap the others; MSR exits depend on filters the host
//! may lack. What every backend must hand to the monitor is the **device
//! boundary**: port I/O (every element of a string I/O instruction), MMIO
//! accesses and HLT. [`ExitClocked`] counts exactly those, and hides the
//! wrapped vCPU's exact counters so that state checks and digests hash the
//! same things on every backend.

use std::sync::Arc;

use crate::{
    Completion, Event, ExecControls, ExitReason, FpuState, Kicker, PmuBank, Regs, RetiredCounts,
    SpecialRegs, Vcpu, VcpuError, VmExit,
};

/// A vCPU whose clock is the count of device-boundary exits (port I/O, MMIO,
/// HLT), with its exact counters (if any) hidden: the form in which every
/// backend records and replays in exit-synchronous mode.
pub struct ExitClocked<V> {
    inner: V,
    clock: u64,
}

impl<V: Vcpu> ExitClocked<V> {
    /// Wrap `inner`; the clock starts at 0.
    pub fn new(inner: V) -> Self {
        ExitClocked { inner, clock: 0 }
    }

    /// Whether an exit of this kind advances the clock: the exits every
    /// backend produces for the same guest instruction.
    pub fn ticks(reason: ExitReason) -> bool {
        matches!(
            reason,
            ExitReason::IoInstruction | ExitReason::EptViolation | ExitReason::Hlt
        )
    }

    /// The wrapped vCPU.
    pub fn inner(&self) -> &V {
        &self.inner
    }

    /// The wrapped vCPU, mutably (changing its state behind the clock's back
    /// is the caller's responsibility).
    pub fn inner_mut(&mut self) -> &mut V {
        &mut self.inner
    }

    /// The exact counts of the wrapped vCPU, for reports only (never part of
    /// a timepoint or a check: other backends cannot reproduce them).
    pub fn inner_retired(&self) -> Option<RetiredCounts> {
        self.inner.retired()
    }
}

impl<V: Vcpu> Vcpu for ExitClocked<V> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn run(&mut self) -> Result<VmExit, VcpuError> {
        let exit = self.inner.run()?;
        if Self::ticks(exit.reason) {
            self.clock += 1;
        }
        Ok(exit)
    }
    fn complete(&mut self, completion: Completion) -> Result<(), VcpuError> {
        self.inner.complete(completion)
    }
    fn regs(&self) -> Result<Regs, VcpuError> {
        self.inner.regs()
    }
    fn set_regs(&mut self, regs: &Regs) -> Result<(), VcpuError> {
        self.inner.set_regs(regs)
    }
    fn special_regs(&self) -> Result<SpecialRegs, VcpuError> {
        self.inner.special_regs()
    }
    fn set_special_regs(&mut self, sregs: &SpecialRegs) -> Result<(), VcpuError> {
        self.inner.set_special_regs(sregs)
    }
    fn fpu(&self) -> Result<FpuState, VcpuError> {
        self.inner.fpu()
    }
    fn set_fpu(&mut self, fpu: &FpuState) -> Result<(), VcpuError> {
        self.inner.set_fpu(fpu)
    }
    fn msr(&mut self, index: u32) -> Result<u64, VcpuError> {
        self.inner.msr(index)
    }
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError> {
        self.inner.set_msr(index, value)
    }
    fn controls(&self) -> &ExecControls {
        self.inner.controls()
    }
    fn set_controls(&mut self, controls: ExecControls) -> Result<(), VcpuError> {
        self.inner.set_controls(controls)
    }
    fn interruptible(&self) -> Result<bool, VcpuError> {
        self.inner.interruptible()
    }
    fn inject(&mut self, event: Event) -> Result<(), VcpuError> {
        self.inner.inject(event)
    }
    fn kicker(&self) -> Arc<dyn Kicker> {
        self.inner.kicker()
    }
    /// Hidden: timepoints, state checks and digests must not depend on
    /// counts another backend cannot reproduce.
    fn retired(&self) -> Option<RetiredCounts> {
        None
    }
    /// Hidden: nothing lands on a counter in this mode.
    fn host_pmu(&mut self) -> Option<&mut dyn PmuBank> {
        None
    }
    fn default_controls(&self) -> ExecControls {
        self.inner.default_controls()
    }
    fn deterministic_exits(&self) -> Option<u64> {
        Some(self.clock)
    }
    fn host_wrote_memory(&mut self, gpa: u64, len: u64) {
        self.inner.host_wrote_memory(gpa, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CounterMode, ExitInfo};

    /// A scripted vCPU: hands out the given exit reasons in turn.
    struct Script {
        exits: Vec<ExitReason>,
        controls: ExecControls,
    }

    struct NoKick;
    impl Kicker for NoKick {
        fn kick(&self) {}
    }

    impl Vcpu for Script {
        fn backend(&self) -> &'static str {
            "script"
        }
        fn run(&mut self) -> Result<VmExit, VcpuError> {
            let reason = self.exits.remove(0);
            Ok(VmExit {
                reason,
                qualification: 0,
                rip: 0,
                instruction_len: 1,
                info: ExitInfo::None,
            })
        }
        fn complete(&mut self, _: Completion) -> Result<(), VcpuError> {
            Ok(())
        }
        fn regs(&self) -> Result<Regs, VcpuError> {
            Ok(Regs::default())
        }
        fn set_regs(&mut self, _: &Regs) -> Result<(), VcpuError> {
            Ok(())
        }
        fn special_regs(&self) -> Result<SpecialRegs, VcpuError> {
            Ok(SpecialRegs::default())
        }
        fn set_special_regs(&mut self, _: &SpecialRegs) -> Result<(), VcpuError> {
            Ok(())
        }
        fn fpu(&self) -> Result<FpuState, VcpuError> {
            Ok(FpuState::default())
        }
        fn set_fpu(&mut self, _: &FpuState) -> Result<(), VcpuError> {
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
            self.controls = c;
            Ok(())
        }
        fn interruptible(&self) -> Result<bool, VcpuError> {
            Ok(true)
        }
        fn inject(&mut self, _: Event) -> Result<(), VcpuError> {
            Ok(())
        }
        fn kicker(&self) -> Arc<dyn Kicker> {
            Arc::new(NoKick)
        }
        fn retired(&self) -> Option<RetiredCounts> {
            Some(RetiredCounts {
                instructions: 7,
                branches: 3,
            })
        }
        fn host_pmu(&mut self) -> Option<&mut dyn PmuBank> {
            None
        }
    }

    #[test]
    fn counts_only_device_boundary_exits_and_hides_exact_counts() {
        use ExitReason::*;
        let script = Script {
            exits: vec![
                Cpuid,
                IoInstruction,
                Rdtsc,
                ExternalInterrupt,
                EptViolation,
                InterruptWindow,
                Rdrand,
                Rdmsr,
                Hlt,
                MonitorTrapFlag,
            ],
            controls: ExecControls::default(),
        };
        let mut v = ExitClocked::new(script);
        assert_eq!(CounterMode::of(&v), Some(CounterMode::ExitSynchronous));
        let mut clock = Vec::new();
        for _ in 0..10 {
            v.run().unwrap();
            clock.push(v.deterministic_exits().unwrap());
        }
        assert_eq!(clock, [0, 1, 1, 1, 2, 2, 2, 2, 3, 3]);
        assert_eq!(v.retired(), None);
        assert!(v.host_pmu().is_none());
        assert_eq!(v.inner_retired().map(|r| r.branches), Some(3));
    }
}
