//! The replay-controller component: drives a replay of one log and reports
//! its outcome.
//!
//! It sits in its own domain holding no capability: it reads the log only
//! through `LogRead` (served by the log-store) and drives the vm-monitor
//! through `VmControl`. A front end (the CLI) asks it over `VmControl`
//! ([`Request::Replay`], then [`Request::Progress`] polls).
//!
//! A replay:
//! 1. opens the log and reads its header (the recorded machine);
//! 2. has the vm-monitor load that machine from the images the front end
//!    granted ([`Request::LoadReplay`]) and **refuses** the log up front when
//!    the loaded guest or disk image's BLAKE3 differs from the header's,
//!    naming both hashes;
//! 3. streams the records in batches of up to [`BATCH`] ([`Request::Feed`]),
//!    keeping at most [`AHEAD`] records queued at the monitor, which answers
//!    every synchronous exit from them, lands every asynchronous event at its
//!    timepoint and compares every state check and digest;
//! 4. checks the last digest the monitor reports as matched against the
//!    log's own digest record, and reports the outcome: verified, truncated
//!    (a log cut short by a crash: its prefix replayed), diverged (record,
//!    timepoint, registers, first differing page), or refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use log_read_api::{LogRead, Reply as ReadReply, Request as ReadRequest};
use motion_ipc::{Client, ComponentContext, ComponentResult};
use motion_records::{Hash32, MachineInfo, Record, RecordType, hex};
use vm_control_api::{
    Feed, Outcome, ReplayLoad, ReplaySetup, Reply, Request, SessionState, Status, VmControl,
    VmControlError,
};

/// Records per `Read` and `Feed`.
pub const BATCH: u32 = 1024;
/// Records fed ahead of the replay.
pub const AHEAD: u64 = 4096;
/// How long the monitor may hold a `Feed` when nothing changes (ms): the
/// pace of progress reports.
const POLL_MS: u32 = 100;
/// Most serial output bytes one status carries.
const OUTPUT_PER_STATUS: usize = 64 * 1024;

#[derive(Default)]
struct Shared {
    status: Mutex<Status>,
    output: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

impl Shared {
    fn set_state(&self, state: SessionState) {
        lock(&self.status).state = Some(state);
    }

    fn snapshot(&self) -> Status {
        let mut s = lock(&self.status).clone();
        let mut o = lock(&self.output);
        let n = o.len().min(OUTPUT_PER_STATUS);
        s.output = o.drain(..n).collect();
        // Report the end only once all output has been handed over.
        if !o.is_empty() && matches!(s.state, Some(SessionState::Finished(_))) {
            s.state = Some(SessionState::Running);
        }
        s
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `replay-controller` component's entry.
pub fn component_entry(mut ctx: ComponentContext) -> ComponentResult {
    let mut front = ctx.server::<VmControl>()?;
    let mut clients = Some((ctx.client::<LogRead>()?, ctx.client::<VmControl>()?));
    let shared = Arc::new(Shared::default());
    shared.set_state(SessionState::Idle);
    let mut driver = None;
    front.serve(|req| match req {
        Request::Replay(setup) => {
            let Some((log, vm)) = clients.take() else {
                return Err(VmControlError::Busy {
                    what: "this controller has replayed a log already".into(),
                });
            };
            shared.set_state(SessionState::Running);
            let sh = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name("replay-driver".into())
                .spawn(move || {
                    let outcome = drive(&setup, log, vm, &sh);
                    sh.set_state(SessionState::Finished(outcome));
                })
                .map_err(|e| VmControlError::Vcpu {
                    what: format!("cannot start the replay driver: {e}"),
                })?;
            driver = Some(t);
            Ok(Reply::ReplayStarted)
        }
        Request::Progress => Ok(Reply::Status(Box::new(shared.snapshot()))),
        Request::Stop => {
            shared.stop.store(true, Ordering::Relaxed);
            Ok(Reply::Status(Box::new(shared.snapshot())))
        }
        other => Err(VmControlError::Unsupported {
            what: format!("{other:?} (the replay controller serves Replay, Progress and Stop)"),
        }),
    })?;
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(t) = driver {
        let _ = t.join();
    }
    Ok(())
}

fn read(log: &mut Client<LogRead>, req: &ReadRequest) -> Result<ReadReply, String> {
    match log.call(req) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("log store: {e}")),
    }
}

fn control(vm: &mut Client<VmControl>, req: &Request) -> Result<Reply, VmControlError> {
    match vm.call(req) {
        Ok(r) => r,
        Err(e) => Err(VmControlError::Vcpu {
            what: format!("vm-monitor: {e}"),
        }),
    }
}

/// Why a log cannot replay on the loaded images, if it cannot.
pub fn refusal(
    machine: &MachineInfo,
    guest_image: &Hash32,
    disk_image: Option<&Hash32>,
) -> Option<String> {
    if guest_image != &machine.guest_image {
        return Some(format!(
            "the log was recorded from guest image `{}` with BLAKE3 {}, but the guest image given has BLAKE3 {}",
            machine.guest_name,
            hex(&machine.guest_image),
            hex(guest_image)
        ));
    }
    match (&machine.disk_image, disk_image) {
        (Some(r), Some(g)) if r != g => Some(format!(
            "the log was recorded with a disk image with BLAKE3 {}, but the disk image given has BLAKE3 {}",
            hex(r),
            hex(g)
        )),
        (Some(r), None) => Some(format!(
            "the log was recorded with a disk image (BLAKE3 {}); give that image to replay it",
            hex(r)
        )),
        (None, Some(g)) => Some(format!(
            "the log was recorded without a disk, but a disk image (BLAKE3 {}) was given",
            hex(g)
        )),
        _ => None,
    }
}

fn drive(
    setup: &ReplaySetup,
    mut log: Client<LogRead>,
    mut vm: Client<VmControl>,
    shared: &Shared,
) -> Outcome {
    let opened = match read(
        &mut log,
        &ReadRequest::Open {
            log: setup.log.clone(),
        },
    ) {
        Ok(ReadReply::Opened(s)) => s,
        Ok(other) => return Outcome::Failed(format!("log store answered {other:?} to Open")),
        Err(e) => return Outcome::Refused(e),
    };
    lock(&shared.status).total = Some(opened.records);
    let machine = match read(&mut log, &ReadRequest::Header) {
        Ok(ReadReply::Header(h)) => *h.machine,
        Ok(other) => return Outcome::Failed(format!("log store answered {other:?} to Header")),
        Err(e) => return Outcome::Refused(e),
    };
    let loaded = match control(
        &mut vm,
        &Request::LoadReplay(Box::new(ReplayLoad {
            machine: machine.clone(),
            pmi_skid: setup.pmi_skid,
            backend: setup.backend.clone(),
        })),
    ) {
        Ok(Reply::Loaded(l)) => l,
        Ok(other) => {
            return Outcome::Failed(format!("vm-monitor answered {other:?} to LoadReplay"));
        }
        Err(e @ (VmControlError::Load { .. } | VmControlError::Unsupported { .. })) => {
            return Outcome::Refused(e.to_string());
        }
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if let Some(why) = refusal(&machine, &loaded.guest_image, loaded.disk_image.as_ref()) {
        return Outcome::Refused(why);
    }

    let mut digests: BTreeMap<u64, Hash32> = BTreeMap::new();
    let mut next = 0u64;
    let mut all_read = false;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            let _ = control(&mut vm, &Request::Stop);
            return Outcome::Failed("the replay was stopped".into());
        }
        let replayed = lock(&shared.status).records;
        let feed = if !all_read && next.saturating_sub(replayed) < AHEAD {
            let (first, records, end) = match read(
                &mut log,
                &ReadRequest::Read {
                    from: next,
                    max_records: BATCH,
                },
            ) {
                Ok(ReadReply::Records {
                    first,
                    records,
                    end,
                }) => (first, records, end),
                Err(_) if next == opened.records => (next, Vec::new(), true),
                Ok(other) => {
                    return Outcome::Failed(format!("log store answered {other:?} to Read"));
                }
                Err(e) => return Outcome::Failed(format!("reading record {next}: {e}")),
            };
            if first != next {
                return Outcome::Failed(format!("asked for record {next}, got {first}"));
            }
            for (k, w) in records.iter().enumerate() {
                if w.record_type == RecordType::Digest.id() {
                    if let Ok(Record::Digest(d)) = Record::decode(w.record_type, &w.payload) {
                        digests.insert(first + k as u64, d.memory_hash);
                    }
                }
            }
            next += records.len() as u64;
            all_read = end || records.is_empty();
            Feed {
                first,
                records,
                end_of_log: all_read,
                wait_ms: POLL_MS,
            }
        } else {
            Feed {
                first: next,
                records: Vec::new(),
                end_of_log: false,
                wait_ms: POLL_MS,
            }
        };
        let status = match control(&mut vm, &Request::Feed(Box::new(feed))) {
            Ok(Reply::Status(s)) => *s,
            Ok(other) => return Outcome::Failed(format!("vm-monitor answered {other:?} to Feed")),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        lock(&shared.output).extend_from_slice(&status.output);
        {
            let mut s = lock(&shared.status);
            s.records = status.records;
            s.instructions = status.instructions;
            s.exits = status.exits;
            s.checks = status.checks;
            s.digests = status.digests;
            s.landings = status.landings;
            s.last_digest = status.last_digest;
            s.session_ns = status.session_ns;
        }
        if let Some(SessionState::Finished(outcome)) = status.state {
            // The monitor compared the digests; check its last word against
            // the log's own record.
            if let (Outcome::Verified { .. }, Some((i, h))) = (&outcome, status.last_digest) {
                if digests.get(&i) != Some(&h) {
                    return Outcome::Failed(format!(
                        "the vm-monitor reports digest record {i} matched with memory hash {}, which is not what the log holds",
                        hex(&h)
                    ));
                }
            }
            return outcome;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(disk: Option<Hash32>) -> MachineInfo {
        MachineInfo {
            backend: "soft".into(),
            guest_name: "timer".into(),
            vcpus: 1,
            memory_bytes: 128 << 20,
            guest_image: [1; 32],
            disk_image: disk,
            cpuid: vcpu::CpuidPolicy::baseline(),
            counter_mode: vcpu::CounterMode::Exact,
            untrapped: Vec::new(),
        }
    }

    #[test]
    fn other_images_are_refused_naming_both_hashes() {
        let m = machine(None);
        assert_eq!(refusal(&m, &[1; 32], None), None);
        let why = refusal(&m, &[3; 32], None).unwrap();
        assert!(
            why.contains(&hex(&[1; 32])) && why.contains(&hex(&[3; 32])),
            "{why}"
        );
        assert!(why.contains("timer"), "{why}");
        assert!(
            refusal(&m, &[1; 32], Some(&[5; 32])).is_some(),
            "a disk the log did not have"
        );
        let d = machine(Some([7; 32]));
        assert_eq!(refusal(&d, &[1; 32], Some(&[7; 32])), None);
        let why = refusal(&d, &[1; 32], Some(&[8; 32])).unwrap();
        assert!(
            why.contains(&hex(&[7; 32])) && why.contains(&hex(&[8; 32])),
            "{why}"
        );
        assert!(
            refusal(&d, &[1; 32], None)
                .unwrap()
                .contains("give that image")
        );
    }
}
