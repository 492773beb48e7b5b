//! Record a bundled guest live and replay its records in this process, on
//! the soft vCPU: same serial output, every check and digest matching.

mod common;

use common::{Shared, every, exit_sync_vcpu, live, record_run, replay_env, replay_run};
use motion_records::Record;
use vcpu::{CounterMode, Vcpu};
use vm_monitor::devices::virtio_blk::DiskImage;
use vm_monitor::record::RecordOptions;
use vm_monitor::replay::ReplayEnd;
use vm_monitor::{LiveEnvironment, RunLimits};

fn record(guest: &str, input: Option<&[u8]>, digest_every: u64) -> (Vec<Record>, Vec<u8>) {
    record_with_disk(guest, input, None, digest_every)
}

fn record_with_disk(
    guest: &str,
    input: Option<&[u8]>,
    disk: Option<DiskImage>,
    digest_every: u64,
) -> (Vec<Record>, Vec<u8>) {
    let machine = common::machine(guest);
    let mut vcpu = common::soft_vcpu(&machine);
    let out = Shared::default();
    let mut live = live(&machine, Box::new(out.clone()), input, disk);
    live.keep_serial_arrivals();
    let (result, records) = record_run(
        &machine,
        &mut vcpu,
        live,
        every(digest_every),
        &RunLimits::default(),
    );
    result.unwrap();
    (records, out.bytes())
}

fn replay(guest: &str, records: Vec<Record>, skid: u64) -> (ReplayEnd, Vec<u8>) {
    let machine = common::machine(guest);
    let mut vcpu = common::soft_vcpu(&machine);
    vcpu.set_host_pmi_skid(skid);
    let out = Shared::default();
    let env = replay_env(
        &machine,
        records,
        CounterMode::Exact,
        skid,
        Box::new(out.clone()),
    );
    let end = replay_run(&machine, &mut vcpu, env, &RunLimits::default());
    (end, out.bytes())
}

#[test]
fn timer_replays_exactly() {
    let (records, out) = record("timer", None, 200);
    let interrupts = records
        .iter()
        .filter(|r| matches!(r, Record::Interrupt(_)))
        .count();
    assert!(interrupts >= 25, "{interrupts} interrupts");
    let (end, replayed) = replay("timer", records.clone(), 0);
    assert!(matches!(end, ReplayEnd::Verified { .. }), "{end:?}");
    assert_eq!(
        String::from_utf8_lossy(&replayed),
        String::from_utf8_lossy(&out)
    );
    let (end, replayed) = replay("timer", records, 64);
    assert!(
        matches!(end, ReplayEnd::Verified { .. }),
        "skid 64: {end:?}"
    );
    assert_eq!(replayed, out);
}

/// Disk completions come from the monitor's disk thread at host-timed
/// points; each is recorded as its DMA writes (data, status, used element,
/// used index, in that order) at one timepoint followed by the interrupt at
/// the same point, and the replay — which has no disk at all — reproduces
/// the run exactly.
#[test]
fn disk_completions_from_the_worker_replay_exactly() {
    let mut img = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..64 * 512u32).map(|i| (i * 7 + i / 509) as u8).collect();
    std::io::Write::write_all(&mut img, &bytes).unwrap();
    let disk = DiskImage::open(img.path(), true).unwrap();
    let (records, out) = record_with_disk("disk", None, Some(disk), 100);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("disk: read 64 sectors"), "{text}");
    let mut completions = 0;
    for (i, r) in records.iter().enumerate() {
        let Record::Interrupt(irq) = r else { continue };
        // The DMA writes right before the interrupt, nearest first.
        let dma: Vec<_> = records[..i]
            .iter()
            .rev()
            .map_while(|r| match r {
                Record::DmaWrite(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(dma.len(), 4, "record {i}: {dma:?}");
        let sizes: Vec<usize> = dma.iter().rev().map(|d| d.bytes.len()).collect();
        assert_eq!(
            sizes,
            [4096, 1, 8, 2],
            "data, status, used element, used index"
        );
        assert!(
            dma.iter().all(|d| d.at == Some(irq.at)),
            "record {i}: one completion lands at one point"
        );
        completions += 1;
    }
    assert_eq!(completions, 8, "one per request");
    // No disk is given to the replay: it cannot consult one.
    let (end, replayed) = replay("disk", records, 0);
    assert!(matches!(end, ReplayEnd::Verified { .. }), "{end:?}");
    assert_eq!(replayed, out);
}

#[test]
fn serial_echo_replays_exactly() {
    let (records, out) = record("serial-echo", Some(b"hello\nworld\nquit\n"), 50);
    let (end, replayed) = replay("serial-echo", records, 0);
    assert!(matches!(end, ReplayEnd::Verified { .. }), "{end:?}");
    assert_eq!(replayed, out);
}

#[test]
fn altered_records_diverge_at_or_right_after_them() {
    let (records, _) = record("timer", None, 200);
    let mut tried = 0;
    for (i, r) in records.iter().enumerate() {
        let mut bad = r.clone();
        match &mut bad {
            Record::PortIn(p) => p.value ^= 1,
            Record::Interrupt(x) if i % 3 == 0 => x.at.branches -= 1,
            Record::Interrupt(x) => x.vector ^= 1,
            _ => continue,
        }
        tried += 1;
        if tried > 12 {
            break;
        }
        let mut log = records.clone();
        log[i] = bad;
        let (end, _) = replay("timer", log, 0);
        match end {
            ReplayEnd::Diverged(d) => {
                assert!(
                    d.record >= i as u64 && d.record <= i as u64 + 3,
                    "record {i} altered, divergence at {}: {}",
                    d.record,
                    d.what
                );
                assert!(
                    d.at.is_some() && d.actual_regs.is_some(),
                    "the report says where: {d:?}"
                );
            }
            other => panic!("record {i} ({r:?}) altered, replay ended {other:?}"),
        }
    }
}

#[test]
#[ignore]
fn timing_compute() {
    let t = std::time::Instant::now();
    let (records, out) = record("compute", None, 500);
    let tr = t.elapsed();
    let t = std::time::Instant::now();
    let (end, replayed) = replay("compute", records.clone(), 0);
    let tp = t.elapsed();
    assert!(matches!(end, ReplayEnd::Verified { .. }), "{end:?}");
    assert_eq!(replayed, out);
    eprintln!("record {tr:?} replay {tp:?} records {}", records.len());
}

/// Exit-synchronous mode (what the kvm backend records in here): inputs
/// are delivered only right after instruction exits and timed by the exit
/// count; replay delivers them at the same count, without landing. A disk
/// completion the worker thread finishes while the guest computes waits for
/// the next instruction exit.
#[test]
fn exit_synchronous_recordings_replay_exactly() {
    for (guest, input, disk) in [
        (
            "serial-echo",
            Some(&b"one\ntwo two\nthree three three\nquit\n"[..]),
            false,
        ),
        ("entropy", None, false),
        ("disk", None, true),
    ] {
        let machine = common::machine(guest);
        let mut vcpu = exit_sync_vcpu(&machine);
        assert_eq!(CounterMode::of(&vcpu), Some(CounterMode::ExitSynchronous));
        let out = Shared::default();
        let live = live(
            &machine,
            Box::new(out.clone()),
            input,
            disk.then(|| DiskImage::zeroed(64)),
        );
        let limits = RunLimits {
            exit_synchronous: true,
            ..RunLimits::default()
        };
        let (result, records) = record_run(&machine, &mut vcpu, live, every(20), &limits);
        result.unwrap();
        let recorded = out.bytes();
        if disk {
            let text = String::from_utf8_lossy(&recorded);
            assert!(text.contains("8 requests completed by interrupt"), "{text}");
        }

        let machine = common::machine(guest);
        let mut vcpu = exit_sync_vcpu(&machine);
        let replayed = Shared::default();
        let env = replay_env(
            &machine,
            records,
            CounterMode::ExitSynchronous,
            0,
            Box::new(replayed.clone()),
        );
        let end = replay_run(&machine, &mut vcpu, env, &limits);
        assert!(
            matches!(end, ReplayEnd::Verified { .. }),
            "{guest}: {end:?}"
        );
        assert_eq!(replayed.bytes(), recorded, "{guest}");
    }
}

/// Live devices plus one large DMA transfer at the start (as a guest asking
/// for a big read would cause).
struct BigDma {
    inner: LiveEnvironment,
    sent: bool,
}

impl vm_monitor::Environment for BigDma {
    fn port_in(&mut self, p: u16, s: u8) -> Result<u32, vm_monitor::EnvError> {
        self.inner.port_in(p, s)
    }
    fn port_out(&mut self, p: u16, s: u8, v: u32) -> Result<(), vm_monitor::EnvError> {
        self.inner.port_out(p, s, v)
    }
    fn mmio_read(&mut self, g: u64, s: u8) -> Result<[u8; 16], vm_monitor::EnvError> {
        self.inner.mmio_read(g, s)
    }
    fn mmio_write(&mut self, g: u64, d: &[u8]) -> Result<(), vm_monitor::EnvError> {
        self.inner.mmio_write(g, d)
    }
    fn tsc(&mut self) -> Result<u64, vm_monitor::EnvError> {
        self.inner.tsc()
    }
    fn random(
        &mut self,
        k: vm_monitor::RandomKind,
        s: u8,
    ) -> Result<Option<u64>, vm_monitor::EnvError> {
        self.inner.random(k, s)
    }
    fn next_async(
        &mut self,
        at: &vm_monitor::AsyncPoint<'_>,
    ) -> Result<Option<vm_monitor::AsyncInput>, vm_monitor::EnvError> {
        if !std::mem::replace(&mut self.sent, true) {
            let data = (0..200 * 1024).map(|i| (i * 7 + 1) as u8).collect();
            return Ok(Some(vm_monitor::AsyncInput::DmaWrite {
                gpa: 0x40_0000,
                data,
            }));
        }
        self.inner.next_async(at)
    }
    fn interrupt_waiting(&mut self) -> Result<bool, vm_monitor::EnvError> {
        self.inner.interrupt_waiting()
    }
    fn idle(
        &mut self,
        l: Option<std::time::Instant>,
    ) -> Result<vm_monitor::Idle, vm_monitor::EnvError> {
        self.inner.idle(l)
    }
    fn next_deadline(&mut self) -> Option<std::time::Instant> {
        self.inner.next_deadline()
    }
}

impl vm_monitor::record::Recordable for BigDma {}

#[test]
fn large_dma_transfers_are_split_and_replay() {
    let machine = common::machine("hello");
    let mut vcpu = common::soft_vcpu(&machine);
    let big = BigDma {
        inner: live(&machine, Box::new(std::io::sink()), None, None),
        sent: false,
    };
    let (_, records) = record_run(
        &machine,
        &mut vcpu,
        big,
        RecordOptions::default(),
        &RunLimits::default(),
    );
    let dma: Vec<usize> = records
        .iter()
        .filter_map(|r| match r {
            Record::DmaWrite(d) => Some(d.bytes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(dma, [65536, 65536, 65536, 8192], "split at 64 KiB");
    let (end, _) = replay("hello", records, 0);
    assert!(matches!(end, ReplayEnd::Verified { .. }), "{end:?}");
}

/// Exit-synchronous recording of a guest that spins without exits (`timer`'s
/// ring-3 tasks): its PIT ticks can only be delivered at an exit, so it
/// never gets one — the documented cost of the mode — and the recording is
/// stopped by its time limit at a point no replay could stop at. It ends at
/// the last clock tick instead (no input was delivered after it), and the
/// replay verifies up to there and stops the same way.
#[test]
fn a_stopped_exit_synchronous_recording_ends_at_its_last_tick() {
    let machine = common::machine("timer");
    let mut vcpu = exit_sync_vcpu(&machine);
    let live = live(&machine, Box::new(std::io::sink()), None, None);
    let limits = RunLimits {
        wall: Some(std::time::Duration::from_millis(300)),
        exits: None,
        exit_synchronous: true,
    };
    let (result, records) =
        record_run(&machine, &mut vcpu, live, RecordOptions::default(), &limits);
    // `finish` reads the vCPU but does not run it: its exit count is still
    // the one the run stopped at.
    let ticks = vcpu.deterministic_exits().unwrap();
    assert!(
        matches!(result.unwrap().stop, vm_monitor::StopReason::TimeLimit(_)),
        "the spinning guest cannot finish without its ticks"
    );
    let Some(Record::End(end)) = records.last() else {
        panic!("no end record");
    };
    let at = end.at.expect("the end's point");
    assert_eq!(at.branches, ticks, "the end is at the last clock tick");
    let regs_now = vcpu.regs().unwrap();
    assert_ne!(
        at.rip, regs_now.rip,
        "the guest ran on from the tick (or this test shows nothing)"
    );

    let machine = common::machine("timer");
    let mut vcpu = exit_sync_vcpu(&machine);
    let env = replay_env(
        &machine,
        records,
        CounterMode::ExitSynchronous,
        0,
        Box::new(std::io::sink()),
    );
    let limits = RunLimits {
        exit_synchronous: true,
        ..RunLimits::default()
    };
    let end = replay_run(&machine, &mut vcpu, env, &limits);
    assert_eq!(
        end,
        ReplayEnd::Verified {
            end: motion_records::EndStatus::Stopped
        }
    );
}
