//! The `vm-monitor` component: serves `VmControl` (to the front end and to
//! the replay-controller) and records over `LogAppend`, inside the `vmm`
//! domain's sandbox.
//!
//! Threads of a session:
//!
//! * **vCPU thread**: the machine loop with the [`RecordingEnv`](crate::record::RecordingEnv) or
//!   [`ReplayEnv`](crate::replay::ReplayEnv). Recording only queues records (a bounded channel of
//!   ready-made [`Record`](motion_records::Record)s) and never waits for the store.
//! * **log thread** (recording): encodes records, batches them through
//!   [`Appender`](log_append_api::Appender) (pipelined, acknowledged), flushes a partial batch after a
//!   few quiet milliseconds, seals the log at the end. A record counts as
//!   acknowledged only once the store says it is durable.
//! * **serving threads**: one per `VmControl` channel; requests only touch
//!   the session's shared counters, queues and flags.
//!
//! Replay records arrive in batches ([`Request::Feed`]); the vCPU thread
//! takes them from a queue as it needs them, so a batch costs one round trip,
//! not one per exit.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use log_append_api::LogAppend;
use motion_ipc::{Client, ComponentContext, ComponentResult};
use motion_records::{Hash32, Untrapped};
use vcpu::{CounterMode, ExitClocked, Kicker, Vcpu};
use vcpu_kvm::KvmVm;
use vcpu_soft::SoftVcpu;
use vm_control_api::{Outcome, Reply, Request, SessionState, Status, VmControl, VmControlError};

use crate::machine::Machine;
use crate::replay::ReplayProgress;

mod record;
mod replay;

use record::start_recording;
use replay::{FeedMsg, feed_replay, load_replay};

/// Most serial output bytes one status carries (the rest waits).
const OUTPUT_PER_STATUS: usize = 64 * 1024;

type VmResult<T> = Result<T, VmControlError>;

fn load_err(what: impl std::fmt::Display) -> VmControlError {
    VmControlError::Load {
        what: what.to_string(),
    }
}

/// Counters and output of a session, shared by its threads.
#[derive(Default)]
struct Shared {
    records: AtomicU64,
    durable: AtomicU64,
    instructions: AtomicU64,
    exits: AtomicU64,
    checks: AtomicU64,
    digests: AtomicU64,
    landings: AtomicU64,
    session_ns: AtomicU64,
    last_digest: Mutex<Option<(u64, Hash32)>>,
    output: Mutex<Vec<u8>>,
    outcome: Mutex<Option<Outcome>>,
    /// Bumped when the replay wants records or the session ends.
    changed: Mutex<u64>,
    cv: Condvar,
    /// Live counters of the vCPU thread's environment.
    live_records: std::sync::OnceLock<Arc<ReplayProgress>>,
    live_instructions: std::sync::OnceLock<Arc<AtomicU64>>,
    live_exits: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl Shared {
    fn bump(&self) {
        *self.changed.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }

    fn finish(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.bump();
    }

    fn finished(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn records(&self) -> u64 {
        match self.live_records.get() {
            Some(p) if !self.finished() => p.records.load(Ordering::Relaxed),
            _ => self.records.load(Ordering::Relaxed),
        }
    }

    fn instructions(&self) -> u64 {
        if self.finished() {
            return self.instructions.load(Ordering::Relaxed);
        }
        match (self.live_records.get(), self.live_instructions.get()) {
            (Some(p), _) => p.instructions.load(Ordering::Relaxed),
            (None, Some(i)) => i.load(Ordering::Relaxed),
            _ => self.instructions.load(Ordering::Relaxed),
        }
    }

    fn exits(&self) -> u64 {
        if self.finished() {
            return self.exits.load(Ordering::Relaxed);
        }
        match (self.live_records.get(), self.live_exits.get()) {
            (Some(p), _) => p.exits.load(Ordering::Relaxed),
            (None, Some(i)) => i.load(Ordering::Relaxed),
            _ => self.exits.load(Ordering::Relaxed),
        }
    }

    fn status(&self, total: Option<u64>) -> Status {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let output = {
            let mut o = self.output.lock().unwrap_or_else(|p| p.into_inner());
            let n = o.len().min(OUTPUT_PER_STATUS);
            o.drain(..n).collect()
        };
        Status {
            state: Some(match outcome {
                Some(o) => SessionState::Finished(o),
                None => SessionState::Running,
            }),
            records: self.records(),
            durable: self.durable.load(Ordering::Relaxed),
            total,
            instructions: self.instructions(),
            exits: self.exits(),
            checks: self.checks.load(Ordering::Relaxed),
            digests: self.digests.load(Ordering::Relaxed),
            last_digest: *self.last_digest.lock().unwrap_or_else(|p| p.into_inner()),
            landings: self.landings.load(Ordering::Relaxed),
            session_ns: self.session_ns.load(Ordering::Relaxed),
            output,
        }
    }
}

/// The guest's serial output, kept for the next status.
struct SharedOutput(Arc<Shared>);

impl Write for SharedOutput {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Session {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    kicker: Arc<dyn Kicker>,
    input: Option<Sender<Vec<u8>>>,
    feed: Option<Sender<FeedMsg>>,
    /// A replay's machine, waiting for its first records.
    pending: Option<Box<dyn FnOnce() + Send>>,
    /// Records fed so far (replay).
    fed: u64,
    /// The last records have been fed (replay).
    fed_all: bool,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.input = None;
        self.feed = None;
        self.kicker.kick();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Monitor {
    guest: Option<PathBuf>,
    disk: Option<PathBuf>,
    log: Option<Client<LogAppend>>,
    session: Option<Session>,
}

/// The `vm-monitor` component's entry (register it in the runtime's
/// registry as `vm-monitor`).
pub fn component_entry(mut ctx: ComponentContext) -> ComponentResult {
    let monitor = Arc::new(Mutex::new(Monitor {
        guest: ctx.resource("guest-image").map(PathBuf::from),
        disk: ctx.resource("disk-image").map(PathBuf::from),
        log: ctx.client::<LogAppend>().ok(),
        session: None,
    }));
    let servers = ctx.servers::<VmControl>()?;
    let result = std::thread::scope(|s| {
        let handles: Vec<_> = servers
            .into_iter()
            .map(|mut server| {
                let m = Arc::clone(&monitor);
                s.spawn(move || server.serve(|req| handle(&m, req)))
            })
            .collect();
        let mut first: ComponentResult = Ok(());
        for h in handles {
            let r = match h.join() {
                Ok(r) => r.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                Err(_) => Err("vm-monitor: a serving thread panicked".into()),
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    });
    let session = monitor
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .session
        .take();
    if let Some(mut s) = session {
        if !s.shared.finished() {
            s.stop();
        }
        s.join();
    }
    result
}

fn lock(m: &Mutex<Monitor>) -> std::sync::MutexGuard<'_, Monitor> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn handle(m: &Mutex<Monitor>, req: Request) -> Result<Reply, VmControlError> {
    match req {
        Request::Record(setup) => start_recording(&mut lock(m), &setup),
        Request::SerialInput { bytes, end } => {
            let mut g = lock(m);
            let s = g.session.as_mut().ok_or(VmControlError::BadRequest {
                what: "no recording to give input to".into(),
            })?;
            if let Some(tx) = &s.input {
                // A closed channel only means the guest stopped reading.
                let _ = tx.send(bytes);
            }
            if end {
                s.input = None;
            }
            Ok(Reply::InputTaken)
        }
        Request::Progress => {
            let g = lock(m);
            Ok(Reply::Status(Box::new(match &g.session {
                Some(s) => s.shared.status(None),
                None => Status {
                    state: Some(SessionState::Idle),
                    ..Status::default()
                },
            })))
        }
        Request::Stop => {
            let mut g = lock(m);
            if let Some(s) = &mut g.session {
                if !s.shared.finished() {
                    s.stop();
                }
            }
            Ok(Reply::Status(Box::new(match &g.session {
                Some(s) => s.shared.status(None),
                None => Status::default(),
            })))
        }
        Request::LoadReplay(load) => load_replay(&mut lock(m), &load),
        Request::Feed(feed) => feed_replay(m, *feed),
        other => Err(VmControlError::Unsupported {
            what: format!("{other:?} (this monitor serves recording and replay sessions)"),
        }),
    }
}

fn busy(g: &Monitor) -> VmResult<()> {
    match &g.session {
        Some(s) if !s.shared.finished() => Err(VmControlError::Busy {
            what: "a recording or replay is running".into(),
        }),
        _ => Ok(()),
    }
}

fn read_guest(g: &Monitor) -> VmResult<(Vec<u8>, Hash32)> {
    let path = g
        .guest
        .as_ref()
        .ok_or_else(|| load_err("no guest image was granted to this domain"))?;
    let elf = std::fs::read(path)
        .map_err(|e| load_err(format!("cannot read guest image {}: {e}", path.display())))?;
    let hash = *blake3::hash(&elf).as_bytes();
    Ok((elf, hash))
}

fn disk_hash(g: &Monitor) -> VmResult<Option<Hash32>> {
    let Some(path) = &g.disk else {
        return Ok(None);
    };
    let f = std::fs::File::open(path)
        .map_err(|e| load_err(format!("cannot read disk image {}: {e}", path.display())))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f)
        .map_err(|e| load_err(format!("cannot read disk image {}: {e}", path.display())))?;
    Ok(Some(*h.finalize().as_bytes()))
}

/// A session's vCPU, reset to the machine's entry state.
struct BuiltVcpu {
    vcpu: Box<dyn Vcpu>,
    /// The CPUID values the guest will see: the machine's policy, or what
    /// KVM made of it (it does not honour every leaf it is given).
    cpuid: vcpu::CpuidPolicy,
    /// What the backend cannot trap (for the log header).
    untrapped: Vec<Untrapped>,
}

/// Build the vCPU of `backend` (`soft`, `kvm`) for timing in `mode`: the
/// soft vCPU as it is for exact timepoints; in exit-synchronous mode every
/// backend behind [`ExitClocked`], so that a recording made on one replays
/// on the other. `skid`: the soft vCPU's host PMI skid (exact mode).
fn build_vcpu(
    machine: &Machine,
    backend: &str,
    mode: CounterMode,
    skid: u64,
) -> VmResult<BuiltVcpu> {
    let vcpu_err = |e: vcpu::VcpuError| VmControlError::Vcpu {
        what: format!("the {backend} backend: {e}"),
    };
    let mut cpuid = machine.cpuid().clone();
    let mut cpuid_untrapped = false;
    let mut vcpu: Box<dyn Vcpu> = match (backend, mode) {
        ("soft", CounterMode::Exact) => {
            let mut v = SoftVcpu::new(machine.memory().clone());
            v.set_host_pmi_skid(skid);
            Box::new(v)
        }
        ("soft", CounterMode::ExitSynchronous) => {
            Box::new(ExitClocked::new(SoftVcpu::new(machine.memory().clone())))
        }
        ("kvm", CounterMode::ExitSynchronous) => {
            let vm = KvmVm::new(machine.memory().clone()).map_err(|e| VmControlError::Vcpu {
                what: format!("the kvm backend: {e}"),
            })?;
            let v = vm.create_vcpu(0, &cpuid.entries).map_err(vcpu_err)?;
            cpuid.entries = v.effective_cpuid().to_vec();
            cpuid_untrapped = !ring3_cpuid_follows_policy();
            Box::new(ExitClocked::new(v))
        }
        ("kvm", CounterMode::Exact) => {
            return Err(VmControlError::Unsupported {
                what: "exact timepoints on the kvm backend: it has no precise guest branch \
                       counter here (no usable PMU; see `motion doctor`), so it records and \
                       replays only in exit-synchronous mode"
                    .into(),
            });
        }
        (other, _) => {
            return Err(VmControlError::Unsupported {
                what: format!("the `{other}` backend (this monitor offers `soft` and `kvm`)"),
            });
        }
    };
    let controls = vcpu.default_controls();
    machine
        .reset_vcpu(&mut *vcpu, controls)
        .map_err(|e| VmControlError::Vcpu {
            what: format!("the {backend} backend: {e}"),
        })?;
    let mut untrapped = Untrapped::of_controls(vcpu.controls());
    if cpuid_untrapped {
        untrapped.push(Untrapped::Cpuid);
    }
    Ok(BuiltVcpu {
        vcpu,
        cpuid,
        untrapped,
    })
}

/// Whether CPUID in the guest's ring 3 answers from the vCPU's table on this
/// host's KVM (probed once per process: it costs a small VM).
fn ring3_cpuid_follows_policy() -> bool {
    static FOLLOWS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOLLOWS.get_or_init(|| vcpu_kvm::probe::ring3_cpuid_follows_policy().works)
}
