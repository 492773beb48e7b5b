//! Component entries this binary provides itself.

use motion_ipc::{ComponentContext, ComponentResult};
use pmu_api::{Pmu, PmuError};

/// The `pmu-driver` component of the `vmm` domain.
///
/// The soft vCPU's host counters live inside the vCPU and the vm-monitor
/// drives them in-process through `vcpu::Vcpu::host_pmu` (the landing code
/// of `pmu-driver` the library), so this service has no counters of its own
/// to offer: it answers every request with `Unsupported`, saying so, rather
/// than pretending. A hardware (perf_event) service for the kvm backend is
/// the pmu-driver's to provide.
pub fn pmu_driver_entry(mut ctx: ComponentContext) -> ComponentResult {
    let servers = ctx.servers::<Pmu>()?;
    std::thread::scope(|s| {
        for mut server in servers {
            s.spawn(move || {
                let _ = server.serve(|_| {
                    Err(PmuError::Unsupported {
                        what: "this build's pmu-driver service has no counters: the soft vCPU's \
                               host counters are driven in-process by the vm-monitor"
                            .into(),
                    })
                });
            });
        }
    });
    Ok(())
}
