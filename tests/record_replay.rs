//! Acceptance: recordings of the bundled guests under real host timing
//! replay exactly.
//!
//! For each of `timer`, `disk`, `entropy` and `serial-echo`, 20 recordings
//! (`MOTION_RR_RECORDINGS=N` for more) are made with `motion record` — the
//! monitor and log store in their sandboxed processes — and each is
//! replayed with `motion replay` (every other one with the soft vCPU's
//! counter interrupt skidding 100 instructions, so landing must arm early
//! and step): every replay must verify, print exactly the recorded serial
//! output, and end on the recording's final digest.
//!
//! The recordings must also differ from one another — proof that the
//! non-determinism was captured, not avoided: `timer` (tick timepoints),
//! `entropy` (TSC, RDRAND, RDSEED, RTC), `serial-echo` (input arrival
//! points) and `disk` (completion timepoints: the monitor's disk thread
//! serves each request while the guest works on the previous chunk, and the
//! data, status, used ring and interrupt land wherever the guest has got to
//! when the host finished the read). More than half of the recordings must
//! be distinct in their timing-dependent inputs; the test prints how many
//! were, and how many distinct timepoints their interrupts landed at.

#[path = "record_replay_common.rs"]
mod common;

use std::collections::BTreeSet;

use motion_records::Record;

use common::{
    Fixtures, final_digest, read_log, record, replay, replay_output, scale, timing_fingerprint,
};

fn recordings_replay_exactly(name: &'static str, expect_differ: bool) {
    let fx = Fixtures::new();
    let g = fx.guest(name);
    let n = scale("MOTION_RR_RECORDINGS", 20);
    let mut fingerprints = BTreeSet::new();
    let mut outputs = BTreeSet::new();
    // Where interrupts landed, over all recordings: how varied the points are.
    let mut irq_points = BTreeSet::new();
    let mut irqs = 0usize;
    for i in 0..n {
        let log = fx.path(&format!("{name}-{i}.motionlog"));
        let rec = record(&g, &log, &[]);
        assert_eq!(
            rec.code,
            Some(0),
            "{name} recording {i}: {}\n{}",
            rec.stderr,
            rec.text
        );
        assert_eq!(
            rec.json["recorded"], true,
            "{name} recording {i}: {}",
            rec.json
        );
        let (_, records) = read_log(&log);
        assert_eq!(
            rec.json["records"].as_u64(),
            Some(records.len() as u64),
            "{name} recording {i}: the log holds every record written"
        );
        // Every other replay with an imprecise counter: the soft vCPU's
        // overflow interrupt skids up to 100 instructions, and landing arms
        // that many branches early and single-steps the rest.
        let skid = if i % 2 == 1 { "100" } else { "0" };
        let rep = replay(&g, &log, &["--pmi-skid", skid]);
        assert_eq!(
            rep.code,
            Some(0),
            "{name} replay {i} (skid {skid}): {}\n{}",
            rep.stderr,
            rep.text
        );
        assert_eq!(
            rep.json["verified"], true,
            "{name} replay {i}: {}",
            rep.json
        );
        assert_eq!(
            rep.json["records"].as_u64(),
            Some(records.len() as u64),
            "{name} replay {i} used every record"
        );
        assert_eq!(
            replay_output(&rep),
            rec.text,
            "{name} replay {i}: serial output differs from the recording's"
        );
        assert!(
            rep.text.contains("replay verified: "),
            "{name} replay {i}: no verdict line in {}",
            rep.text
        );
        let digest = final_digest(&records).expect("a final digest");
        assert_eq!(
            rep.json["digest"].as_str(),
            Some(digest.as_str()),
            "{name} replay {i} ends on the recording's final digest"
        );
        fingerprints.insert(timing_fingerprint(&records));
        for r in &records {
            if let Record::Interrupt(i) = r {
                irqs += 1;
                let t = i.at;
                irq_points.insert((i.vector, t.vcpu, t.branches, t.rip, t.rcx));
            }
        }
        outputs.insert(rec.text);
    }
    eprintln!(
        "{name}: {n} recordings, {} distinct in their timing-dependent inputs, {} distinct outputs; \
         {irqs} interrupts at {} distinct timepoints; all replayed exactly",
        fingerprints.len(),
        outputs.len(),
        irq_points.len()
    );
    if expect_differ {
        assert!(
            fingerprints.len() > n / 2,
            "{name}: only {} of {n} recordings differ in their timing-dependent inputs",
            fingerprints.len()
        );
    } else {
        assert_eq!(
            fingerprints.len(),
            1,
            "{name}: inputs that should not depend on timing differ between recordings"
        );
    }
}

#[test]
fn timer_recordings_differ_and_replay_exactly() {
    recordings_replay_exactly("timer", true);
}

#[test]
fn disk_recordings_differ_and_replay_exactly() {
    recordings_replay_exactly("disk", true);
}

#[test]
fn entropy_recordings_differ_and_replay_exactly() {
    recordings_replay_exactly("entropy", true);
}

#[test]
fn serial_echo_recordings_differ_and_replay_exactly() {
    recordings_replay_exactly("serial-echo", true);
}

/// A log is refused up front when the guest or disk image given to replay it
/// is not the one recorded; the message names both hashes.
#[test]
fn logs_from_other_images_are_refused_up_front() {
    let fx = Fixtures::new();
    let g = fx.guest("disk");
    let log = fx.path("disk.motionlog");
    let rec = record(&g, &log, &[]);
    assert_eq!(rec.code, Some(0), "{}", rec.stderr);
    let (machine, _) = read_log(&log);
    let hex = motion_records::hex;

    let other = guest_images::bytes("hello").unwrap();
    let rep = replay(&g, &log, &["--guest", "hello"]);
    assert_eq!(rep.code, Some(4), "{}\n{}", rep.text, rep.stderr);
    let why = rep.json["refused"].as_str().unwrap_or_default().to_string();
    assert!(why.contains(&hex(&machine.guest_image)), "{why}");
    assert!(
        why.contains(&hex(blake3_of(other).as_slice())),
        "names the given image's hash: {why}"
    );

    let mut disk = std::fs::read(fx.path("disk.img")).unwrap();
    disk[100] ^= 1;
    std::fs::write(fx.path("other.img"), &disk).unwrap();
    let other_disk = fx.path("other.img").display().to_string();
    let plain = common::Guest {
        replay_args: vec![],
        ..g.clone()
    };
    let rep = replay(&plain, &log, &["--disk", &other_disk]);
    assert_eq!(rep.code, Some(4), "{}\n{}", rep.text, rep.stderr);
    let why = rep.json["refused"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains(&hex(&machine.disk_image.unwrap())),
        "names the recorded disk: {why}"
    );
    assert!(why.contains(&hex(blake3_of(&disk).as_slice())), "{why}");
    let rep = replay(&plain, &log, &[]);
    assert_eq!(rep.code, Some(4), "no disk given: {}", rep.text);
}

fn blake3_of(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// `motion demo` (what `./demo` ends with) records and replays `timer`.
#[test]
fn the_demo_verifies() {
    let o = std::process::Command::new(motion_e2e::motion_bin::motion_bin())
        .args(["demo", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run motion demo");
    let r = common::parse(o);
    assert_eq!(r.code, Some(0), "{}\n{}", r.text, r.stderr);
    assert_eq!(r.json["verified"], true, "{}", r.json);
    assert_eq!(r.json["output_identical"], true, "{}", r.json);
    assert!(r.text.contains("replay verified: "), "{}", r.text);
}

/// A recording stopped by the host (`--timeout`) ends `stopped` at a
/// timepoint mid-run; the replay lands exactly there, compares the final
/// digest, and verifies.
#[test]
fn a_stopped_recording_replays_to_its_stop_point() {
    let fx = Fixtures::new();
    let g = fx.guest("timer");
    for (i, t) in ["0.12", "0.2", "0.3"].iter().enumerate() {
        let log = fx.path(&format!("stopped-{i}.motionlog"));
        let rec = record(&g, &log, &["--timeout", t]);
        assert_eq!(rec.code, Some(0), "{}", rec.stderr);
        assert_eq!(rec.json["end"], "stopped", "{}", rec.json);
        let (_, records) = read_log(&log);
        let rep = replay(&g, &log, &["--quiet"]);
        assert_eq!(rep.code, Some(0), "{}\n{}", rep.text, rep.stderr);
        assert_eq!(rep.json["verified"], true, "{}", rep.json);
        assert_eq!(
            rep.json["digest"].as_str(),
            final_digest(&records).as_deref(),
            "{}",
            rep.json
        );
    }
}
