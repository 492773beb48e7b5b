//! The `vm-monitor` component: serves `VmControl` (to the front end and to
//! the replay-controller) and records over `LogAppend`, inside the `vmm`
//! domain's sandbox.
//!
//! Threads of a session:
//!
//! * **vCPU thread**: the machine loop with the [`RecordingEnv`] or
//!   [`ReplayEnv`]. Recording only queues records (a bounded channel of
//!   ready-made [`Record`]s) and never waits for the store.
//! * **log thread** (recording): encodes records, batches them through
//!   [`Appender`] (pipelined, acknowledged), flushes a partial batch after a
//!   few quiet milliseconds, seals the log at the end. A record counts as
//!   acknowledged only once the store says it is durable.
//! * **serving threads**: one per `VmControl` channel; requests only touch
//!   the session's shared counters, queues and flags.
//!
//! Replay records arrive in batches ([`Request::Feed`]); the vCPU thread
//! takes them from a queue as it needs them, so a batch costs one round trip,
//! not one per exit.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log_append_api::{Appender, BatchLimits, LogAppend, Record as WireRecord};
use motion_ipc::{Client, ComponentContext, ComponentResult};
use motion_records::session::{BEGIN_TYPE_ID, Begin};
use motion_records::{Hash32, MachineInfo, Record};
use vcpu::{CounterMode, Kicker, Vcpu};
use vcpu_soft::SoftVcpu;
use vm_control_api::{
    DivergenceReport, Feed, LoadedImages, Outcome, RecordSetup, ReplayLoad, Reply, Request,
    SessionState, Status, VmControl, VmControlError,
};

use crate::devices::virtio_blk::DiskImage;
use crate::env::EnvError;
use crate::live::{InputFeed, LiveConfig, LiveEnvironment};
use crate::machine::{Machine, MachineConfig, RunLimits};
use crate::record::{RecordOptions, RecordSink, RecordingEnv};
use crate::replay::{Numbered, RecordSource, ReplayEnd, ReplayEnv, ReplayOptions, ReplayProgress};

/// Records the vCPU thread may queue ahead of the log thread.
const RECORD_QUEUE: usize = 16 * 1024;
/// Most serial output bytes one status carries (the rest waits).
const OUTPUT_PER_STATUS: usize = 64 * 1024;
/// A partial batch goes to the store after this long without new records.
const QUIET_FLUSH: Duration = Duration::from_millis(5);

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

/// Serial input arriving over `VmControl`, read by the live environment's
/// input thread.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    pending: VecDeque<u8>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.pending.extend(chunk),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        for (dst, src) in buf.iter_mut().zip(self.pending.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

/// Records from the vCPU thread to the log thread.
struct ChannelSink(Sender<Record>);

impl RecordSink for ChannelSink {
    fn record(&mut self, record: Record) -> Result<(), EnvError> {
        self.0
            .send(record)
            .map_err(|_| EnvError::Host("the log writer stopped".into()))
    }
}

/// Records from `Feed` requests to the vCPU thread.
enum FeedMsg {
    Records(Vec<Numbered>),
    End,
}

struct ChannelSource {
    rx: Receiver<FeedMsg>,
    shared: Arc<Shared>,
}

impl RecordSource for ChannelSource {
    fn fill(&mut self, queue: &mut VecDeque<Numbered>) -> Result<bool, EnvError> {
        self.shared.bump();
        loop {
            match self.rx.recv() {
                Ok(FeedMsg::Records(v)) if v.is_empty() => {}
                Ok(FeedMsg::Records(v)) => {
                    queue.extend(v);
                    return Ok(true);
                }
                Ok(FeedMsg::End) | Err(_) => return Ok(false),
            }
        }
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

fn soft_vcpu(machine: &Machine, skid: u64) -> VmResult<SoftVcpu> {
    let mut vcpu = SoftVcpu::new(machine.memory().clone());
    vcpu.set_host_pmi_skid(skid);
    let controls = vcpu.default_controls();
    machine
        .reset_vcpu(&mut vcpu, controls)
        .map_err(|e| VmControlError::Vcpu {
            what: e.to_string(),
        })?;
    Ok(vcpu)
}

fn start_recording(g: &mut Monitor, setup: &RecordSetup) -> VmResult<Reply> {
    busy(g)?;
    if setup.backend != "soft" {
        return Err(VmControlError::Unsupported {
            what: format!(
                "recording on the `{}` backend (this build records on `soft`)",
                setup.backend
            ),
        });
    }
    let client = g.log.take().ok_or(VmControlError::BadRequest {
        what: "no LogAppend channel (already used by an earlier recording, or not declared)".into(),
    })?;
    let (elf, guest_image) = read_guest(g)?;
    let disk_image = disk_hash(g)?;
    let machine = Machine::new(
        &elf,
        &MachineConfig {
            ram: setup.ram,
            ..MachineConfig::default()
        },
    )
    .map_err(load_err)?;
    let disk = match &g.disk {
        Some(p) => Some(DiskImage::open(p, false).map_err(load_err)?),
        None => None,
    };
    let vcpu = soft_vcpu(&machine, 0)?;
    let info = MachineInfo {
        backend: vcpu.backend().into(),
        guest_name: setup.guest_name.clone(),
        vcpus: 1,
        memory_bytes: machine.ram_size(),
        guest_image,
        disk_image,
        cpuid: machine.cpuid().clone(),
        counter_mode: CounterMode::of(&vcpu).unwrap_or(CounterMode::Exact),
    };
    let shared = Arc::new(Shared::default());
    let (input_tx, input) = if setup.serial_input {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            Some(tx),
            Some(InputFeed::from_reader(ChannelReader {
                rx,
                pending: VecDeque::new(),
            })),
        )
    } else {
        (None, None)
    };
    let mut live = LiveEnvironment::new(
        machine.memory().clone(),
        LiveConfig {
            serial_out: Box::new(SharedOutput(Arc::clone(&shared))),
            input,
            disk,
        },
    );
    live.keep_serial_arrivals();
    let (tx, rx) = crossbeam_channel::bounded(RECORD_QUEUE);
    let env = RecordingEnv::new(
        live,
        ChannelSink(tx),
        machine.memory().clone(),
        machine.ram_size(),
        RecordOptions {
            digest_every: setup.digest_every,
            vcpu_index: 0,
        },
    );
    let stop = env.stop_flag();
    let _ = shared.live_instructions.set(env.instructions());
    let kicker = vcpu.kicker();
    let begin = Begin {
        log: setup.log.clone(),
        machine: info.clone(),
        durability: setup.durability,
        resume: false,
    };
    let limits = RunLimits {
        wall: setup.time_limit_ms.map(Duration::from_millis),
        exits: None,
        exit_synchronous: info.counter_mode == CounterMode::ExitSynchronous,
    };
    let sh = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("record".into())
        .spawn(move || {
            let outcome = record_session(machine, vcpu, env, limits, client, begin, rx, &sh);
            sh.finish(outcome);
        })
        .map_err(|e| VmControlError::Vcpu {
            what: format!("cannot start the vCPU thread: {e}"),
        })?;
    g.session = Some(Session {
        shared,
        stop,
        kicker,
        input: input_tx,
        feed: None,
        pending: None,
        fed: 0,
        fed_all: false,
        thread: Some(thread),
    });
    Ok(Reply::Recording(Box::new(info)))
}

#[allow(clippy::too_many_arguments)]
fn record_session(
    machine: Machine,
    mut vcpu: SoftVcpu,
    mut env: RecordingEnv<LiveEnvironment, ChannelSink>,
    limits: RunLimits,
    client: Client<LogAppend>,
    begin: Begin,
    rx: Receiver<Record>,
    shared: &Arc<Shared>,
) -> Outcome {
    let start = Instant::now();
    let sh = Arc::clone(shared);
    let log = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || log_writer(client, begin, rx, &sh));
    let log = match log {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("cannot start the log thread: {e}")),
    };
    let result = machine.run(&mut vcpu, &mut env, &limits);
    if let Some(r) = vcpu.retired() {
        shared.instructions.store(r.instructions, Ordering::Relaxed);
    }
    let end = crate::record::end_status(&result);
    // Dropping the environment and its sink closes the record channel: the
    // log thread seals the log after the last record.
    let finished = env.finish(&vcpu, &result).map(|(_, _, stats)| {
        shared.checks.store(stats.checks, Ordering::Relaxed);
        shared.digests.store(stats.digests, Ordering::Relaxed);
    });
    let sealed = log
        .join()
        .unwrap_or_else(|_| Err("the log thread panicked".into()));
    shared
        .session_ns
        .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    match (finished, sealed) {
        (Ok(()), Ok(())) => Outcome::Recorded { end },
        (_, Err(e)) => Outcome::Failed(format!("log store: {e}")),
        (Err(e), Ok(())) => Outcome::Failed(format!("ending the recording: {e}")),
    }
}

fn log_writer(
    client: Client<LogAppend>,
    begin: Begin,
    rx: Receiver<Record>,
    shared: &Shared,
) -> Result<(), String> {
    let mut app = Appender::new(client, BatchLimits::default());
    app.push(WireRecord {
        record_type: BEGIN_TYPE_ID,
        timepoint: None,
        payload: begin.to_payload(),
    })
    .map_err(|e| e.to_string())?;
    let mut n = 0u64;
    let push = |app: &mut Appender, r: Record| -> Result<(), String> {
        let mut payload = Vec::new();
        r.encode_into(&mut payload).map_err(|e| e.to_string())?;
        app.push(WireRecord {
            record_type: r.record_type().id(),
            timepoint: r.timepoint().copied(),
            payload,
        })
        .map_err(|e| e.to_string())
    };
    loop {
        match rx.recv_timeout(QUIET_FLUSH) {
            Ok(r) => {
                push(&mut app, r)?;
                n += 1;
                for r in rx.try_iter().take(1024) {
                    push(&mut app, r)?;
                    n += 1;
                }
                shared.records.store(n, Ordering::Relaxed);
                // Keep the durable count moving while records stream in.
                let ack = app.collect_ready().map_err(|e| e.to_string())?;
                shared.durable.store(ack.durable, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {
                app.send_batch().map_err(|e| e.to_string())?;
                let ack = app.collect_ready().map_err(|e| e.to_string())?;
                shared.durable.store(ack.durable, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let ack = app.seal().map_err(|e| e.to_string())?;
    shared.durable.store(ack.durable, Ordering::Relaxed);
    if ack.durable != n {
        return Err(format!("{n} records sent, {} durable", ack.durable));
    }
    Ok(())
}

fn load_replay(g: &mut Monitor, load: &ReplayLoad) -> VmResult<Reply> {
    busy(g)?;
    let info = &load.machine;
    if info.backend != "soft" || info.counter_mode != CounterMode::Exact {
        return Err(VmControlError::Unsupported {
            what: format!(
                "replaying a `{}` recording timed in {:?} mode (this build replays soft-vCPU recordings with exact timepoints)",
                info.backend, info.counter_mode
            ),
        });
    }
    if info.vcpus != 1 {
        return Err(VmControlError::Unsupported {
            what: format!("{} vCPUs (one is supported)", info.vcpus),
        });
    }
    let (elf, guest_image) = read_guest(g)?;
    let disk_image = disk_hash(g)?;
    let loaded = LoadedImages {
        guest_image,
        disk_image,
    };
    if guest_image != info.guest_image {
        // The controller refuses this; build nothing.
        return Ok(Reply::Loaded(loaded));
    }
    let machine = Machine::new(
        &elf,
        &MachineConfig {
            ram: info.memory_bytes,
            cmdline: String::new(),
            cpuid: info.cpuid.clone(),
        },
    )
    .map_err(load_err)?;
    let skid = u64::from(load.pmi_skid);
    let vcpu = soft_vcpu(&machine, skid)?;
    let shared = Arc::new(Shared::default());
    let (tx, rx) = crossbeam_channel::unbounded();
    let env = ReplayEnv::new(
        ChannelSource {
            rx,
            shared: Arc::clone(&shared),
        },
        machine.memory().clone(),
        machine.ram_size(),
        ReplayOptions {
            vcpu_index: 0,
            mode: info.counter_mode,
            margin: pmu_driver::CounterHardware::Soft {
                skid: load.pmi_skid,
            }
            .margin(),
        },
        Box::new(SharedOutput(Arc::clone(&shared))),
    );
    let _ = shared.live_records.set(env.progress());
    let kicker = vcpu.kicker();
    let sh = Arc::clone(&shared);
    let start = move || {
        let outcome = replay_session(machine, vcpu, env, &sh);
        sh.finish(outcome);
    };
    g.session = Some(Session {
        shared,
        stop: Arc::new(AtomicBool::new(false)),
        kicker,
        input: None,
        feed: Some(tx),
        pending: Some(Box::new(start)),
        fed: 0,
        fed_all: false,
        thread: None,
    });
    Ok(Reply::Loaded(loaded))
}

fn replay_session(
    machine: Machine,
    mut vcpu: SoftVcpu,
    mut env: ReplayEnv<ChannelSource>,
    shared: &Shared,
) -> Outcome {
    let progress = env.progress();
    let start = Instant::now();
    let result = machine.run(&mut vcpu, &mut env, &RunLimits::default());
    let end = env.finish(&vcpu, result);
    shared
        .session_ns
        .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let stats = env.stats();
    shared
        .records
        .store(progress.records.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Some(r) = vcpu.retired() {
        shared.instructions.store(r.instructions, Ordering::Relaxed);
    }
    shared.checks.store(stats.checks, Ordering::Relaxed);
    shared.digests.store(stats.digests, Ordering::Relaxed);
    shared.landings.store(stats.landings, Ordering::Relaxed);
    *shared.last_digest.lock().unwrap_or_else(|p| p.into_inner()) = stats.last_digest;
    match end {
        Ok(ReplayEnd::Verified { end }) => Outcome::Verified { end },
        Ok(ReplayEnd::Truncated { records }) => Outcome::Truncated { records },
        Ok(ReplayEnd::Diverged(d)) => Outcome::Diverged(Box::new(DivergenceReport {
            record: d.record,
            what: d.what,
            at: d.at,
            expected_regs: d.expected_regs,
            actual_regs: d.actual_regs,
            page: d.page.map(|p| (p.page, p.expected, p.actual)),
        })),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn feed_replay(m: &Mutex<Monitor>, feed: Feed) -> VmResult<Reply> {
    let mut records = Vec::with_capacity(feed.records.len());
    for (k, w) in feed.records.iter().enumerate() {
        let n = feed.first + k as u64;
        let r =
            Record::decode(w.record_type, &w.payload).map_err(|e| VmControlError::BadRequest {
                what: format!("record {n} does not decode: {e}"),
            })?;
        records.push((n, r));
    }
    let (shared, target) = {
        let mut g = lock(m);
        let s = g.session.as_mut().ok_or(VmControlError::BadRequest {
            what: "no replay is loaded".into(),
        })?;
        if !records.is_empty() && feed.first != s.fed {
            return Err(VmControlError::BadRequest {
                what: format!(
                    "records must come in order: expected record {}, got {}",
                    s.fed, feed.first
                ),
            });
        }
        s.fed += records.len() as u64;
        if let Some(tx) = &s.feed {
            if !records.is_empty() {
                let _ = tx.send(FeedMsg::Records(records));
            }
            if feed.end_of_log && !s.fed_all {
                let _ = tx.send(FeedMsg::End);
            }
        }
        s.fed_all |= feed.end_of_log;
        if let Some(start) = s.pending.take() {
            let t = std::thread::Builder::new()
                .name("replay".into())
                .spawn(start)
                .map_err(|e| VmControlError::Vcpu {
                    what: format!("cannot start the vCPU thread: {e}"),
                })?;
            s.thread = Some(t);
        }
        (Arc::clone(&s.shared), (!s.fed_all).then_some(s.fed))
    };
    // Answer when the replay has used most of what it was given (and more
    // can come), has stopped, or the caller's patience runs out.
    let deadline = Instant::now() + Duration::from_millis(u64::from(feed.wait_ms));
    let mut generation = shared.changed.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let wants_more = target.is_some_and(|t| shared.records() + LOW_WATER >= t);
        if shared.finished() || wants_more {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let seen = *generation;
        generation = shared
            .cv
            .wait_timeout_while(generation, deadline - now, |g| *g == seen)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    drop(generation);
    Ok(Reply::Status(Box::new(shared.status(None))))
}

/// A feed is answered once fewer than this many records wait for the vCPU.
const LOW_WATER: u64 = 512;
