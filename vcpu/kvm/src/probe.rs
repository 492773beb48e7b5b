//! Probing what this host's KVM really offers, by trying it: the facts
//! `motion doctor` reports and the backend chooses its counter mode from.
//!
//! Nothing here is assumed from the kernel version or CPU model: each item is
//! an ioctl, a capability query or a tiny guest actually run.

use std::collections::BTreeMap;
use std::time::Instant;

use kvm_ioctls::Kvm;
use serde::Serialize;

use crate::ring3::{GuestDebug, Ring3Block, Ring3End, Ring3Runner, layout};
use crate::vm::open_kvm;

/// A yes/no finding with the evidence behind it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// Whether the thing works.
    pub works: bool,
    /// What was tried and what happened.
    pub detail: String,
}

impl Finding {
    fn yes(detail: impl Into<String>) -> Self {
        Finding {
            works: true,
            detail: detail.into(),
        }
    }
    fn no(detail: impl Into<String>) -> Self {
        Finding {
            works: false,
            detail: detail.into(),
        }
    }
}

/// What KVM offers on this host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KvmReport {
    /// /dev/kvm exists.
    pub device_present: bool,
    /// /dev/kvm could be opened with a stable API, a VM and a vCPU created.
    pub usable: bool,
    /// Why not, when not usable.
    pub reason: Option<String>,
    /// KVM_GET_API_VERSION.
    pub api_version: Option<i32>,
    /// Capabilities relevant to CAS Motion: the KVM_CAP_ name without the
    /// prefix, lower case, and the value KVM_CHECK_EXTENSION returned (0 =
    /// absent; for counts, the count).
    pub caps: BTreeMap<&'static str, i32>,
    /// Guest single-step (KVM_GUESTDBG_SINGLESTEP) gives KVM_EXIT_DEBUG.
    pub single_step: Finding,
    /// A hardware execute breakpoint (KVM_GUESTDBG_USE_HW_BP) gives KVM_EXIT_DEBUG.
    pub hw_breakpoint: Finding,
    /// Ring-3 guest code runs natively (the oracle path works and is fast).
    pub ring3_native: Finding,
    /// Native MIPS of the ring-3 benchmark loop, when it ran.
    pub ring3_mips: Option<f64>,
    /// Mean wall time of one tiny ring-3 block through the oracle (set-up,
    /// one user-space exit, read-back), in microseconds.
    pub ring3_block_us: Option<f64>,
    /// The kvm backend runs a tiny real-mode guest: a port write, a port
    /// read answered by the monitor, a loop, HLT.
    pub backend_guest: Finding,
    /// MIPS of a real-mode (ring-0) loop on the kvm backend: a few hundred or
    /// more where guest ring-0 code runs on hardware, about 1 where KVM
    /// emulates it.
    pub ring0_mips: Option<f64>,
    /// KVM honours a CPUID policy that hides RDRAND/RDSEED (read back with
    /// KVM_GET_CPUID2 after KVM_SET_CPUID2).
    pub cpuid_policy: Finding,
    /// CPUID executed in ring 3 answers from the vCPU's table
    /// ([`ring3_cpuid_follows_policy`]).
    pub ring3_cpuid: Finding,
}

/// The capabilities reported, in order.
const CAPS: &[(&str, u32)] = &[
    ("irqchip", kvm_bindings::KVM_CAP_IRQCHIP),
    ("immediate_exit", kvm_bindings::KVM_CAP_IMMEDIATE_EXIT),
    (
        "x86_user_space_msr",
        kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
    ),
    ("x86_msr_filter", kvm_bindings::KVM_CAP_X86_MSR_FILTER),
    ("set_guest_debug", kvm_bindings::KVM_CAP_SET_GUEST_DEBUG),
    ("pmu_capability", kvm_bindings::KVM_CAP_PMU_CAPABILITY),
    ("nr_vcpus", kvm_bindings::KVM_CAP_NR_VCPUS),
    ("max_vcpus", kvm_bindings::KVM_CAP_MAX_VCPUS),
    ("sync_regs", kvm_bindings::KVM_CAP_SYNC_REGS),
    ("tsc_control", kvm_bindings::KVM_CAP_TSC_CONTROL),
    ("xsave", kvm_bindings::KVM_CAP_XSAVE),
];

/// The KVM_SYNC_X86_* fields (REGS = 1, SREGS = 2, EVENTS = 4) this host's
/// KVM_CAP_SYNC_REGS offers, 0 where it has none: with them the kvm backend
/// reads the vCPU state of each exit from `kvm_run` instead of by ioctl.
/// (`KvmReport::caps["sync_regs"]` holds the same mask.)
pub fn sync_regs_fields(kvm: &Kvm) -> u32 {
    let mask = kvm.check_extension_raw(kvm_bindings::KVM_CAP_SYNC_REGS as libc::c_ulong);
    (mask.max(0) as u32) & kvm_bindings::KVM_SYNC_X86_VALID_FIELDS
}

fn query_caps(kvm: &Kvm) -> BTreeMap<&'static str, i32> {
    CAPS.iter()
        .map(|&(name, cap)| (name, kvm.check_extension_raw(cap as libc::c_ulong)))
        .collect()
}

/// Probe KVM: open it, create a VM and vCPU, query capabilities, and run
/// tiny ring-3 guests to test native execution, single-step and hardware
/// breakpoints. Takes well under a second where KVM works.
pub fn probe_kvm() -> KvmReport {
    let mut report = KvmReport {
        device_present: std::path::Path::new("/dev/kvm").exists(),
        usable: false,
        reason: None,
        api_version: None,
        caps: BTreeMap::new(),
        single_step: Finding::no("not tried: KVM unusable"),
        hw_breakpoint: Finding::no("not tried: KVM unusable"),
        ring3_native: Finding::no("not tried: KVM unusable"),
        ring3_mips: None,
        ring3_block_us: None,
        backend_guest: Finding::no("not tried: KVM unusable"),
        ring0_mips: None,
        cpuid_policy: Finding::no("not tried: KVM unusable"),
        ring3_cpuid: Finding::no("not tried: KVM unusable"),
    };
    let kvm = match open_kvm() {
        Ok(k) => k,
        Err(e) => {
            report.reason = Some(e.to_string());
            return report;
        }
    };
    report.api_version = Some(kvm.get_api_version());
    report.caps = query_caps(&kvm);
    match kvm.create_vm() {
        Ok(vm) => {
            if let Err(e) = vm.create_vcpu(0) {
                report.reason = Some(format!("KVM_CREATE_VCPU failed: {e}"));
                return report;
            }
        }
        Err(e) => {
            report.reason = Some(format!("KVM_CREATE_VM failed: {e}"));
            return report;
        }
    }
    report.usable = true;

    let (native, mips, block_us) = probe_ring3();
    report.ring3_native = native;
    report.ring3_mips = mips;
    report.ring3_block_us = block_us;
    let (guest, ring0_mips, cpuid) = probe_backend();
    report.backend_guest = guest;
    report.ring0_mips = ring0_mips;
    report.cpuid_policy = cpuid;
    report.ring3_cpuid = ring3_cpuid_follows_policy();
    report.single_step = probe_debug(GuestDebug::SingleStep);
    report.hw_breakpoint = probe_debug(GuestDebug::HwBreakpoint(layout::CODE_BASE + 1));
    report
}

/// The vendor string the CPUID probe plants in leaf 0 (EBX, EDX, ECX).
const PROBE_VENDOR: [u32; 3] = [
    u32::from_le_bytes(*b"CASM"),
    u32::from_le_bytes(*b"otio"),
    u32::from_le_bytes(*b"nCPU"),
];

/// Whether CPUID executed by ring-3 guest code answers from the vCPU's
/// CPUID table (KVM_SET_CPUID2), as VT-x/SVM make it do, or natively from
/// the host CPU (a software-assisted KVM that runs ring 3 natively without
/// CPUID faulting). Where it does not, CPUID is one more instruction a
/// recording cannot control: its answers are the host's, not the logged
/// policy's. Runs `cpuid` with EAX = 0 in ring 3 under a table whose leaf 0
/// carries a vendor string no CPU has.
pub fn ring3_cpuid_follows_policy() -> Finding {
    let mut runner = match Ring3Runner::new() {
        Ok(r) => r,
        Err(e) => return Finding::no(format!("not tried: ring-3 VM set-up failed: {e}")),
    };
    let mut table = match runner.supported_cpuid() {
        Ok(t) => t,
        Err(e) => return Finding::no(format!("not tried: CPUID: {e}")),
    };
    match table.iter_mut().find(|e| e.leaf == 0) {
        Some(e) => [e.ebx, e.edx, e.ecx] = PROBE_VENDOR,
        None => return Finding::no("not tried: the host's CPUID has no leaf 0"),
    }
    if let Err(e) = runner.set_cpuid(&table) {
        return Finding::no(format!("KVM_SET_CPUID2 refused the table: {e}"));
    }
    let out = match runner.run(&Ring3Block::new(vec![0x0f, 0xa2])) {
        Ok(o) if o.end == Ring3End::Completed => o,
        Ok(o) => return Finding::no(format!("`cpuid` in ring 3 ended {:?}", o.end)),
        Err(e) => return Finding::no(format!("ring-3 run failed: {e}")),
    };
    let got = [
        out.regs.rbx as u32,
        out.regs.rdx as u32,
        out.regs.rcx as u32,
    ];
    let text = |v: [u32; 3]| -> String {
        v.iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect()
    };
    if got == PROBE_VENDOR {
        Finding::yes("ring-3 CPUID answered from the vCPU's table (vendor set to CASMotionCPU)")
    } else {
        Finding::no(format!(
            "ring-3 CPUID answered vendor {:?}, not the table's \"CASMotionCPU\": it runs natively \
             on the host CPU, so guests see the host's CPUID, not the recorded policy",
            text(got)
        ))
    }
}

/// Below this the "native" ring-3 loop is taken to be emulated (emulation
/// here runs about 1 instruction per µs, native execution thousands per µs).
const NATIVE_MIPS_THRESHOLD: f64 = 100.0;

fn probe_ring3() -> (Finding, Option<f64>, Option<f64>) {
    let mut runner = match Ring3Runner::new() {
        Ok(r) => r,
        Err(e) => {
            return (
                Finding::no(format!("ring-3 VM set-up failed: {e}")),
                None,
                None,
            );
        }
    };
    let mut block = Ring3Block::new(vec![0x48, 0x01, 0xd8]); // add rax, rbx
    block.regs.rax = 40;
    block.regs.rbx = 2;
    match runner.run(&block) {
        Ok(out) if out.end == Ring3End::Completed && out.regs.rax == 42 => {}
        Ok(out) => {
            return (
                Finding::no(format!(
                    "`add rax, rbx` in ring 3 ended {:?} with rax {}",
                    out.end, out.regs.rax
                )),
                None,
                None,
            );
        }
        Err(e) => return (Finding::no(format!("ring-3 run failed: {e}")), None, None),
    }
    let n = 200u32;
    let start = Instant::now();
    for _ in 0..n {
        if let Err(e) = runner.run(&Ring3Block::new(vec![0x90])) {
            return (Finding::no(format!("ring-3 run failed: {e}")), None, None);
        }
    }
    let block_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    // 2e7 loop iterations: ~10 ms natively, bounded by the 60 s benchmark
    // timeout if emulated.
    match runner.native_mips_loop(20_000_000) {
        Ok(b) if b.mips >= NATIVE_MIPS_THRESHOLD => (
            Finding::yes(format!(
                "ring-3 loop ran at {:.0} MIPS (native; emulation would be ~1)",
                b.mips
            )),
            Some(b.mips),
            Some(block_us),
        ),
        Ok(b) => (
            Finding::no(format!(
                "ring-3 loop ran at only {:.1} MIPS: guest code is emulated, not native",
                b.mips
            )),
            Some(b.mips),
            Some(block_us),
        ),
        Err(e) => (
            Finding::no(format!("ring-3 benchmark loop failed: {e}")),
            None,
            Some(block_us),
        ),
    }
}

/// Iterations of the ring-0 probe loop (two instructions each).
const RING0_LOOP: u32 = 50_000;

fn probe_backend() -> (Finding, Option<f64>, Finding) {
    use vcpu::{Completion, ExitInfo, ExitReason, Regs, Vcpu};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    let n = RING0_LOOP.to_le_bytes();
    let code = [
        0xE6, 0x80, // out 0x80, al
        0xE4, 0x81, // in al, 0x81
        0x66, 0xB9, n[0], n[1], n[2], n[3], // mov ecx, RING0_LOOP
        0x66, 0x49, // L: dec ecx
        0x75, 0xFC, // jnz L
        0xE6, 0x82, // out 0x82, al
        0xF4, // hlt
    ];
    let fail = |what: String| {
        (
            Finding::no(what),
            None,
            Finding::no("not tried: backend failed"),
        )
    };
    let mem = match GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8000)]) {
        Ok(m) => m,
        Err(e) => return fail(format!("guest memory: {e}")),
    };
    if let Err(e) = mem.write_slice(&code, GuestAddress(0x1000)) {
        return fail(format!("guest memory: {e}"));
    }
    let vm = match crate::KvmVm::new(mem) {
        Ok(vm) => vm,
        Err(e) => return fail(format!("KvmVm: {e}")),
    };
    let cpuid = match vm.host_cpuid() {
        Ok(c) => c,
        Err(e) => return fail(format!("CPUID: {e}")),
    };
    let mut v = match vm.create_vcpu(0, &cpuid) {
        Ok(v) => v,
        Err(e) => return fail(format!("vCPU: {e}")),
    };
    let cpuid_policy = if v.unrecordable_visible() {
        Finding::no(
            "KVM_SET_CPUID2 with RDRAND/RDSEED cleared, yet KVM_GET_CPUID2 still shows them: \
             this KVM keeps host CPUID values, so guests can see RDRAND/RDSEED",
        )
    } else {
        Finding::yes("RDRAND/RDSEED cleared in the vCPU's CPUID (read back after setting)")
    };
    let run = |v: &mut crate::KvmVcpu| -> Result<(u64, u64), String> {
        let mut s = v.special_regs().map_err(|e| e.to_string())?;
        s.cs.base = 0;
        s.cs.selector = 0;
        v.set_special_regs(&s).map_err(|e| e.to_string())?;
        v.set_regs(&Regs {
            rip: 0x1000,
            rflags: 2,
            rsp: 0x7000,
            ..Regs::default()
        })
        .map_err(|e| e.to_string())?;
        let mut step = |want: ExitReason, c: Completion| -> Result<vcpu::VmExit, String> {
            let e = v.run().map_err(|e| e.to_string())?;
            if e.reason != want {
                return Err(format!("expected a {want:?} exit, got {e:?}"));
            }
            v.complete(c).map_err(|e| e.to_string())?;
            Ok(e)
        };
        step(ExitReason::IoInstruction, Completion::Retire)?;
        step(ExitReason::IoInstruction, Completion::IoIn(0x5A))?;
        let start = Instant::now();
        let e = step(ExitReason::IoInstruction, Completion::Retire)?;
        let loop_ns = start.elapsed().as_nanos() as u64;
        match e.info {
            ExitInfo::Io {
                out_value: Some(0x5A),
                qual,
                ..
            } if qual.port == 0x82 => {}
            other => {
                return Err(format!(
                    "the port read's value did not reach the guest: {other:?}"
                ));
            }
        }
        step(ExitReason::Hlt, Completion::Retire)?;
        Ok((loop_ns, v.exit_count()))
    };
    match run(&mut v) {
        Ok((loop_ns, exits)) => {
            let mips = 2.0 * RING0_LOOP as f64 / (loop_ns.max(1) as f64 / 1e9) / 1e6;
            (
                Finding::yes(format!(
                    "real-mode guest: OUT, IN answered by the monitor, a {}-instruction loop \
                     at {mips:.1} MIPS, HLT ({exits} deterministic exits)",
                    2 * RING0_LOOP
                )),
                Some(mips),
                cpuid_policy,
            )
        }
        Err(e) => (
            Finding::no(format!("tiny guest on the kvm backend: {e}")),
            None,
            cpuid_policy,
        ),
    }
}

fn probe_debug(mode: GuestDebug) -> Finding {
    let what = match mode {
        GuestDebug::SingleStep => "KVM_GUESTDBG_SINGLESTEP",
        GuestDebug::HwBreakpoint(_) => "KVM_GUESTDBG_USE_HW_BP",
        GuestDebug::Off => "no guest debugging",
    };
    let mut runner = match Ring3Runner::new() {
        Ok(r) => r,
        Err(e) => return Finding::no(format!("VM set-up failed: {e}")),
    };
    runner.set_timeout(std::time::Duration::from_millis(500));
    if let Err(e) = runner.set_guest_debug(mode) {
        return Finding::no(format!("{what} refused: {e}"));
    }
    let block = Ring3Block::new(vec![0x90, 0x90, 0x90]);
    match runner.run(&block) {
        Ok(out) => match out.end {
            Ring3End::DebugExit { pc, .. } => Finding::yes(format!(
                "{what} on a ring-3 guest gave KVM_EXIT_DEBUG at {pc:#x}"
            )),
            Ring3End::Fault { exception, .. } => Finding::no(format!(
                "{what} on a ring-3 guest gave no KVM_EXIT_DEBUG: the guest itself took \
                 exception {} at {:#x}",
                exception.vector, out.regs.rip
            )),
            Ring3End::Completed => Finding::no(format!(
                "{what} on a ring-3 guest gave no KVM_EXIT_DEBUG: the 3-instruction block ran \
                 to its end undisturbed"
            )),
            other => Finding::no(format!(
                "{what} on a ring-3 guest gave no KVM_EXIT_DEBUG: the run ended {other:?}"
            )),
        },
        Err(e) => Finding::no(format!("{what}: running the guest failed: {e}")),
    }
}

/// Whether a hardware branch counter is usable through perf_event_open.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PerfReport {
    /// /proc/sys/kernel/perf_event_paranoid, where readable.
    pub paranoid: Option<i32>,
    /// PERF_COUNT_HW_BRANCH_INSTRUCTIONS for the calling thread (user mode)
    /// opens and counts.
    pub host_branches: Finding,
    /// The same counter restricted to guest mode (exclude_host) opens.
    pub guest_branches: Finding,
}

/// `struct perf_event_attr`, PERF_ATTR_SIZE_VER7 (128 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved2: u16,
    aux_sample_size: u32,
    reserved3: u32,
    sig_data: u64,
}

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_COUNT_HW_BRANCH_INSTRUCTIONS: u64 = 4;
const FLAG_DISABLED: u64 = 1 << 0;
const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
const FLAG_EXCLUDE_HOST: u64 = 1 << 19;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;

fn perf_open(flags: u64) -> Result<std::os::fd::OwnedFd, std::io::Error> {
    use std::os::fd::FromRawFd;
    let attr = PerfEventAttr {
        type_: PERF_TYPE_HARDWARE,
        size: size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_HW_BRANCH_INSTRUCTIONS,
        flags,
        ..PerfEventAttr::default()
    };
    // SAFETY: attr is a valid, fully initialised perf_event_attr of the size
    // it declares; pid 0 / cpu -1 = this thread on any CPU; no group; no flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn explain(e: &std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::ENOENT) => "no such hardware event: the CPU (or hypervisor) exposes no PMU",
        Some(libc::EOPNOTSUPP) => "not supported by this PMU",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "not permitted (perf_event_paranoid or missing CAP_PERFMON)"
        }
        Some(libc::EINVAL) => "invalid for this kernel/PMU",
        _ => "failed",
    };
    format!("perf_event_open: {why} ({e})")
}

fn count_branches(fd: &std::os::fd::OwnedFd) -> Result<u64, std::io::Error> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // SAFETY: ioctls on a perf event fd we own, with no argument.
    unsafe { libc::ioctl(raw, PERF_EVENT_IOC_ENABLE, 0) };
    let mut x = 0u64;
    for i in 0..10_000u64 {
        if std::hint::black_box(i) % 3 == 0 {
            x = x.wrapping_add(i);
        }
    }
    std::hint::black_box(x);
    // SAFETY: as above.
    unsafe { libc::ioctl(raw, PERF_EVENT_IOC_DISABLE, 0) };
    let mut buf = [0u8; 8];
    // SAFETY: reading 8 bytes into an 8-byte buffer from our fd.
    let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), 8) };
    if n != 8 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(buf))
}

/// Probe the hardware branch counter through perf_event_open, for this
/// thread in user mode and for guest mode only.
///
/// This is the doctor's own small probe; the pmu-driver's
/// `pmu_driver::perf::probe()` is meant to replace it when it exists.
pub fn probe_perf() -> PerfReport {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let host_branches = match perf_open(FLAG_DISABLED | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV) {
        Ok(fd) => match count_branches(&fd) {
            Ok(n) if n >= 10_000 => Finding::yes(format!(
                "branch-instructions counter opened and counted {n} branches over a 10,000-iteration loop"
            )),
            Ok(n) => Finding::no(format!(
                "counter opened but counted only {n} branches over a 10,000-iteration loop"
            )),
            Err(e) => Finding::no(format!("counter opened but could not be read: {e}")),
        },
        Err(e) => Finding::no(explain(&e)),
    };
    let guest_branches = match perf_open(FLAG_DISABLED | FLAG_EXCLUDE_HOST | FLAG_EXCLUDE_HV) {
        Ok(_) => Finding::yes("guest-only (exclude_host) branch counter opened"),
        Err(e) => Finding::no(explain(&e)),
    };
    PerfReport {
        paranoid,
        host_branches,
        guest_branches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_attr_has_the_ver7_size() {
        assert_eq!(size_of::<PerfEventAttr>(), 128);
    }

    #[test]
    fn kvm_probe_agrees_with_the_device_node() {
        let r = probe_kvm();
        assert_eq!(r.device_present, std::path::Path::new("/dev/kvm").exists());
        if !r.usable {
            println!(
                "skipped deeper checks: {}",
                r.reason.as_deref().unwrap_or("?")
            );
            assert!(r.reason.is_some());
            return;
        }
        assert_eq!(r.api_version, Some(12));
        assert_eq!(r.caps.len(), CAPS.len());
        // The oracle must work wherever KVM runs ring-3 code at all.
        assert!(r.ring3_mips.is_some(), "{:?}", r.ring3_native);
        println!("{r:#?}");
    }

    #[test]
    fn perf_probe_reports_a_reason() {
        let r = probe_perf();
        assert!(!r.host_branches.detail.is_empty());
        assert!(!r.guest_branches.detail.is_empty());
        println!("{r:#?}");
    }
}
