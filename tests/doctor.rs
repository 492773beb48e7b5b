//! `motion doctor`: its report must be complete and agree with independent
//! quick probes of this host (the device node, KVM ioctls, procfs/sysfs, QEMU).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Build the `motion` binary (same profile as this test) and return its path.
fn motion_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/doctor-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "-q", "-p", "motion", "--bin", "motion"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p motion failed");
        profile_dir.join("motion")
    })
}

fn doctor(args: &[&str]) -> (bool, String) {
    let out = Command::new(motion_bin())
        .arg("doctor")
        .args(args)
        .output()
        .expect("run motion doctor");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8 output"),
    )
}

fn doctor_json() -> Value {
    let (ok, stdout) = doctor(&["--json"]);
    assert!(ok, "motion doctor --json must exit 0 (it is a report)");
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("field {path} missing (at {k}) in {v}"))
    })
}

fn finding(v: &Value, path: &str) -> bool {
    assert!(
        get(v, &format!("{path}.detail")).is_string(),
        "{path}.detail"
    );
    get(v, &format!("{path}.works"))
        .as_bool()
        .unwrap_or_else(|| panic!("{path}.works is not a bool"))
}

#[test]
fn json_report_has_every_field() {
    let r = doctor_json();
    for f in [
        "kvm.device_present",
        "kvm.usable",
        "pmu.paranoid",
        "qemu.present",
    ] {
        get(&r, f);
    }
    for f in [
        "kvm.single_step",
        "kvm.hw_breakpoint",
        "kvm.ring3_native",
        "kvm.backend_guest",
        "kvm.cpuid_policy",
        "pmu.host_branches",
        "pmu.guest_branches",
    ] {
        finding(&r, f);
    }
    for b in ["soft", "kvm"] {
        for f in [
            "usable",
            "counter_mode",
            "counter_backend",
            "reason",
            "notes",
        ] {
            get(&r, &format!("verdict.{b}.{f}"));
        }
    }
    assert_eq!(get(&r, "verdict.default_backend"), "soft");
    assert_eq!(get(&r, "verdict.soft.usable"), true);
}

#[test]
fn kvm_findings_match_independent_probes() {
    let r = doctor_json();
    let present = Path::new("/dev/kvm").exists();
    assert_eq!(get(&r, "kvm.device_present").as_bool(), Some(present));
    let usable = get(&r, "kvm.usable").as_bool().expect("bool");
    assert_eq!(get(&r, "verdict.kvm.usable").as_bool(), Some(usable));
    let kvm = match kvm_ioctls::Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            assert!(
                !usable,
                "doctor says usable but /dev/kvm cannot be opened: {e}"
            );
            assert!(get(&r, "kvm.reason").is_string());
            assert_eq!(get(&r, "verdict.kvm.counter_mode"), "none");
            println!("skipped: KVM-dependent checks: /dev/kvm cannot be opened ({e})");
            return;
        }
    };
    let vm_ok = kvm.create_vm().is_ok_and(|vm| vm.create_vcpu(0).is_ok());
    assert_eq!(
        usable, vm_ok,
        "doctor's usable must match creating a VM and vCPU"
    );
    if !usable {
        println!("skipped: KVM-dependent checks: KVM cannot create a VM/vCPU here");
        return;
    }
    assert_eq!(
        get(&r, "kvm.api_version").as_i64(),
        Some(kvm.get_api_version() as i64)
    );
    for (name, cap) in [
        ("irqchip", kvm_bindings::KVM_CAP_IRQCHIP),
        ("immediate_exit", kvm_bindings::KVM_CAP_IMMEDIATE_EXIT),
        (
            "x86_user_space_msr",
            kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
        ),
        ("set_guest_debug", kvm_bindings::KVM_CAP_SET_GUEST_DEBUG),
        ("pmu_capability", kvm_bindings::KVM_CAP_PMU_CAPABILITY),
        ("nr_vcpus", kvm_bindings::KVM_CAP_NR_VCPUS),
        ("max_vcpus", kvm_bindings::KVM_CAP_MAX_VCPUS),
    ] {
        assert_eq!(
            get(&r, &format!("kvm.caps.{name}")).as_i64(),
            Some(kvm.check_extension_raw(cap as _) as i64),
            "capability {name}"
        );
    }
    assert_eq!(
        get(&r, "verdict.kvm.usable").as_bool(),
        Some(finding(&r, "kvm.backend_guest")),
        "the kvm backend is usable exactly when its tiny guest ran"
    );
    // The counter-mode verdict follows from the findings.
    let stepping = finding(&r, "kvm.single_step") || finding(&r, "kvm.hw_breakpoint");
    let guest_counter = finding(&r, "pmu.guest_branches");
    let mode = get(&r, "verdict.kvm.counter_mode")
        .as_str()
        .expect("string");
    assert_eq!(
        mode,
        if guest_counter && stepping {
            "precise"
        } else {
            "exit-synchronous"
        }
    );
    if finding(&r, "kvm.ring3_native") {
        assert!(get(&r, "kvm.ring3_mips").as_f64().expect("mips") >= 100.0);
    }
}

#[test]
fn pmu_and_qemu_findings_match_independent_probes() {
    let r = doctor_json();
    let paranoid: Option<i64> = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    assert_eq!(get(&r, "pmu.paranoid").as_i64(), paranoid);
    // Without a core PMU in sysfs there is no hardware branch event to open.
    if !Path::new("/sys/bus/event_source/devices/cpu").exists() {
        assert!(!finding(&r, "pmu.host_branches"));
        assert!(!finding(&r, "pmu.guest_branches"));
    }

    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    let present = qemu.as_ref().is_ok_and(|o| o.status.success());
    assert_eq!(get(&r, "qemu.present").as_bool(), Some(present));
    if let Some(o) = qemu.ok().filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&o.stdout);
        let v = get(&r, "qemu.version").as_str().expect("version string");
        assert!(text.contains(&format!("version {v}")), "{v} not in {text}");
    } else {
        println!("skipped: QEMU version check: qemu-system-x86_64 not installed");
    }
}

#[test]
fn human_report_is_a_table_with_verdicts() {
    let (ok, stdout) = doctor(&[]);
    assert!(ok, "motion doctor must exit 0");
    for s in [
        "/dev/kvm",
        "guest single-step",
        "host branch counter",
        "qemu-system-x86_64",
        "Verdict",
        "kvm backend",
        "soft backend",
    ] {
        assert!(stdout.contains(s), "{s:?} missing from:\n{stdout}");
    }
}
