//! Building a vCPU of the chosen backend over a machine's memory.

use vcpu::{ExecControls, Vcpu};
use vm_memory::GuestMemoryMmap;

use crate::cmd::run::Backend;

/// Build a vCPU of `backend` over guest memory `mem` and call `f` with it and
/// the execution controls to run it with.
pub fn with_vcpu<T>(
    backend: Backend,
    _mem: &GuestMemoryMmap,
    _f: impl FnOnce(&mut dyn Vcpu, ExecControls) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let name = match backend {
        Backend::Soft => "soft",
        Backend::Kvm => "kvm",
    };
    anyhow::bail!("the {name} backend is not part of this build yet")
}
