//! `motion log inspect|verify` end to end on logs written by log-store.

use std::path::Path;
use std::process::{Command, Output};

use log_store::{Durability, LogWriter, WriterConfig, sample};
use motion_e2e::motion_bin::motion_bin;
use serde_json::Value;

fn write_log(path: &Path, n: u64, seal: bool) {
    let cfg = WriterConfig {
        durability: Durability::AtSeal,
        block_bytes: 4096,
        ..WriterConfig::default()
    };
    let mut w = LogWriter::create(path, &sample::machine(), cfg).unwrap();
    let batch: Vec<_> = (0..n).map(|i| sample::mixed(9, i)).collect();
    w.append(&batch).unwrap();
    if seal {
        w.seal().unwrap();
    } else {
        w.flush().unwrap();
    }
}

fn motion(args: &[&str], log: &Path) -> Output {
    Command::new(motion_bin())
        .args(args)
        .arg(log)
        .output()
        .expect("run motion")
}

fn last_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line not JSON ({e}): {text}"))
}

#[test]
fn inspect_reports_header_counts_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.motionlog");
    write_log(&log, 3000, true);
    let out = motion(&["log", "inspect", "--json"], &log);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&out);
    assert_eq!(v["state"], "sealed");
    assert_eq!(v["records"], 3000);
    assert_eq!(v["machine"]["backend"], "soft");
    assert_eq!(v["machine"]["vcpus"], 2);
    assert_eq!(v["machine"]["counter_mode"], "exact");
    let counted: u64 = v["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 3000);
    assert!(v["counts"]["port-in"].as_u64().unwrap() > 1000);
    assert!(v["compression_ratio"].as_f64().unwrap() > 1.5, "{v}");
    assert_eq!(v["file_bytes"], std::fs::metadata(&log).unwrap().len());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("port-in"), "{text}");
}

#[test]
fn verify_passes_intact_logs_and_pinpoints_damage() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = dir.path().join("s.motionlog");
    write_log(&sealed, 2000, true);
    let out = motion(&["log", "verify", "--json"], &sealed);
    assert_eq!(out.status.code(), Some(0));
    let v = last_json(&out);
    assert_eq!(
        (
            v["intact"].clone(),
            v["sealed"].clone(),
            v["records"].clone()
        ),
        (true.into(), true.into(), 2000.into())
    );

    let unsealed = dir.path().join("u.motionlog");
    write_log(&unsealed, 500, false);
    let out = motion(&["log", "verify"], &unsealed);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unsealed"));

    // Flip one byte inside the third block: verify names that block and its offset.
    let r = log_store::LogReader::open(&sealed).unwrap();
    let b2 = r.blocks()[2].clone();
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[(b2.offset + 100) as usize] ^= 0x20;
    let bad = dir.path().join("bad.motionlog");
    std::fs::write(&bad, &bytes).unwrap();
    let out = motion(&["log", "verify", "--json"], &bad);
    assert_eq!(out.status.code(), Some(1));
    let v = last_json(&out);
    assert_eq!(v["intact"], false);
    assert_eq!(v["fault"]["region"]["kind"], "block");
    assert_eq!(v["fault"]["region"]["block"], 2);
    assert_eq!(v["fault"]["offset"], b2.offset);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("block 2 at offset {}", b2.offset)),
        "{text}"
    );

    let out = motion(&["log", "verify"], &dir.path().join("missing"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_log_reports_in_and_across_process_figures() {
    let out = Command::new(motion_bin())
        .args([
            "bench",
            "log",
            "--records",
            "20000",
            "--mixed",
            "5000",
            "--json",
        ])
        .output()
        .expect("run motion");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&out);
    for key in [
        "inproc_records_per_s",
        "inproc_baseline_records_per_s",
        "xproc_records_per_s",
        "xproc_baseline_records_per_s",
        "bytes_per_record",
        "raw_bytes_per_record",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    // Compressed is smaller than framed raw for the mix.
    assert!(
        v["bytes_per_record"].as_f64() < v["raw_bytes_per_record"].as_f64(),
        "{v}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("baseline"), "{text}");
}
