//! Helpers shared by the record/replay end-to-end tests (included with
//! `#[path]`): running `motion record` / `motion replay`, reading and
//! rewriting logs through the log-store API, inputs and disk images, and
//! replaying copies of a log with one record altered.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use log_store::{LogReader, LogWriter, WriterConfig};
use motion_e2e::motion_bin::motion_bin;
use motion_records::{DmaWrite, MachineInfo, PortIn, Record};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How many of something to do: `default`, or the environment variable's value.
pub fn scale(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A guest's recording setup: name, extra `motion record` args (input, disk),
/// and the `motion replay` args it needs (disk).
#[derive(Debug, Clone)]
pub struct Guest {
    /// Bundled guest name.
    pub name: &'static str,
    /// Extra arguments for `motion record`.
    pub record_args: Vec<String>,
    /// Extra arguments for `motion replay`.
    pub replay_args: Vec<String>,
}

/// The fixtures a set of guests needs, kept alive with the directory.
pub struct Fixtures {
    /// The directory (logs go here too).
    pub dir: tempfile::TempDir,
}

impl Fixtures {
    /// A fresh directory with a disk image and a serial input file.
    pub fn new() -> Fixtures {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = guest_images::samples::disk_image();
        std::fs::write(dir.path().join("disk.img"), disk).expect("disk image");
        let input = guest_images::samples::serial_input();
        std::fs::write(dir.path().join("input.txt"), input).expect("input");
        Fixtures { dir }
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The setup of bundled guest `name`.
    pub fn guest(&self, name: &'static str) -> Guest {
        let p = |s: &str| self.path(s).display().to_string();
        match name {
            "disk" | "disk-r3" => Guest {
                name,
                record_args: vec!["--disk".into(), p("disk.img")],
                replay_args: vec!["--disk".into(), p("disk.img")],
            },
            "serial-echo" | "serial-echo-r3" => Guest {
                name,
                record_args: vec!["--input".into(), p("input.txt")],
                replay_args: vec![],
            },
            _ => Guest {
                name,
                record_args: vec![],
                replay_args: vec![],
            },
        }
    }
}

impl Default for Fixtures {
    fn default() -> Self {
        Fixtures::new()
    }
}

/// What a `motion` run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit status code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output without the last (JSON) line.
    pub text: String,
    /// The last line of standard output, parsed as JSON (`Null` if it is not).
    pub json: serde_json::Value,
    /// Standard error.
    pub stderr: String,
}

/// Split `motion --json` output into text and the final JSON object.
pub fn parse(out: Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let trimmed = stdout.trim_end_matches('\n');
    let (text, last) = match trimmed.rfind('\n') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    let json = serde_json::from_str(last).unwrap_or(serde_json::Value::Null);
    Run {
        code: out.status.code(),
        text: text.to_string(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `motion record --guest NAME --out LOG --json` plus the guest's args.
pub fn record(g: &Guest, out: &Path, extra: &[&str]) -> Run {
    let o = Command::new(motion_bin())
        .arg("record")
        .args(["--guest", g.name, "--json", "--out"])
        .arg(out)
        .args(&g.record_args)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run motion record");
    parse(o)
}

/// `motion replay LOG --json` plus the guest's args.
pub fn replay(g: &Guest, log: &Path, extra: &[&str]) -> Run {
    let o = Command::new(motion_bin())
        .arg("replay")
        .arg(log)
        .arg("--json")
        .args(&g.replay_args)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run motion replay");
    parse(o)
}

/// The guest's serial output in a replay's text: everything before the
/// verdict line.
pub fn replay_output(r: &Run) -> String {
    match r.text.rfind("replay ") {
        Some(i) => r.text[..i].to_string(),
        None => r.text.clone(),
    }
}

/// A log's machine description and records.
pub fn read_log(path: &Path) -> (MachineInfo, Vec<Record>) {
    let r = LogReader::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let records = r.records().map(|x| x.expect("readable record").1).collect();
    (r.machine().clone(), records)
}

/// Write `records` as a new, valid (sealed) log at `path` through the
/// log-store writer: checksums and hash chain are right, so only replay can
/// tell that something in it is not what happened.
pub fn write_log(path: &Path, machine: &MachineInfo, records: &[Record]) {
    let mut w = LogWriter::create(path, machine, WriterConfig::default()).expect("create log");
    for chunk in records.chunks(256) {
        w.append(chunk).expect("append");
    }
    w.seal().expect("seal");
}

/// Write the first `n` records as an unsealed log, as a writer that died
/// after they became durable leaves it.
pub fn write_prefix(path: &Path, machine: &MachineInfo, records: &[Record], n: usize) {
    let mut w = LogWriter::create(path, machine, WriterConfig::default()).expect("create log");
    w.append(&records[..n]).expect("append");
    w.flush().expect("flush");
    drop(w);
}

/// The memory hash of a log's last digest record.
pub fn final_digest(records: &[Record]) -> Option<String> {
    records.iter().rev().find_map(|r| match r {
        Record::Digest(d) => Some(motion_records::hex(&d.memory_hash)),
        _ => None,
    })
}

/// The inputs of a recording that depend on host timing: timepoints of
/// asynchronous events and the values of clocks and random numbers.
pub fn timing_fingerprint(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Interrupt(i) => Some(format!("irq {:#x} {:?}", i.vector, i.at)),
            Record::DmaWrite(d) => Some(format!("dma {:#x} {:?}", d.gpa, d.at)),
            Record::Rdtsc(t) => Some(format!("tsc {}", t.value)),
            Record::Rdtscp(t) => Some(format!("tscp {}", t.value)),
            Record::Rdrand(x) => Some(format!("rdrand {}", x.value)),
            Record::Rdseed(x) => Some(format!("rdseed {}", x.value)),
            Record::PortIn(p) => Some(format!("in {:#x} {:#x}", p.port, p.value)),
            _ => None,
        })
        .collect()
}

/// Change one field of a record that replay depends on: the new record and
/// what was changed, or `None` if the record carries nothing to alter.
pub type Corrupt = fn(&Record, &mut ChaCha8Rng) -> Option<(Record, String)>;

/// Flip some bits of a port read's value (within its size).
pub fn flip_port_in(p: &mut PortIn, rng: &mut ChaCha8Rng) -> String {
    let mask = match p.size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    };
    let flip = rng.random_range(1..=mask);
    p.value ^= flip;
    format!("port-in {:#x} value ^= {flip:#x}", p.port)
}

/// Alter a DMA write: one byte of its data (7 in 10) or its timepoint,
/// moved later by 1 to `max_shift` branches (the exit clock in
/// exit-synchronous logs). `None` for an empty write or one without a
/// timepoint when that is picked.
pub fn alter_dma_write(d: &mut DmaWrite, rng: &mut ChaCha8Rng, max_shift: u64) -> Option<String> {
    if d.bytes.is_empty() {
        return None;
    }
    if rng.random_bool(0.7) {
        let k = rng.random_range(0..d.bytes.len());
        d.bytes[k] ^= rng.random_range(1..=255u8);
        Some(format!("dma-write byte {k} of {}", d.bytes.len()))
    } else {
        let at = d.at.as_mut()?;
        let shift = rng.random_range(1..=max_shift);
        at.branches += shift;
        Some(format!("dma-write timepoint +{shift} branches"))
    }
}

/// A recording to make altered copies of.
pub struct Subject {
    /// The guest recorded.
    pub guest: Guest,
    /// The log's machine description.
    pub machine: MachineInfo,
    /// The log's records.
    pub records: Vec<Record>,
    /// Indices of records that `corrupt` finds something to alter in.
    pub sites: Vec<usize>,
}

/// Record bundled guest `name` (with `extra` `motion record` args) in
/// `fx`'s directory; the recording must succeed.
pub fn subject(fx: &Fixtures, name: &'static str, extra: &[&str], corrupt: Corrupt) -> Subject {
    let guest = fx.guest(name);
    let log = fx.path(&format!("{name}.motionlog"));
    let rec = record(&guest, &log, extra);
    assert_eq!(rec.code, Some(0), "recording {name}: {}", rec.stderr);
    let (machine, records) = read_log(&log);
    let mut probe = ChaCha8Rng::seed_from_u64(0);
    let sites = (0..records.len())
        .filter(|&i| corrupt(&records[i], &mut probe).is_some())
        .collect();
    Subject {
        guest,
        machine,
        records,
        sites,
    }
}

/// Replay (with `extra` `motion replay` args) a copy of `s`'s log in which
/// one record, picked and altered by `corrupt` with `rng`, is changed —
/// written as a new, valid log at `log`, so that only replay can tell.
/// `Ok(distance)` when the replay ends in a divergence reported at the
/// altered record or within `window` records after it; otherwise `Err`
/// saying what was altered and how the replay ended.
pub fn replay_altered(
    s: &Subject,
    corrupt: Corrupt,
    rng: &mut ChaCha8Rng,
    log: &Path,
    extra: &[&str],
    window: u64,
) -> Result<u64, String> {
    let i = s.sites[rng.random_range(0..s.sites.len())];
    let Some((bad, what)) = corrupt(&s.records[i], rng) else {
        unreachable!("sites carry something to alter")
    };
    let mut records = s.records.clone();
    records[i] = bad;
    write_log(log, &s.machine, &records);
    let rep = replay(&s.guest, log, extra);
    std::fs::remove_file(log).ok();
    match (rep.code, rep.json["divergence_record"].as_u64()) {
        (Some(2), Some(at)) if at >= i as u64 && at <= i as u64 + window => Ok(at - i as u64),
        _ => Err(format!(
            "{} record {i} ({what}): exit {:?}, {}",
            s.guest.name, rep.code, rep.json
        )),
    }
}
