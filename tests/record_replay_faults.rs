//! Acceptance: replay notices a log that is not what happened.
//!
//! One recording per guest (`timer`, `disk`, `entropy`, `serial-echo`);
//! then ≥ 100 seeded corruptions (`MOTION_RR_FAULTS=N` for more), each a
//! copy of one log with **one** record's value or timepoint changed,
//! written as a new, valid log through the log-store writer — checksums and
//! hash chain are right, so the log store cannot tell, and it is the replay
//! that must. Every corrupted log must end `motion replay` with a
//! divergence (exit status 2) reported at the changed record or within the
//! few records that follow it (the state check after the same exit, the
//! next landing, or the digest that covers the memory a DMA write changed),
//! 100%.

#[path = "record_replay_common.rs"]
mod common;

use common::{
    Fixtures, Subject, alter_dma_write, flip_port_in, replay, replay_altered, scale, write_log,
};
use motion_records::Record;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How far after the altered record the divergence may be reported.
const WINDOW: u64 = 8;

/// Change one field of `r` that replay depends on; `None` if `r` carries
/// nothing to alter. Returns the new record and what was changed.
fn corrupt(r: &Record, rng: &mut ChaCha8Rng) -> Option<(Record, String)> {
    let mut r = r.clone();
    let what = match &mut r {
        Record::PortIn(p) => flip_port_in(p, rng),
        Record::Rdtsc(t) => {
            t.value ^= 1 << rng.random_range(0..40);
            "rdtsc value".into()
        }
        Record::Rdtscp(t) => {
            t.value ^= 1 << rng.random_range(0..40);
            "rdtscp value".into()
        }
        Record::Rdrand(x) => {
            x.value ^= 1 << rng.random_range(0..64);
            "rdrand value".into()
        }
        Record::Rdseed(x) => {
            x.value ^= 1 << rng.random_range(0..64);
            "rdseed value".into()
        }
        Record::Interrupt(i) => match rng.random_range(0..3) {
            0 => {
                let d = rng.random_range(1..=64);
                i.at.branches = if rng.random_bool(0.5) {
                    i.at.branches.saturating_sub(d)
                } else {
                    i.at.branches + d
                };
                format!("interrupt timepoint branches ±{d}")
            }
            1 => {
                i.at.rip ^= 1 << rng.random_range(0..12);
                "interrupt timepoint rip".into()
            }
            _ => {
                i.vector ^= 1 << rng.random_range(0..3);
                "interrupt vector".into()
            }
        },
        Record::DmaWrite(d) => alter_dma_write(d, rng, 64)?,
        _ => return None,
    };
    Some((r, what))
}

fn subject(fx: &Fixtures, name: &'static str) -> Subject {
    common::subject(fx, name, &[], corrupt)
}

#[test]
fn every_altered_record_is_reported_at_or_right_after_it() {
    let fx = Fixtures::new();
    let subjects: Vec<Subject> = ["timer", "disk", "entropy", "serial-echo"]
        .into_iter()
        .map(|n| subject(&fx, n))
        .collect();
    let n = scale("MOTION_RR_FAULTS", 100);
    let mut caught = 0;
    let mut distances = Vec::new();
    let mut failures = Vec::new();
    for seed in 0..n as u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // The timer guest takes ten times longer to replay: one in eight.
        let s = match seed % 8 {
            0 => &subjects[0],
            k => &subjects[1 + (k as usize % 3)],
        };
        let log = fx.path(&format!("fault-{seed}.motionlog"));
        match replay_altered(s, corrupt, &mut rng, &log, &["--quiet"], WINDOW) {
            Ok(distance) => {
                caught += 1;
                distances.push(distance);
            }
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    distances.sort_unstable();
    eprintln!(
        "{caught}/{n} corruptions reported at or within {WINDOW} records after the altered one; distances: {distances:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(caught, n);
}

/// Without the state checks (a log stripped of them), a wrong DMA byte is
/// noticed only by a digest's memory hash: the report names the first
/// differing page, which is the page the altered byte went to.
#[test]
fn a_memory_difference_names_the_first_differing_page() {
    let fx = Fixtures::new();
    let s = subject(&fx, "disk");
    let records: Vec<Record> = s
        .records
        .iter()
        .filter(|r| !matches!(r, Record::StateCheck(_)))
        .cloned()
        .collect();
    // The last data transfer: no later one overwrites the buffer.
    let (i, page, k) = records
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, r)| match r {
            Record::DmaWrite(d) if d.bytes.len() >= 512 => {
                let k = d.bytes.len() / 2 + 7;
                Some((i, (d.gpa + k as u64) / 4096, k))
            }
            _ => None,
        })
        .expect("a data DMA write");
    let mut bad = records.clone();
    if let Record::DmaWrite(d) = &mut bad[i] {
        d.bytes[k] ^= 0x40;
    }
    let log = fx.path("stripped-bad.motionlog");
    write_log(&log, &s.machine, &bad);
    let rep = replay(&s.guest, &log, &["--quiet"]);
    eprintln!("{}", rep.text);
    assert_eq!(rep.code, Some(2), "{}", rep.text);
    let at = rep.json["divergence_record"].as_u64().unwrap();
    assert!(at > i as u64, "noticed at a later digest: {}", rep.json);
    assert!(
        matches!(records[at as usize], Record::Digest(_)),
        "reported at a digest record: {}",
        rep.json
    );
    assert_eq!(
        rep.json["divergence_page"].as_u64(),
        Some(page),
        "the page the altered byte went to: {}",
        rep.json
    );
    assert!(rep.text.contains("first differing page"), "{}", rep.text);
}
