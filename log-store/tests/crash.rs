//! Crash safety: a child process appends under each durability policy and is
//! SIGKILLed at a seeded random moment; the log must reopen (recovery cuts
//! any torn tail), verify intact, and hold every record the child reported
//! as acknowledged before it died.
//!
//! The child is this test binary run again with `LOG_STORE_CRASH_CHILD` set:
//! it reports `READY`, then `ACK <durable>` after every append or flush, on
//! its stdout (a pipe the parent reads).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use log_store::sample;
use log_store::{Durability, LogError, LogReader, LogWriter, WriterConfig};
use motion_records::Record;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CHILD_ENV: &str = "LOG_STORE_CRASH_CHILD";

fn policy(p: u32) -> Durability {
    match p {
        0 => Durability::EveryBatch,
        1 => Durability::Interval(Duration::from_millis(5)),
        _ => Durability::AtSeal,
    }
}

/// The child's body; a no-op (passing) test when not run as a child.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let path = parts.next().unwrap().to_string();
    let p: u32 = parts.next().unwrap().parse().unwrap();
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total: u64 = rng.random_range(500..30_000);
    let cfg = WriterConfig {
        durability: policy(p),
        block_bytes: [2048, 16 << 10, 64 << 10][rng.random_range(0..3)],
        ..WriterConfig::default()
    };
    let mut out = std::io::stdout().lock();
    let mut w = LogWriter::create(&path, &sample::machine(), cfg).unwrap();
    // libtest has printed "test crash_child ... " without a newline.
    writeln!(out, "\nREADY").unwrap();
    out.flush().unwrap();
    let mut batch: Vec<Record> = Vec::new();
    let mut n = 0u64;
    let mut batches = 0u32;
    while n < total {
        let b = rng.random_range(1..=64u64).min(total - n);
        batch.clear();
        batch.extend((n..n + b).map(|i| sample::mixed(seed, i)));
        let mut ack = w.append(&batch).unwrap();
        n += b;
        batches += 1;
        if matches!(cfg.durability, Durability::AtSeal) && batches % 16 == 0 {
            ack = w.flush().unwrap();
        }
        writeln!(out, "ACK {}", ack.durable).unwrap();
        out.flush().unwrap();
        // Records arrive at a recording's pace, not all at once, so kills
        // land mid-stream as well as after the seal.
        if rng.random_ratio(1, 4) {
            std::thread::sleep(Duration::from_micros(rng.random_range(0..1000)));
        }
    }
    let s = w.seal().unwrap();
    writeln!(out, "ACK {}", s.records).unwrap();
    writeln!(out, "SEALED").unwrap();
    out.flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

struct Trial {
    acked: u64,
    kept: u64,
    sealed: bool,
    truncated: bool,
}

fn run_trial(dir: &std::path::Path, trial: u32, rng: &mut ChaCha8Rng) -> Trial {
    let p = trial % 3;
    let seed = rng.random::<u64>();
    let path = dir.join(format!("crash-{trial}.log"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{p}|{seed}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait until the log exists, then kill at a random moment.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not start");
        if line == "READY" {
            break;
        }
    }
    let delay = rng.random_range(0..150_000u64);
    std::thread::sleep(Duration::from_micros(delay));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let mut acked = 0;
    let mut sealed_reported = false;
    for line in rx.try_iter() {
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = acked.max(n.parse::<u64>().unwrap());
        }
        sealed_reported |= line == "SEALED";
    }

    // Reopen: recover a torn tail if the writer died unsealed.
    let mut truncated = false;
    match LogWriter::recover(&path, WriterConfig::default()) {
        Ok((_w, rec)) => truncated = rec.truncated_bytes > 0,
        Err(LogError::Sealed) => {}
        Err(e) => panic!("trial {trial} (policy {p}, seed {seed}): recovery failed: {e}"),
    }
    let scan = log_store::verify_path(&path).unwrap();
    assert!(
        scan.is_intact(),
        "trial {trial} (policy {p}, seed {seed}): {:?}",
        scan.fault
    );
    assert!(!sealed_reported || scan.sealed.is_some());
    let r = LogReader::open(&path).unwrap();
    assert!(
        r.record_count() >= acked,
        "trial {trial} (policy {p}, seed {seed}): {acked} acknowledged, {} kept",
        r.record_count()
    );
    for item in r.records() {
        let (i, rec) = item.unwrap();
        assert_eq!(
            rec,
            sample::mixed(seed, i),
            "trial {trial}: record {i} differs"
        );
    }
    Trial {
        acked,
        kept: r.record_count(),
        sealed: scan.sealed.is_some(),
        truncated,
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let trials: u32 = std::env::var("LOG_STORE_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(105);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xc4a5_4d01);
    let mut per_policy = [(0u32, 0u64, 0u64, 0u32, 0u32); 3];
    for trial in 0..trials {
        let t = run_trial(dir.path(), trial, &mut rng);
        let s = &mut per_policy[(trial % 3) as usize];
        s.0 += 1;
        s.1 += t.acked;
        s.2 += t.kept;
        s.3 += u32::from(t.sealed);
        s.4 += u32::from(t.truncated);
        let _ = std::fs::remove_file(dir.path().join(format!("crash-{trial}.log")));
    }
    for (p, s) in per_policy.iter().enumerate() {
        eprintln!(
            "{:?}: {} trials, {} records acknowledged, {} kept, {} killed after seal, {} torn tails cut",
            policy(p as u32),
            s.0,
            s.1,
            s.2,
            s.3,
            s.4
        );
    }
    // The kills must have landed at varied moments, or the test proves little.
    let acked: u64 = per_policy.iter().map(|s| s.1).sum();
    let sealed: u32 = per_policy.iter().map(|s| s.3).sum();
    assert!(
        acked > 0 && sealed < trials,
        "kills all landed at one extreme"
    );
}
