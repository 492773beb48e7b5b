//! Acceptance: logs cut short by a crash.
//!
//! * A log truncated anywhere — its first K records written by a writer that
//!   then died, or its file cut at an arbitrary byte as a crash leaves it —
//!   replays its prefix and stops cleanly (`motion replay` exit status 3,
//!   `truncated` in the JSON, no divergence).
//! * A monitor process SIGKILLed in the middle of a recording leaves a log
//!   that replays up to (at least) the last record the store had
//!   acknowledged as durable before the kill.

#[path = "record_replay_common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixtures, read_log, record, replay, scale, write_prefix};
use motion_e2e::motion_bin::motion_bin;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn assert_prefix_replays(g: &common::Guest, log: &std::path::Path, records: u64, what: &str) {
    let rep = replay(g, log, &["--quiet"]);
    assert_eq!(
        rep.code,
        Some(3),
        "{what}: expected a clean stop (3), got {:?}: {}\n{}",
        rep.code,
        rep.text,
        rep.stderr
    );
    assert_eq!(rep.json["truncated"], true, "{what}: {}", rep.json);
    assert_eq!(rep.json["verified"], false, "{what}: {}", rep.json);
    assert!(
        rep.json["divergence_record"].is_null(),
        "{what}: {}",
        rep.json
    );
    assert_eq!(
        rep.json["records"].as_u64(),
        Some(records),
        "{what}: every record of the prefix replayed: {}",
        rep.json
    );
    assert!(
        rep.text.contains("replay stopped: the log ends after"),
        "{what}: {}",
        rep.text
    );
}

#[test]
fn truncated_logs_replay_their_prefix_and_stop_cleanly() {
    let fx = Fixtures::new();
    let n = scale("MOTION_RR_TRUNCATIONS", 6);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for name in ["timer", "serial-echo", "disk"] {
        let g = fx.guest(name);
        let log = fx.path(&format!("{name}.motionlog"));
        let rec = record(&g, &log, &[]);
        assert_eq!(rec.code, Some(0), "recording {name}: {}", rec.stderr);
        let (machine, records) = read_log(&log);
        for k in 0..n {
            // The first K records, unsealed.
            let cut = rng.random_range(1..records.len() - 1);
            let p = fx.path(&format!("{name}-prefix-{k}.motionlog"));
            write_prefix(&p, &machine, &records, cut);
            assert_prefix_replays(&g, &p, cut as u64, &format!("{name}: first {cut} records"));

            // The file cut at a byte, as a crash leaves it.
            let bytes = std::fs::read(&log).unwrap();
            let at = rng.random_range(bytes.len() / 8..bytes.len() - 64);
            let p = fx.path(&format!("{name}-cut-{k}.motionlog"));
            std::fs::write(&p, &bytes[..at]).unwrap();
            let held = log_store::LogReader::open(&p)
                .unwrap_or_else(|e| panic!("{name} cut at byte {at}: {e}"))
                .record_count();
            if held == records.len() as u64 {
                // Only the seal was lost: the recording itself is whole.
                let rep = replay(&g, &p, &["--quiet"]);
                assert_eq!(rep.code, Some(0), "{name} cut at {at}: {}", rep.text);
            } else {
                assert_prefix_replays(
                    &g,
                    &p,
                    held,
                    &format!(
                        "{name}: file cut at byte {at} of {} ({held} records)",
                        bytes.len()
                    ),
                );
            }
        }
    }
}

#[test]
fn a_killed_monitor_leaves_a_log_that_replays_up_to_its_last_acknowledged_record() {
    let fx = Fixtures::new();
    // Enough input to keep serial-echo busy for seconds at line rate.
    let mut input = String::new();
    for i in 0..1500 {
        input += &format!("line {i} of a long session\n");
    }
    input += "quit\n";
    let input_path = fx.path("long-input.txt");
    std::fs::write(&input_path, input).unwrap();
    let log = fx.path("killed.motionlog");
    let mut child = Command::new(motion_bin())
        .args(["record", "--guest", "serial-echo", "--events", "--out"])
        .arg(&log)
        .arg("--input")
        .arg(&input_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start motion record");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let pid = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no vmm pid in {lines:?}"));
        lines.push(line.clone());
        if let Some(rest) = line.split("domain `vmm` started as pid ").nth(1) {
            break rest.trim().parse::<i32>().expect("pid");
        }
    };
    // Let it record for a while (the store acknowledges batches meanwhile).
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) with a pid we were told is our grandchild's; no memory involved.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill the vmm domain");
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(
        !status.success(),
        "motion record must fail when its monitor dies:\n{text}"
    );
    assert!(text.contains("SIGKILL"), "the death is reported:\n{text}");
    let acked: u64 = text
        .split("the last record acknowledged as durable was number ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledged count in:\n{text}"));
    let held = log_store::LogReader::open(&log)
        .expect("the log survives")
        .record_count();
    eprintln!("killed mid-recording: {acked} records acknowledged, {held} in the log");
    assert!(acked > 0, "the store acknowledged records before the kill");
    assert!(
        held >= acked,
        "{held} records in the log, {acked} acknowledged"
    );
    let g = fx.guest("serial-echo");
    assert_prefix_replays(&g, &log, held, "killed recording");
}
