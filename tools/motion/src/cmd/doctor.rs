//! `motion doctor [--json]`: a truthful report of what this host offers CAS
//! Motion, found by probing (ioctls, perf_event_open, tiny guests actually
//! run), never assumed, and the verdicts that follow: which vCPU backends are
//! usable and which counter mode the kvm backend would use, with reasons.
//!
//! It is a report, so it exits 0 whatever it finds.

use std::process::{Command, ExitCode};

use serde::Serialize;
use vcpu_kvm::probe::{self, Finding, KvmReport, PerfReport};

/// Whether QEMU is installed, and which version.
#[derive(Debug, Clone, Serialize)]
pub struct QemuReport {
    /// `qemu-system-x86_64 --version` ran.
    pub present: bool,
    /// The version number from its first line (e.g. "7.2.22").
    pub version: Option<String>,
    /// The first line of its output, or why it could not run.
    pub detail: String,
}

/// A backend verdict.
#[derive(Debug, Clone, Serialize)]
pub struct BackendVerdict {
    /// Can be used on this host.
    pub usable: bool,
    /// Counter mode: "exact" (soft), "precise" or "exit-synchronous" (kvm), or
    /// "none" when the backend is unusable.
    pub counter_mode: &'static str,
    /// Where the counts come from.
    pub counter_backend: &'static str,
    /// Why, in a sentence or two.
    pub reason: String,
    /// Further findings that limit the backend on this host.
    pub notes: Vec<String>,
}

/// What follows from the probes.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The deterministic software vCPU.
    pub soft: BackendVerdict,
    /// Hardware virtualization through KVM.
    pub kvm: BackendVerdict,
    /// The backend `motion` uses unless told otherwise.
    pub default_backend: &'static str,
    /// Limits of the kvm backend that hold on every stock-KVM host.
    pub kvm_limits: Vec<&'static str>,
}

/// Everything `motion doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// KVM: device, capabilities, tiny-guest tests.
    pub kvm: KvmReport,
    /// Hardware PMU through perf_event_open.
    pub pmu: PerfReport,
    /// QEMU.
    pub qemu: QemuReport,
    /// The conclusions.
    pub verdict: Verdict,
}

/// Probe QEMU by running it.
pub fn probe_qemu() -> QemuReport {
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next().unwrap_or("").trim().to_string();
            let version = first
                .split_whitespace()
                .skip_while(|w| *w != "version")
                .nth(1)
                .map(str::to_string);
            QemuReport {
                present: true,
                version,
                detail: first,
            }
        }
        Ok(out) => QemuReport {
            present: false,
            version: None,
            detail: format!("qemu-system-x86_64 --version exited with {}", out.status),
        },
        Err(e) => QemuReport {
            present: false,
            version: None,
            detail: format!("qemu-system-x86_64 cannot be run: {e}"),
        },
    }
}

/// Draw the conclusions from the probes.
pub fn verdict(kvm: &KvmReport, pmu: &PerfReport) -> Verdict {
    let soft = BackendVerdict {
        usable: true,
        counter_mode: "exact",
        counter_backend: "soft vCPU virtual PMU",
        reason: "the software vCPU needs nothing from the host and counts retired \
                 instructions and branches exactly"
            .into(),
        notes: Vec::new(),
    };
    let kvm_verdict = if !kvm.usable {
        BackendVerdict {
            usable: false,
            counter_mode: "none",
            counter_backend: "none",
            reason: format!(
                "KVM unusable: {}",
                kvm.reason.as_deref().unwrap_or("unknown reason")
            ),
            notes: Vec::new(),
        }
    } else if !kvm.backend_guest.works {
        BackendVerdict {
            usable: false,
            counter_mode: "none",
            counter_backend: "none",
            reason: format!(
                "KVM opens, but the kvm backend failed its tiny guest: {}",
                kvm.backend_guest.detail
            ),
            notes: Vec::new(),
        }
    } else {
        let stepping = kvm.single_step.works || kvm.hw_breakpoint.works;
        if pmu.guest_branches.works && stepping {
            BackendVerdict {
                usable: true,
                counter_mode: "precise",
                counter_backend: "perf_event guest branch counter",
                reason: "a guest-only hardware branch counter opens and KVM guest \
                         single-step/breakpoints give debug exits, so asynchronous events \
                         can be landed at exact timepoints"
                    .into(),
                notes: Vec::new(),
            }
        } else {
            let mut missing = Vec::new();
            if !pmu.guest_branches.works {
                missing.push(format!(
                    "no guest branch counter ({})",
                    pmu.guest_branches.detail
                ));
            }
            if !stepping {
                missing.push(
                    "no KVM guest single-step or hardware breakpoints (tiny guests gave no \
                     KVM_EXIT_DEBUG)"
                        .to_string(),
                );
            }
            BackendVerdict {
                usable: true,
                counter_mode: "exit-synchronous",
                counter_backend: "count of port I/O, MMIO and HLT exits",
                reason: format!(
                    "{}; asynchronous events are delivered only at deterministic exits and \
                     timestamped by the exit count, so interrupt latency depends on the guest \
                     exiting; `motion record --backend kvm` records in this mode, and such \
                     logs replay on kvm and on soft",
                    missing.join("; ")
                ),
                notes: Vec::new(),
            }
        }
    };
    let mut kvm_verdict = kvm_verdict;
    if kvm_verdict.usable {
        if let Some(mips) = kvm.ring0_mips.filter(|m| *m < 100.0) {
            kvm_verdict.notes.push(format!(
                "ring-0 guest code is emulated here ({mips:.1} MIPS): guest kernels run far \
                 slower on kvm than on soft"
            ));
        }
        if !kvm.ring3_cpuid.works {
            kvm_verdict.notes.push(
                "CPUID in guest ring 3 runs natively on the host CPU: guests see the host's \
                 CPUID, not the policy; kvm recordings list cpuid as not trapped"
                    .into(),
            );
        }
        if !kvm.cpuid_policy.works {
            kvm_verdict.notes.push(
                "KVM does not honour the CPUID policy: RDRAND/RDSEED stay visible to guests; \
                 kvm recordings say in their header that RDTSC, RDRAND and RDSEED were not \
                 trapped, and a replay of a guest that executed them reports the divergence"
                    .into(),
            );
        }
    }
    Verdict {
        soft,
        kvm: kvm_verdict,
        default_backend: "soft",
        kvm_limits: vec![
            "RDTSC/RDTSCP cannot be trapped by stock KVM: a guest reading the TSC diverges \
             on replay (digests report it)",
            "RDRAND/RDSEED cannot be trapped: the backend hides them in the guest's CPUID \
             (where KVM honours the CPUID policy; see the notes)",
        ],
    }
}

/// Probe everything.
pub fn report() -> DoctorReport {
    let kvm = probe::probe_kvm();
    let pmu = probe::probe_perf();
    let qemu = probe_qemu();
    let verdict = verdict(&kvm, &pmu);
    DoctorReport {
        kvm,
        pmu,
        qemu,
        verdict,
    }
}

fn yes_no(f: &Finding) -> String {
    format!("{} — {}", if f.works { "yes" } else { "no" }, f.detail)
}

fn row(name: &str, value: impl std::fmt::Display) {
    println!("  {name:<26} {value}");
}

fn print_human(r: &DoctorReport) {
    println!("CAS Motion doctor: this host, probed now");
    println!();
    println!("KVM");
    row(
        "/dev/kvm",
        if r.kvm.device_present {
            "present"
        } else {
            "absent"
        },
    );
    match (&r.kvm.reason, r.kvm.api_version) {
        (None, Some(v)) => row("usable", format!("yes (API {v}, VM and vCPU created)")),
        (Some(why), _) => row("usable", format!("no — {why}")),
        (None, None) => row("usable", "no"),
    }
    if r.kvm.usable {
        let caps: Vec<String> = r
            .kvm
            .caps
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        for (i, chunk) in caps.chunks(4).enumerate() {
            row(if i == 0 { "capabilities" } else { "" }, chunk.join(" "));
        }
        row("ring-3 native execution", yes_no(&r.kvm.ring3_native));
        if let Some(us) = r.kvm.ring3_block_us {
            row(
                "ring-3 block round trip",
                format!("{us:.1} µs (set-up, exit, read-back)"),
            );
        }
        row("kvm backend tiny guest", yes_no(&r.kvm.backend_guest));
        if let Some(m) = r.kvm.ring0_mips {
            row(
                "ring-0 (real-mode) speed",
                format!(
                    "{m:.1} MIPS ({})",
                    if m < 100.0 { "emulated" } else { "hardware" }
                ),
            );
        }
        row("CPUID policy honoured", yes_no(&r.kvm.cpuid_policy));
        row("ring-3 CPUID from policy", yes_no(&r.kvm.ring3_cpuid));
        row("guest single-step", yes_no(&r.kvm.single_step));
        row("hardware breakpoints", yes_no(&r.kvm.hw_breakpoint));
    }
    println!();
    println!("PMU (perf_event_open)");
    row(
        "perf_event_paranoid",
        r.pmu
            .paranoid
            .map_or("unreadable".to_string(), |p| p.to_string()),
    );
    row("host branch counter", yes_no(&r.pmu.host_branches));
    row("guest branch counter", yes_no(&r.pmu.guest_branches));
    println!();
    println!("QEMU");
    row(
        "qemu-system-x86_64",
        if r.qemu.present {
            format!("present — {}", r.qemu.detail)
        } else {
            format!("absent — {}", r.qemu.detail)
        },
    );
    println!();
    println!("Verdict");
    for (name, v) in [
        ("soft backend", &r.verdict.soft),
        ("kvm backend", &r.verdict.kvm),
    ] {
        row(
            name,
            format!(
                "{}, counters: {} ({}) — {}",
                if v.usable { "usable" } else { "unusable" },
                v.counter_mode,
                v.counter_backend,
                v.reason
            ),
        );
        for n in &v.notes {
            row("", format!("note: {n}"));
        }
    }
    row("default backend", r.verdict.default_backend);
    for (i, l) in r.verdict.kvm_limits.iter().enumerate() {
        row(if i == 0 { "kvm limits" } else { "" }, l);
    }
}

/// Run `motion doctor`.
pub fn run(json: bool) -> anyhow::Result<ExitCode> {
    let r = report();
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_human(&r);
    }
    Ok(ExitCode::SUCCESS)
}
