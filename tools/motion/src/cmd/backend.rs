//! Building a vCPU of the chosen backend over a machine's memory.

use anyhow::Context;
use vcpu::{ExecControls, Vcpu};
use vm_monitor::Machine;

use crate::cmd::run::Backend;

/// Build a vCPU of `backend` over `machine`'s memory (with its CPUID policy)
/// and call `f` with it and the execution controls to run it with: the
/// recording controls the backend can honour.
pub fn with_vcpu<T>(
    backend: Backend,
    machine: &Machine,
    f: impl FnOnce(&mut dyn Vcpu, ExecControls) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match backend {
        Backend::Soft => {
            let mut v = vcpu_soft::SoftVcpu::new(machine.memory().clone());
            let controls = v.default_controls();
            f(&mut v, controls)
        }
        Backend::Kvm => {
            let vm = vcpu_kvm::KvmVm::new(machine.memory().clone()).context("the kvm backend")?;
            let mut v = vm
                .create_vcpu(0, &machine.cpuid().entries)
                .context("the kvm backend: creating the vCPU")?;
            let controls = v.default_controls();
            f(&mut v, controls)
        }
    }
}
