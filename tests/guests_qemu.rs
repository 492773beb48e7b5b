//! Boots every guest in real QEMU (`pc` machine, PVH `-kernel`) and checks
//! its output and exit status. Skipped, with the reason printed, where
//! qemu-system-x86_64 is not installed (CI installs it: scripts/setup.sh).
//!
//! QEMU's isa-debug-exit reports `(value << 1) | 1`: a guest status of 0
//! is process status 1.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const QEMU: &str = "qemu-system-x86_64";
const TIMEOUT: Duration = Duration::from_secs(120);

fn qemu_available() -> bool {
    let ok = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: {QEMU} is not installed (scripts/setup.sh installs it)");
    }
    ok
}

/// The guest's part of QEMU's serial output: SeaBIOS prints on the same
/// port before it jumps to the PVH kernel ("Booting from ROM..").
pub fn guest_part(serial: &str) -> String {
    let s = match serial.rfind("Booting from ROM..") {
        Some(i) => &serial[i + "Booting from ROM..".len()..],
        None => serial,
    };
    s.replace("\r\n", "\n")
}

/// Boot `guest` in QEMU with `extra` arguments; `input` is written to the
/// serial port once `ready` appears in the output (if given). Returns the
/// guest's serial output and QEMU's exit code.
pub fn boot(guest: &str, extra: &[&str], input: Option<(&str, &[u8])>) -> (String, i32) {
    let kernel = guest_images::path(guest).expect("bundled guest");
    let mut child = Command::new(QEMU)
        .args(["-kernel"])
        .arg(&kernel)
        .args([
            "-nographic",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-display",
            "none",
            "-net",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut pending_input = input;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some((ready, bytes)) = pending_input {
            if String::from_utf8_lossy(&out).contains(ready) {
                if let Some(s) = stdin.as_mut() {
                    s.write_all(bytes).unwrap();
                    s.flush().unwrap();
                }
                pending_input = None;
            }
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!(
                "{guest} did not finish in QEMU within {TIMEOUT:?}; output so far:\n{}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    let status = child.wait().unwrap();
    drop(stdin);
    let code = status.code().unwrap_or(-1);
    (guest_part(&String::from_utf8_lossy(&out)), code)
}

/// QEMU's process status for a guest status.
fn qemu_status(guest_status: i32) -> i32 {
    (guest_status << 1) | 1
}

/// A disk image whose sectors say who they are; returns the FNV-1a-64 of the
/// first `min(sectors, 256)` sectors (what the disk guest reads).
pub fn make_disk(path: &Path, sectors: usize) -> u64 {
    let mut data = Vec::with_capacity(sectors * 512);
    for s in 0..sectors {
        let line = format!("CAS Motion disk sector {s:06} ");
        let mut sector: Vec<u8> = line.bytes().cycle().take(512).collect();
        sector[511] = s as u8;
        data.extend_from_slice(&sector);
    }
    std::fs::write(path, &data).unwrap();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in &data[..sectors.min(256) * 512] {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn disk_args(img: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},if=none,id=d0,format=raw", img.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d0,disable-modern=on".into(),
    ]
}

#[test]
fn hello_in_qemu() {
    if !qemu_available() {
        return;
    }
    let (out, code) = boot("hello", &[], None);
    assert_eq!(
        out,
        "hello from a CAS Motion guest\nhvm_start_info: magic ok\ngoodbye\n"
    );
    assert_eq!(code, qemu_status(0));
}

#[test]
fn compute_in_qemu() {
    if !qemu_available() {
        return;
    }
    let (out, code) = boot("compute", &[], None);
    assert!(out.contains("compute: checksum 0x"), "{out}");
    assert_eq!(code, qemu_status(0), "{out}");
}

#[test]
fn disk_in_qemu_reads_the_image_by_dma() {
    if !qemu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let sum = make_disk(&img, 300);
    let args = disk_args(&img);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, code) = boot("disk", &args, None);
    assert_eq!(code, qemu_status(0), "{out}");
    assert!(out.contains("capacity 300 sectors"), "{out}");
    assert!(
        out.contains("sector 0 begins \"CAS Motion disk \""),
        "{out}"
    );
    assert!(
        out.contains(&format!("read 256 sectors, checksum {sum:#018x}")),
        "{out}"
    );
    assert!(out.contains("32 requests completed by interrupt"), "{out}");
}

#[test]
fn disk_in_qemu_without_a_device_fails_clearly() {
    if !qemu_available() {
        return;
    }
    let (out, code) = boot("disk", &[], None);
    assert!(out.contains("no virtio-blk device"), "{out}");
    assert_eq!(code, qemu_status(5));
}

#[test]
fn timer_in_qemu_completes_with_a_checksum() {
    if !qemu_available() {
        return;
    }
    let (out, code) = boot("timer", &[], None);
    assert_eq!(code, qemu_status(0), "{out}");
    assert!(out.contains("checksum: 0x"), "{out}");
    assert_eq!(
        out.matches(" ok\n").count(),
        3,
        "every task verified: {out}"
    );
    assert!(out.contains("25:"), "25 ticks traced: {out}");
}

#[test]
fn entropy_in_qemu_reports_its_sources() {
    if !qemu_available() {
        return;
    }
    let (out, code) = boot("entropy", &[], None);
    assert_eq!(code, qemu_status(0), "{out}");
    for what in ["cpuid: vendor", "rdtsc:", "rdrand:", "rtc: 2"] {
        assert!(out.contains(what), "{what}: {out}");
    }
}

#[test]
fn serial_echo_in_qemu_answers_lines() {
    if !qemu_available() {
        return;
    }
    let (out, code) = boot(
        "serial-echo",
        &[],
        Some(("end with 'quit'", b"Hello, World\nabc xyz\nquit\n")),
    );
    assert_eq!(code, qemu_status(0), "{out}");
    assert!(out.contains("> Uryyb, Jbeyq\n> nop klm\n"), "{out}");
    assert!(out.contains("quit after 2 lines"), "{out}");
}

use motion_e2e::motion_bin as common;

/// QEMU and `motion run` (default backend) print the same serial output and
/// end with the same status for a deterministic guest.
fn compare(guest: &str, qemu_extra: &[&str], motion_extra: &[&str]) {
    if !qemu_available() {
        return;
    }
    let (qemu_out, qemu_code) = boot(guest, qemu_extra, None);
    let mut args = vec!["--guest", guest];
    args.extend_from_slice(motion_extra);
    let out = common::motion_run(&args);
    let motion_out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        motion_out,
        qemu_out,
        "{guest}: motion run and QEMU disagree (motion stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = out.status.code().expect("exit code");
    assert_eq!(qemu_code, (status << 1) | 1, "{guest}: exit statuses");
}

#[test]
fn qemu_and_motion_agree_on_hello() {
    compare("hello", &[], &[]);
}

#[test]
fn qemu_and_motion_agree_on_compute() {
    compare("compute", &[], &[]);
}

#[test]
fn qemu_and_motion_agree_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    make_disk(&img, 300);
    let args = disk_args(&img);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let img = img.to_str().unwrap();
    compare("disk", &args, &["--disk", img]);
}

/// The ring-3 variants (built for the nested KVM of the CAS Motion machines)
/// are ordinary PVH kernels too: QEMU and `motion run` agree on them.
#[test]
fn qemu_and_motion_agree_on_the_r3_guests() {
    compare("hello-r3", &[], &[]);
    compare("compute-r3", &[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    make_disk(&img, 300);
    let args = disk_args(&img);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    compare("disk-r3", &args, &["--disk", img.to_str().unwrap()]);
}

/// The timer guest's output depends on when each tick lands: two live runs
/// under `motion run` differ (the non-determinism a recorder must capture).
#[test]
fn timer_output_differs_between_live_runs() {
    let runs: Vec<String> = (0..2)
        .map(|_| {
            let out = common::motion_run(&["--guest", "timer"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out.status.code(), Some(0), "timer failed: {text}");
            assert!(text.contains("checksum: 0x"), "{text}");
            text
        })
        .collect();
    assert_ne!(
        runs[0], runs[1],
        "two live timer runs printed the same trace"
    );
}

/// `motion run` feeds `--input` to the UART: serial-echo answers each line.
#[test]
fn motion_runs_serial_echo_with_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "Hello, World\nabc xyz\nquit\n").unwrap();
    let out = common::motion_run(&["--guest", "serial-echo", "--input", input.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("> Uryyb, Jbeyq\n> nop klm\n"), "{text}");
    assert!(text.contains("quit after 2 lines"), "{text}");
}

/// Input that ends without `quit`: the guest waits for bytes that never
/// come, and the monitor says so instead of hanging.
#[test]
fn motion_stops_a_guest_waiting_for_input_that_ended() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "no terminator\n").unwrap();
    let out = common::motion_run(&["--guest", "serial-echo", "--input", input.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("nothing will raise"), "{err}");
}

/// Unknown guests, unreadable images and non-PVH ELFs are refused clearly.
#[test]
fn motion_run_refuses_bad_guests_clearly() {
    let out = common::motion_run(&["--guest", "no-such-guest"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("unknown guest \"no-such-guest\""), "{err}");
    assert!(
        err.contains("hello, timer, disk"),
        "lists the bundled guests: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("kernel");
    std::fs::write(&not_elf, b"#!/bin/sh\necho hi\n").unwrap();
    let out = common::motion_run(&["--guest", not_elf.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an ELF file"), "{err}");

    // A real ELF that is not a PVH kernel: the test binary itself.
    let me = std::env::current_exe().unwrap();
    let out = common::motion_run(&["--guest", me.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("not a PVH kernel") || err.contains("unsupported ELF"),
        "{err}"
    );

    let out = common::motion_run(&["--guest", "hello", "--disk", "/nonexistent/disk.img"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open disk image /nonexistent/disk.img"),
        "{err}"
    );
}

/// A few kilobytes of input arrive at line rate through many RX interrupts
/// while the guest is also transmitting: every answer must be exact (no byte
/// lost or doubled around interrupt delivery).
#[test]
fn motion_serial_echo_is_exact_over_many_interrupts() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xec40);
    let lines: Vec<String> = (0..100)
        .map(|_| {
            let n = rng.random_range(0..100);
            (0..n)
                .map(|_| b"abcdefghijklmnopqrstuvwxyz ,."[rng.random_range(0..29)] as char)
                .collect()
        })
        .collect();
    let rot13 = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                'a'..='z' => (((c as u8 - b'a' + 13) % 26) + b'a') as char,
                _ => c,
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, format!("{}\nquit\n", lines.join("\n"))).unwrap();
    let out = common::motion_run(&["--guest", "serial-echo", "--input", input.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let answers: Vec<&str> = text.lines().filter(|l| l.starts_with("> ")).collect();
    assert_eq!(answers.len(), lines.len(), "{text}");
    for (i, (got, line)) in answers.iter().zip(&lines).enumerate() {
        assert_eq!(got[2..], rot13(line), "line {i}");
    }
    assert!(
        text.contains(&format!("quit after {} lines", lines.len())),
        "{text}"
    );
}
