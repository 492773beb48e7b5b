//! Recording sessions: the vCPU thread records into a bounded queue; the
//! log thread batches the records to the log store over `LogAppend` and
//! tracks what the store has made durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log_append_api::{Appender, BatchLimits, CreateLog, Record as WireRecord};
use motion_records::{MachineInfo, Record};
use vcpu::{CounterMode, Vcpu};
use vm_control_api::{Outcome, RecordSetup, Reply, VmControlError};

use super::{
    BuiltVcpu, Monitor, Session, Shared, SharedOutput, VmResult, build_vcpu, busy, disk_hash,
    load_err, read_guest,
};
use crate::devices::virtio_blk::DiskImage;
use crate::env::EnvError;
use crate::live::{InputFeed, LiveConfig, LiveEnvironment};
use crate::machine::{Machine, MachineConfig, RunLimits};
use crate::record::{RecordOptions, RecordSink, RecordingEnv};

/// Records the vCPU thread may queue ahead of the log thread.
const RECORD_QUEUE: usize = 16 * 1024;

/// A partial batch goes to the store after this long without new records.
const QUIET_FLUSH: Duration = Duration::from_millis(5);

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

pub(super) fn start_recording(g: &mut Monitor, setup: &RecordSetup) -> VmResult<Reply> {
    busy(g)?;
    // Each backend's best unless asked: exact where the vCPU counts
    // exactly, the exit clock where it cannot.
    let mode = setup.counter_mode.unwrap_or(match setup.backend.as_str() {
        "soft" => CounterMode::Exact,
        _ => CounterMode::ExitSynchronous,
    });
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
    let BuiltVcpu {
        vcpu,
        cpuid,
        untrapped,
    } = build_vcpu(&machine, &setup.backend, mode, 0)?;
    let info = MachineInfo {
        backend: vcpu.backend().into(),
        guest_name: setup.guest_name.clone(),
        vcpus: 1,
        memory_bytes: machine.ram_size(),
        guest_image,
        disk_image,
        cpuid,
        counter_mode: CounterMode::of(&*vcpu).unwrap_or(CounterMode::Exact),
        untrapped,
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
    let _ = shared.live_exits.set(env.exits());
    let kicker = vcpu.kicker();
    // Open the log before answering, so a refusal (the log exists, a bad
    // name) is the answer to `Record`.
    let mut app = Appender::new(client, BatchLimits::default());
    app.create(CreateLog {
        log: setup.log.clone(),
        machine: info.clone(),
        durability: setup.durability,
        resume: false,
    })
    .map_err(|e| VmControlError::BadRequest {
        what: format!("the log store cannot create `{}`: {e}", setup.log),
    })?;
    let limits = RunLimits {
        wall: setup.time_limit_ms.map(Duration::from_millis),
        exits: None,
        exit_synchronous: info.counter_mode == CounterMode::ExitSynchronous,
    };
    let sh = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("record".into())
        .spawn(move || {
            let outcome = record_session(machine, vcpu, env, limits, app, rx, &sh);
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
    mut vcpu: Box<dyn Vcpu>,
    mut env: RecordingEnv<LiveEnvironment, ChannelSink>,
    limits: RunLimits,
    app: Appender,
    rx: Receiver<Record>,
    shared: &Arc<Shared>,
) -> Outcome {
    let start = Instant::now();
    let sh = Arc::clone(shared);
    let log = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || log_writer(app, rx, &sh));
    let log = match log {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("cannot start the log thread: {e}")),
    };
    let result = machine.run(&mut *vcpu, &mut env, &limits);
    if let Some(r) = vcpu.retired() {
        shared.instructions.store(r.instructions, Ordering::Relaxed);
    }
    if let Some(n) = vcpu.deterministic_exits() {
        shared.exits.store(n, Ordering::Relaxed);
    }
    let end = crate::record::end_status(&result);
    // Dropping the environment and its sink closes the record channel: the
    // log thread seals the log after the last record.
    let finished = env.finish(&*vcpu, &result).map(|(_, _, stats)| {
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

fn log_writer(mut app: Appender, rx: Receiver<Record>, shared: &Shared) -> Result<(), String> {
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
