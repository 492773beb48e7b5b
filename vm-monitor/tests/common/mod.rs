//! Set-up shared by the vm-monitor integration tests (`mod common;`):
//! booting a bundled guest, capturing its serial output, and running a
//! recording or a replay of it in this process. Each test file uses only
//! some of these.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use motion_records::Record;
use vcpu::{CounterMode, ExitClocked, Vcpu};
use vcpu_soft::SoftVcpu;
use vm_monitor::devices::serial::SerialSink;
use vm_monitor::devices::virtio_blk::DiskImage;
use vm_monitor::record::{RecordOptions, Recordable, RecordingEnv};
use vm_monitor::replay::{ReplayEnd, ReplayEnv, ReplayOptions, VecSource};
use vm_monitor::{
    InputFeed, LiveConfig, LiveEnvironment, Machine, MachineConfig, MachineError, RunLimits,
    RunOutcome,
};

/// A serial sink whose bytes the test reads back after the run.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bundled guest `guest` loaded into a machine of `config`.
pub fn machine_with(guest: &str, config: &MachineConfig) -> Machine {
    let elf = guest_images::bytes(guest).unwrap();
    Machine::new(elf, config).unwrap()
}

/// The bundled guest `guest` loaded into a default machine.
pub fn machine(guest: &str) -> Machine {
    machine_with(guest, &MachineConfig::default())
}

/// A soft vCPU over `machine`, reset to its boot state with the default
/// controls.
pub fn soft_vcpu(machine: &Machine) -> SoftVcpu {
    let mut v = SoftVcpu::new(machine.memory().clone());
    let c = v.default_controls();
    machine.reset_vcpu(&mut v, c).unwrap();
    v
}

/// The soft vCPU seen as a backend without exact counters (as KVM here):
/// no retired counts, no host PMU, the exit clock of `ExitClocked`.
pub fn exit_sync_vcpu(machine: &Machine) -> ExitClocked<SoftVcpu> {
    let mut v = ExitClocked::new(SoftVcpu::new(machine.memory().clone()));
    let c = v.default_controls();
    machine.reset_vcpu(&mut v, c).unwrap();
    v
}

/// The live devices of `machine`: serial output to `serial_out`, serial
/// input `input`, virtio-blk backed by `disk`.
pub fn live(
    machine: &Machine,
    serial_out: SerialSink,
    input: Option<&[u8]>,
    disk: Option<DiskImage>,
) -> LiveEnvironment {
    LiveEnvironment::new(
        machine.memory().clone(),
        LiveConfig {
            serial_out,
            input: input.map(InputFeed::from_bytes),
            disk,
        },
    )
}

/// Record options: a digest every `digest_every` records, vCPU 0.
pub fn every(digest_every: u64) -> RecordOptions {
    RecordOptions {
        digest_every,
        vcpu_index: 0,
    }
}

/// Run `machine` on `vcpu` under `limits`, recording what `inner` supplies
/// into memory. Returns how the run ended (for the test to judge) and the
/// records, which `finish` must produce either way.
pub fn record_run<E: Recordable>(
    machine: &Machine,
    vcpu: &mut dyn Vcpu,
    inner: E,
    opts: RecordOptions,
    limits: &RunLimits,
) -> (Result<RunOutcome, MachineError>, Vec<Record>) {
    let mut env = RecordingEnv::new(
        inner,
        Vec::new(),
        machine.memory().clone(),
        machine.ram_size(),
        opts,
    );
    let result = machine.run(vcpu, &mut env, limits);
    let (_, records, _) = env.finish(vcpu, &result).unwrap();
    (result, records)
}

/// A replay of `records` on `machine` in counter `mode` with landing
/// margin `margin`, the guest's serial output going to `output`.
pub fn replay_env(
    machine: &Machine,
    records: Vec<Record>,
    mode: CounterMode,
    margin: u64,
    output: SerialSink,
) -> ReplayEnv<VecSource> {
    ReplayEnv::new(
        VecSource::new(records),
        machine.memory().clone(),
        machine.ram_size(),
        ReplayOptions {
            vcpu_index: 0,
            mode,
            margin,
        },
        output,
    )
}

/// Run the replay `env` on `machine` and `vcpu` under `limits`: its verdict.
pub fn replay_run(
    machine: &Machine,
    vcpu: &mut dyn Vcpu,
    mut env: ReplayEnv<VecSource>,
    limits: &RunLimits,
) -> ReplayEnd {
    let result = machine.run(vcpu, &mut env, limits);
    env.finish(vcpu, result).unwrap()
}
