//! The ring-3 guest variants (`hello-r3`, `disk-r3`, `serial-echo-r3`,
//! `compute-r3`: the same sources built against the user-mode runtime `urt`)
//! run under `motion run` on the soft vCPU and on KVM and print exactly what
//! the standard guests print on the soft vCPU, with the same exit status.
//!
//! Why they exist: where KVM runs ring-0 guest code in its instruction
//! emulator (the nested `kvm_pvm` of the CAS Motion machines) the standard
//! guests stop at their first SSE instruction; ring-3 code runs natively
//! there (guests/README.md).
//!
//! The KVM halves print why they skip where /dev/kvm is missing or unusable
//! (from `vcpu_kvm::probe`) and pass nothing in that case. Each comparison
//! prints the wall time of each run, the figures the README quotes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use motion_e2e::motion_bin::motion_bin;
use rand::{Rng, SeedableRng};

/// Why the KVM runs cannot happen on this host, if they cannot.
fn kvm_skip_reason() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let report = vcpu_kvm::probe::probe_kvm();
            if report.usable {
                None
            } else if !report.device_present {
                Some("/dev/kvm does not exist".to_string())
            } else {
                Some(format!(
                    "KVM is unusable: {}",
                    report.reason.as_deref().unwrap_or("no reason given")
                ))
            }
        })
        .as_deref()
}

/// One `motion run`: stdout, exit status and wall time.
struct Run {
    out: String,
    err: String,
    status: Option<i32>,
    wall: Duration,
}

fn motion_run(guest: &str, backend: &str, extra: &[&str]) -> Run {
    let t0 = Instant::now();
    let o: Output = Command::new(motion_bin())
        .args([
            "run",
            "--guest",
            guest,
            "--backend",
            backend,
            "--timeout",
            "120",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run motion");
    Run {
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        status: o.status.code(),
        wall: t0.elapsed(),
    }
}

/// Run `reference` on soft and `reference-r3` on soft and (where usable)
/// KVM with the same arguments; all must agree on output and status.
/// Returns the reference run's output.
fn r3_agrees(reference: &str, extra: &[&str], expect_status: i32) -> String {
    let r3 = format!("{reference}-r3");
    let want = motion_run(reference, "soft", extra);
    assert_eq!(
        want.status,
        Some(expect_status),
        "{reference} on soft: {}\n{}",
        want.err,
        want.out
    );
    let soft = motion_run(&r3, "soft", extra);
    assert_eq!(
        soft.out, want.out,
        "{r3} on soft vs {reference} on soft ({})",
        soft.err
    );
    assert_eq!(
        soft.status, want.status,
        "{r3} on soft: exit status ({})",
        soft.err
    );
    println!(
        "{r3}: soft {:.3} s ({reference} on soft {:.3} s)",
        soft.wall.as_secs_f64(),
        want.wall.as_secs_f64()
    );
    match kvm_skip_reason() {
        Some(why) => println!("skipped: {r3} on kvm: {why}"),
        None => {
            let kvm = motion_run(&r3, "kvm", extra);
            assert_eq!(
                kvm.out, want.out,
                "{r3} on kvm vs {reference} on soft ({})",
                kvm.err
            );
            assert_eq!(
                kvm.status, want.status,
                "{r3} on kvm: exit status ({})",
                kvm.err
            );
            println!("{r3}: kvm {:.3} s", kvm.wall.as_secs_f64());
        }
    }
    want.out
}

#[test]
fn hello_r3_prints_what_hello_prints() {
    let out = r3_agrees("hello", &[], 0);
    assert!(out.contains("hvm_start_info: magic ok\ngoodbye\n"), "{out}");
}

#[test]
fn compute_r3_computes_what_compute_computes() {
    let out = r3_agrees("compute", &[], 0);
    assert!(out.contains("compute: checksum 0x"), "{out}");
}

/// A disk image of `sectors` random sectors.
fn random_disk(path: &Path, sectors: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<u8> = (0..sectors * 512).map(|_| rng.random()).collect();
    std::fs::write(path, data).expect("write disk image");
}

#[test]
fn disk_r3_reads_what_disk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    // More than the 256 sectors the guest reads, not a multiple of 8.
    random_disk(&img, 301, 0xd15c);
    let out = r3_agrees("disk", &["--disk", img.to_str().unwrap()], 0);
    assert!(out.contains("disk: read 256 sectors, checksum 0x"), "{out}");
    assert!(
        out.contains("disk: 32 requests completed by interrupt"),
        "{out}"
    );
}

#[test]
fn disk_r3_without_a_device_fails_like_disk() {
    let out = r3_agrees("disk", &[], 5);
    assert!(out.contains("no virtio-blk device"), "{out}");
}

/// 100 random lines: more input than the guest's ring holds, arriving
/// faster than serial-echo-r3 answers on a KVM with slow exits.
#[test]
fn serial_echo_r3_answers_what_serial_echo_answers() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xec43);
    let lines: Vec<String> = (0..100)
        .map(|_| {
            let n = rng.random_range(0..100);
            (0..n)
                .map(|_| b"abcdefghijklmnopqrstuvwxyzABC ,."[rng.random_range(0..32)] as char)
                .collect()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, format!("{}\nquit\n", lines.join("\n"))).unwrap();
    let out = r3_agrees("serial-echo", &["--input", input.to_str().unwrap()], 0);
    let answers = out.lines().filter(|l| l.starts_with("> ")).count();
    assert_eq!(answers, lines.len(), "{out}");
    assert!(out.contains("quit after 100 lines"), "{out}");
}

/// Input ending with EOT instead of `quit`, and a line longer than the
/// guest's line buffer (answered in pieces).
#[test]
fn serial_echo_r3_handles_eot_and_long_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let long: String = "xyz".repeat(100);
    std::fs::write(&input, format!("{long}\nlast line\x04")).unwrap();
    let out = r3_agrees("serial-echo", &["--input", input.to_str().unwrap()], 0);
    assert!(out.contains("> ynfg yvar\nserial-echo: EOT after"), "{out}");
}

/// `motion record` + `motion replay` of the r3 guests on the soft vCPU:
/// they are ordinary recordable guests (the KVM recorder is another branch's).
#[test]
fn r3_guests_record_and_replay_on_soft() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    random_disk(&img, 64, 7);
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "Hello, World\nabc xyz\nquit\n").unwrap();
    let img = img.to_str().unwrap();
    let input = input.to_str().unwrap();
    let cases: [(&str, Vec<&str>, Vec<&str>); 3] = [
        ("hello-r3", vec![], vec![]),
        ("disk-r3", vec!["--disk", img], vec!["--disk", img]),
        ("serial-echo-r3", vec!["--input", input], vec![]),
    ];
    for (guest, rec_args, rep_args) in cases {
        let log = dir.path().join(format!("{guest}.motionlog"));
        let rec = Command::new(motion_bin())
            .args(["record", "--guest", guest, "--json", "--out"])
            .arg(&log)
            .args(&rec_args)
            .stdin(Stdio::null())
            .output()
            .expect("motion record");
        let rec_out = String::from_utf8_lossy(&rec.stdout).into_owned();
        assert_eq!(
            rec.status.code(),
            Some(0),
            "{guest} record: {}\n{rec_out}",
            String::from_utf8_lossy(&rec.stderr)
        );
        let rec_json = last_json(&rec_out);
        assert_eq!(rec_json["recorded"], true, "{guest}: {rec_json}");
        let rep = Command::new(motion_bin())
            .arg("replay")
            .arg(&log)
            .arg("--json")
            .args(&rep_args)
            .stdin(Stdio::null())
            .output()
            .expect("motion replay");
        let rep_out = String::from_utf8_lossy(&rep.stdout).into_owned();
        assert_eq!(
            rep.status.code(),
            Some(0),
            "{guest} replay: {}\n{rep_out}",
            String::from_utf8_lossy(&rep.stderr)
        );
        let rep_json = last_json(&rep_out);
        assert_eq!(rep_json["verified"], true, "{guest}: {rep_json}");
        assert!(
            rep_json["digest"].is_string(),
            "{guest}: replay reports its final digest: {rep_json}"
        );
        // The replay prints the recorded serial output.
        let recorded_text = &rec_out[..rec_out.trim_end().rfind('\n').map_or(0, |i| i + 1)];
        assert!(
            rep_out.starts_with(recorded_text),
            "{guest}: replay output\n{rep_out}\nrecorded\n{recorded_text}"
        );
    }
}

fn last_json(stdout: &str) -> serde_json::Value {
    let last = stdout.trim_end().rsplit('\n').next().unwrap_or("");
    serde_json::from_str(last).unwrap_or(serde_json::Value::Null)
}

/// The ring-3 runtime's exception path: a CPU exception raised in ring 3
/// enters the ring-0 stub and comes back to ring 3 to be reported, with the
/// same report (vector, RIP, error code, CR2) and status 2 on every backend;
/// a panic ends with status 1.
#[test]
fn faults_r3_reports_exceptions_alike_on_soft_and_kvm() {
    let cases = [
        ("de", 2, "EXCEPTION #DE divide error (vector 0) at rip 0x"),
        ("ud", 2, "EXCEPTION #UD invalid opcode (vector 6) at rip 0x"),
        (
            "gp",
            2,
            "EXCEPTION #GP general protection (vector 13) at rip 0x",
        ),
        ("pf", 2, "error 0x6 cr2 0x100000000\n"),
        ("panic", 1, "PANIC: panicked at"),
        ("nothing", 3, "pass one of de, ud, gp, pf, panic"),
    ];
    for (what, status, expect) in cases {
        let args = ["--cmdline", what];
        let soft = motion_run("faults-r3", "soft", &args);
        assert_eq!(
            soft.status,
            Some(status),
            "{what} on soft: {}\n{}",
            soft.err,
            soft.out
        );
        assert!(soft.out.contains(expect), "{what} on soft:\n{}", soft.out);
        assert!(
            !soft.out.contains("returned"),
            "{what}: the fault did not stop it"
        );
        match kvm_skip_reason() {
            Some(why) => println!("skipped: faults-r3 {what} on kvm: {why}"),
            None => {
                let kvm = motion_run("faults-r3", "kvm", &args);
                assert_eq!(kvm.out, soft.out, "{what}: kvm vs soft ({})", kvm.err);
                assert_eq!(kvm.status, soft.status, "{what}: exit status ({})", kvm.err);
            }
        }
    }
}
