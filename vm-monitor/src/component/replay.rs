//! Replay sessions: the machine the log was recorded on, driven by the
//! records the replay-controller feeds in batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use motion_records::Record;
use vcpu::{CounterMode, Vcpu};
use vm_control_api::{
    DivergenceReport, Feed, LoadedImages, Outcome, ReplayLoad, Reply, VmControlError,
};

use super::{
    BuiltVcpu, Monitor, Session, Shared, SharedOutput, VmResult, build_vcpu, busy, disk_hash,
    load_err, lock, read_guest,
};
use crate::env::EnvError;
use crate::machine::{Machine, MachineConfig, RunLimits};
use crate::replay::{Numbered, RecordSource, ReplayEnd, ReplayEnv, ReplayOptions};

/// Records from `Feed` requests to the vCPU thread.
pub(super) enum FeedMsg {
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

pub(super) fn load_replay(g: &mut Monitor, load: &ReplayLoad) -> VmResult<Reply> {
    busy(g)?;
    let info = &load.machine;
    if load.backend == "kvm" && info.counter_mode == CounterMode::Exact {
        return Err(VmControlError::Unsupported {
            what: format!(
                "replaying a recording with exact timepoints (made on `{}`) on the kvm backend: \
                 it has no precise guest branch counter here (no usable PMU), so it can only \
                 replay exit-synchronous recordings; replay this one with --backend soft",
                info.backend
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
    let BuiltVcpu {
        vcpu,
        untrapped: replay_untrapped,
        ..
    } = build_vcpu(&machine, &load.backend, info.counter_mode, skid)?;
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
    )
    .with_untrapped(&info.backend, info.untrapped.clone())
    .with_replay_untrapped(&load.backend, replay_untrapped);
    let _ = shared.live_records.set(env.progress());
    let kicker = vcpu.kicker();
    let sh = Arc::clone(&shared);
    let mode = info.counter_mode;
    let start = move || {
        let outcome = replay_session(mode, machine, vcpu, env, &sh);
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
    mode: CounterMode,
    machine: Machine,
    mut vcpu: Box<dyn Vcpu>,
    mut env: ReplayEnv<ChannelSource>,
    shared: &Shared,
) -> Outcome {
    let progress = env.progress();
    let start = Instant::now();
    let limits = RunLimits {
        exit_synchronous: mode == CounterMode::ExitSynchronous,
        ..RunLimits::default()
    };
    let result = machine.run(&mut *vcpu, &mut env, &limits);
    let end = env.finish(&*vcpu, result);
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
    if let Some(n) = vcpu.deterministic_exits() {
        shared.exits.store(n, Ordering::Relaxed);
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

pub(super) fn feed_replay(m: &Mutex<Monitor>, feed: Feed) -> VmResult<Reply> {
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
