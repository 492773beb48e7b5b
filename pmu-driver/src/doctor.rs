//! Which branch-counter backend this host can use, and why: the counter
//! section of `motion doctor`.

use serde::{Deserialize, Serialize};

use crate::arch::PmuCaps;
use crate::arch::amd::AmdPmuInfo;
use crate::margin::CounterHardware;
use crate::perf::{self, PerfProbe};

/// The host CPU as CPUID describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// CPUID.0 vendor string ("GenuineIntel", "AuthenticAMD").
    pub vendor: String,
    /// Display family (base + extended).
    pub family: u32,
    /// Display model (with the extended model where the SDM/APM say so).
    pub model: u32,
    /// CPUID.1:`ECX[31]`: running under a hypervisor.
    pub hypervisor: bool,
    /// CPUID.0AH decoded (Intel's architectural PMU; all zero elsewhere).
    pub arch_perfmon: Option<PmuCaps>,
    /// AMD's PMU feature bits, on AMD/Hygon.
    pub amd: Option<AmdPmuInfo>,
}

/// What /dev/kvm says about a virtual PMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmInfo {
    /// /dev/kvm could be opened (or why not).
    pub dev_kvm: Result<(), String>,
    /// KVM_CHECK_EXTENSION(KVM_CAP_PMU_CAPABILITY): non-zero when KVM offers
    /// its guests a vPMU (so the host PMU is usable by KVM at all).
    pub pmu_capability: Option<i32>,
}

/// One backend's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// "soft", "kvm+perf", "kvm (exit-synchronous)".
    pub backend: String,
    /// Usable on this host.
    pub usable: bool,
    /// Landing margin in branches, where the backend lands precisely.
    pub margin: Option<u64>,
    /// Why (or why not).
    pub why: String,
}

/// The whole counter report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReport {
    /// The CPU.
    pub host: HostCpu,
    /// KVM's view.
    pub kvm: KvmInfo,
    /// The perf_event probe.
    pub perf: PerfProbe,
    /// Per-backend verdicts, best first.
    pub backends: Vec<BackendStatus>,
    /// The margin table (counter hardware, branches).
    pub margins: Vec<(String, u64)>,
}

impl CounterReport {
    /// The backend a recorder should use: the first usable one.
    pub fn best(&self) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.usable)
    }
}

/// Probe everything (takes a few milliseconds: it opens counters and runs a
/// short loop).
pub fn doctor_report() -> CounterReport {
    let host = host_cpu();
    let kvm = kvm_info();
    let perf = perf::probe();
    let hw_margin = CounterHardware::for_cpu(&host.vendor, host.family, host.model);
    let mut backends = vec![BackendStatus {
        backend: "soft".into(),
        usable: true,
        margin: Some(0),
        why: "the soft vCPU's virtual PMU counts retired branches exactly; margin 0 \
              (or the configured PMI skid)"
            .into(),
    }];
    let kvm_ok = kvm.dev_kvm.is_ok();
    let perf_ok = perf.guest_counting_usable();
    backends.push(BackendStatus {
        backend: "kvm+perf".into(),
        usable: kvm_ok && perf_ok,
        margin: hw_margin.map(|h| h.margin()),
        why: match (&kvm.dev_kvm, perf_ok) {
            (Err(e), _) => format!("no KVM: {e}"),
            (Ok(()), false) => perf.verdict(),
            (Ok(()), true) => format!(
                "{}; margin for {}",
                perf.verdict(),
                hw_margin.map_or("this CPU (not in the table)".into(), |h| h.name())
            ),
        },
    });
    backends.push(BackendStatus {
        backend: "kvm (exit-synchronous)".into(),
        usable: kvm_ok,
        margin: None,
        why: match &kvm.dev_kvm {
            Err(e) => format!("no KVM: {e}"),
            Ok(()) => "no precise counter needed: asynchronous events are delivered only at \
                       deterministic exits (I/O, MMIO, HLT), which changes guest timing"
                .into(),
        },
    });
    CounterReport {
        host,
        kvm,
        perf,
        backends,
        margins: CounterHardware::TABLE
            .iter()
            .map(|h| (h.name(), h.margin()))
            .collect(),
    }
}

/// Read the CPU's identity and PMU leaves.
pub fn host_cpu() -> HostCpu {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        let l0 = __cpuid_count(0, 0);
        let mut v = Vec::with_capacity(12);
        for r in [l0.ebx, l0.edx, l0.ecx] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        let vendor = String::from_utf8_lossy(&v).into_owned();
        let l1 = __cpuid_count(1, 0);
        let base_family = (l1.eax >> 8) & 0xf;
        let family = if base_family == 0xf {
            base_family + ((l1.eax >> 20) & 0xff)
        } else {
            base_family
        };
        let model = if base_family == 0x6 || base_family == 0xf {
            ((l1.eax >> 4) & 0xf) | ((l1.eax >> 12) & 0xf0)
        } else {
            (l1.eax >> 4) & 0xf
        };
        let arch_perfmon =
            (l0.eax >= 0xA).then(|| PmuCaps::from_cpuid_0a(cpuid_regs(__cpuid_count(0xA, 0))));
        let amd = matches!(vendor.as_str(), "AuthenticAMD" | "HygonGenuine").then(|| {
            let max_ext = __cpuid_count(0x8000_0000, 0).eax;
            let ecx1 = if max_ext >= 0x8000_0001 {
                __cpuid_count(0x8000_0001, 0).ecx
            } else {
                0
            };
            let (eax22, ebx22) = if max_ext >= 0x8000_0022 {
                let l22 = __cpuid_count(0x8000_0022, 0);
                (l22.eax, l22.ebx)
            } else {
                (0, 0)
            };
            AmdPmuInfo::from_cpuid(ecx1, eax22, ebx22)
        });
        HostCpu {
            vendor,
            family,
            model,
            hypervisor: l1.ecx & (1 << 31) != 0,
            arch_perfmon,
            amd,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        HostCpu {
            vendor: std::env::consts::ARCH.into(),
            family: 0,
            model: 0,
            hypervisor: false,
            arch_perfmon: None,
            amd: None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpuid_regs(r: std::arch::x86_64::CpuidResult) -> [u32; 4] {
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// KVM_CHECK_EXTENSION on /dev/kvm for KVM_CAP_PMU_CAPABILITY.
pub fn kvm_info() -> KvmInfo {
    const KVM_CHECK_EXTENSION: libc::c_ulong = 0xAE03;
    const KVM_CAP_PMU_CAPABILITY: libc::c_ulong = 232;
    // SAFETY: opening a path with a NUL-terminated literal; the result is
    // checked and closed below.
    let fd = unsafe { libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return KvmInfo {
            dev_kvm: Err(format!("/dev/kvm: {}", std::io::Error::last_os_error())),
            pmu_capability: None,
        };
    }
    // SAFETY: KVM_CHECK_EXTENSION takes an integer argument and only
    // returns a value.
    let cap = unsafe { libc::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_PMU_CAPABILITY) };
    // SAFETY: closing the descriptor opened above, once.
    unsafe { libc::close(fd) };
    KvmInfo {
        dev_kvm: Ok(()),
        pmu_capability: (cap >= 0).then_some(cap),
    }
}

impl std::fmt::Display for CounterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.host;
        writeln!(
            f,
            "host CPU: {} family {:#x} model {:#x}{}",
            h.vendor,
            h.family,
            h.model,
            if h.hypervisor {
                ", under a hypervisor"
            } else {
                ""
            }
        )?;
        match &h.arch_perfmon {
            Some(c) if c.version > 0 => writeln!(
                f,
                "  CPUID 0AH: architectural PMU v{}, {} counters x {} bits, branches {}",
                c.version,
                c.gp_counters,
                c.gp_width,
                if c.branches_available() {
                    "available"
                } else {
                    "unavailable"
                }
            )?,
            _ => writeln!(f, "  CPUID 0AH: no Intel architectural PMU")?,
        }
        if let Some(a) = &h.amd {
            writeln!(
                f,
                "  AMD PMU bits: PerfCtrExtCore {}, PerfMonV2 {}{}",
                yes(a.perf_ctr_ext_core),
                yes(a.perfmon_v2),
                if !a.perf_ctr_ext_core && !a.perfmon_v2 && h.hypervisor {
                    " (the hypervisor hides the PMU)"
                } else {
                    ""
                }
            )?;
        }
        let p = &self.perf;
        writeln!(
            f,
            "  perf_event_paranoid {}; PMUs registered: {}{}",
            p.paranoid.map_or("unreadable".into(), |v| v.to_string()),
            p.pmu_devices.join(", "),
            if p.hardware_pmu_registered {
                ""
            } else {
                " (no 'cpu' PMU)"
            }
        )?;
        for (name, c) in [
            ("software events", &p.software_events),
            ("branches, user mode", &p.host_user_branches),
            ("branches, user+kernel", &p.host_all_branches),
            ("guest-mode branches", &p.guest_branches),
            ("hardware overflow signal", &p.hardware_overflow_signal),
            (
                "overflow signal plumbing (software event)",
                &p.software_overflow_signal,
            ),
        ] {
            writeln!(f, "  perf {name}: {c}")?;
        }
        match &self.kvm.dev_kvm {
            Ok(()) => writeln!(
                f,
                "  KVM: /dev/kvm opens; KVM_CAP_PMU_CAPABILITY = {}",
                self.kvm
                    .pmu_capability
                    .map_or("?".into(), |c| format!(
                        "{c}{}",
                        if c == 0 {
                            " (KVM offers guests no vPMU)"
                        } else {
                            " (KVM's vPMU switch is on; whether a host PMU backs it is the perf lines above)"
                        }
                    ))
            )?,
            Err(e) => writeln!(f, "  KVM: {e}")?,
        }
        writeln!(f, "counter backends:")?;
        for b in &self.backends {
            writeln!(
                f,
                "  {:<24} {:<9} {}{}",
                b.backend,
                if b.usable { "usable" } else { "unusable" },
                b.margin.map_or(String::new(), |m| format!("margin {m}: ")),
                b.why
            )?;
        }
        write!(f, "landing margins (branches):")?;
        for (name, m) in &self.margins {
            write!(f, " {name} {m};")?;
        }
        writeln!(f)
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_a_usable_backend_and_explains_the_rest() {
        let r = doctor_report();
        let text = r.to_string();
        println!("{text}");
        assert_eq!(r.best().map(|b| b.backend.as_str()), Some("soft"));
        let kp = &r.backends[1];
        assert_eq!(kp.backend, "kvm+perf");
        assert_eq!(
            kp.usable,
            r.perf.guest_counting_usable() && r.kvm.dev_kvm.is_ok()
        );
        if !kp.usable {
            assert!(
                kp.why.contains("cannot") || kp.why.contains("no KVM"),
                "{}",
                kp.why
            );
        }
        assert!(text.contains("counter backends:"));
        // JSON for `motion doctor --json` round-trips.
        let json = serde_json::to_string(&r).unwrap();
        let back: CounterReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
