//! What the host's perf_event interface can do for branch counting, tried
//! for real and reported with the precise reason for each failure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::counter::{CounterSpec, PerfCounter, PerfEvent, Target};
use super::error::{Cause, PerfError, read_paranoid};
use super::signal::OverflowSignal;

/// The outcome of one probe step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// It works; what was observed.
    Works(String),
    /// A call failed.
    Fails {
        /// The failing call and errno.
        error: PerfError,
        /// What the errno means here.
        cause: Cause,
    },
    /// The calls succeeded but the result was wrong (e.g. no signal arrived).
    Wrong(String),
    /// Not attempted, and why (a prerequisite failed).
    NotTried(String),
}

impl Check {
    /// Whether the step worked.
    pub fn works(&self) -> bool {
        matches!(self, Check::Works(_))
    }

    fn failed(error: PerfError) -> Self {
        Check::Fails {
            cause: error.cause(),
            error,
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Works(s) => write!(f, "works: {s}"),
            Check::Fails { error, .. } => write!(f, "fails: {error}"),
            Check::Wrong(s) => write!(f, "wrong: {s}"),
            Check::NotTried(s) => write!(f, "not tried: {s}"),
        }
    }
}

/// Everything the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerfProbe {
    /// `kernel.perf_event_paranoid`, if readable.
    pub paranoid: Option<i32>,
    /// The PMUs the kernel registered (/sys/bus/event_source/devices).
    pub pmu_devices: Vec<String>,
    /// A core hardware PMU is registered ("cpu", or "cpu_core"/"cpu_atom" on
    /// hybrid Intel parts).
    pub hardware_pmu_registered: bool,
    /// A software event (task clock) opens: the syscall itself works.
    pub software_events: Check,
    /// PERF_COUNT_HW_BRANCH_INSTRUCTIONS, calling thread, user mode only.
    pub host_user_branches: Check,
    /// The same with kernel mode counted (needs paranoid <= 1 or CAP_PERFMON).
    pub host_all_branches: Check,
    /// Guest-mode branches of a thread (`exclude_host = 1`, all guest rings):
    /// what counting a KVM vCPU thread needs.
    pub guest_branches: Check,
    /// A hardware branch counter armed with a period delivers its overflow
    /// signal to the thread (checked by running a branchy loop).
    pub hardware_overflow_signal: Check,
    /// The same signal plumbing on a software event (page faults), so that
    /// the mechanism is known to work even where there is no hardware PMU.
    pub software_overflow_signal: Check,
}

impl PerfProbe {
    /// A KVM vCPU's guest branches can be counted with overflow signals.
    pub fn guest_counting_usable(&self) -> bool {
        self.guest_branches.works() && self.hardware_overflow_signal.works()
    }

    /// One line: is there a hardware branch counter, and if not, why not.
    pub fn verdict(&self) -> String {
        if self.guest_counting_usable() {
            return "perf_event can count a KVM vCPU's guest-mode branches with overflow signals"
                .into();
        }
        let why = match (&self.host_user_branches, &self.guest_branches) {
            (
                Check::Fails {
                    cause: Cause::NoHardwareEvent,
                    error,
                },
                _,
            ) => format!(
                "no hardware PMU on this host ({}: {}{})",
                error.op,
                error.errno_name(),
                if self.hardware_pmu_registered {
                    ""
                } else {
                    "; no 'cpu' PMU registered in /sys/bus/event_source/devices"
                }
            ),
            (_, Check::Fails { error, .. }) => format!("guest-mode counting refused: {error}"),
            (Check::Fails { error, .. }, _) => format!("branch counting refused: {error}"),
            _ => format!("overflow signal: {}", self.hardware_overflow_signal),
        };
        format!("perf_event cannot count guest branches precisely: {why}")
    }
}

/// Try each capability in turn. Runs on a scratch thread, because the
/// signal checks block a signal in the thread that receives it.
pub fn probe() -> PerfProbe {
    std::thread::scope(|s| {
        s.spawn(probe_on_this_thread)
            .join()
            .unwrap_or_else(|_| PerfProbe {
                paranoid: read_paranoid(),
                pmu_devices: pmu_devices(),
                hardware_pmu_registered: false,
                software_events: Check::Wrong("the probe thread panicked".into()),
                host_user_branches: Check::NotTried("probe thread panicked".into()),
                host_all_branches: Check::NotTried("probe thread panicked".into()),
                guest_branches: Check::NotTried("probe thread panicked".into()),
                hardware_overflow_signal: Check::NotTried("probe thread panicked".into()),
                software_overflow_signal: Check::NotTried("probe thread panicked".into()),
            })
    })
}

fn probe_on_this_thread() -> PerfProbe {
    let pmu_devices = pmu_devices();
    let hardware_pmu_registered = pmu_devices
        .iter()
        .any(|d| matches!(d.as_str(), "cpu" | "cpu_core" | "cpu_atom"));
    let open_check = |spec: CounterSpec, what: &str| match PerfCounter::open(&spec) {
        Ok(_) => Check::Works(format!("{what} opens")),
        Err(e) => Check::failed(e),
    };
    let software_events = open_check(
        CounterSpec {
            event: PerfEvent::SoftwareTaskClock,
            target: Target::CallingThread,
            guest_only: false,
            exclude_kernel: true,
            armable: false,
        },
        "task-clock",
    );
    let host_user_branches = match count_branches_of_a_loop() {
        Ok(s) => Check::Works(s),
        Err(e) => Check::failed(e),
    };
    let host_all_branches = open_check(
        CounterSpec {
            exclude_kernel: false,
            ..CounterSpec::host_user_branches()
        },
        "branch-instructions (user+kernel)",
    );
    let guest_branches = open_check(
        CounterSpec::guest_branches(Target::CallingThread),
        "branch-instructions with exclude_host=1",
    );
    let hardware_overflow_signal = if host_user_branches.works() {
        overflow_signal_check(
            CounterSpec {
                armable: true,
                ..CounterSpec::host_user_branches()
            },
            50_000,
            || {
                branchy_loop(1_000_000);
            },
        )
    } else {
        Check::NotTried("no hardware branch counter (see host_user_branches)".into())
    };
    let software_overflow_signal = overflow_signal_check(
        CounterSpec {
            event: PerfEvent::SoftwarePageFaults,
            target: Target::CallingThread,
            guest_only: false,
            exclude_kernel: true,
            armable: true,
        },
        8,
        || {
            let _ = touch_fresh_pages(32);
        },
    );
    PerfProbe {
        paranoid: read_paranoid(),
        pmu_devices,
        hardware_pmu_registered,
        software_events,
        host_user_branches,
        host_all_branches,
        guest_branches,
        hardware_overflow_signal,
        software_overflow_signal,
    }
}

fn count_branches_of_a_loop() -> Result<String, PerfError> {
    let c = PerfCounter::open(&CounterSpec::host_user_branches())?;
    c.enable()?;
    branchy_loop(100_000);
    c.disable()?;
    let n = c.count()?;
    Ok(format!(
        "counted {n} user-mode branches over a 100000-iteration loop"
    ))
}

fn overflow_signal_check(spec: CounterSpec, period: u64, work: impl FnOnce()) -> Check {
    let run = || -> Result<Check, PerfError> {
        let sig = OverflowSignal::for_current_thread(OverflowSignal::default_signal())?;
        let c = PerfCounter::open(&spec)?;
        c.signal_overflow_to(&sig)?;
        c.arm(period)?;
        c.enable()?;
        work();
        c.disable()?;
        let counted = c.count()?;
        let notice = sig.poll(Duration::from_secs(1))?;
        // Drain the rest: the counter overflows every `period` events.
        while sig.poll(Duration::ZERO)?.is_some() {}
        Ok(match notice {
            Some(n) if n.fd == std::os::fd::AsRawFd::as_raw_fd(&c) => Check::Works(format!(
                "signal {} (si_code {}) after a period of {period}; {counted} counted",
                sig.signal(),
                n.code
            )),
            Some(n) => Check::Wrong(format!(
                "signal carried fd {} instead of the counter's",
                n.fd
            )),
            None => Check::Wrong(format!(
                "no signal within 1 s although {counted} events were counted with period {period}"
            )),
        })
    };
    run().unwrap_or_else(Check::failed)
}

/// A loop with one taken branch per iteration that the optimiser keeps.
pub fn branchy_loop(iterations: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..iterations {
        acc = std::hint::black_box(acc.wrapping_add(i));
    }
    acc
}

/// Write to `pages` fresh anonymous pages (one page fault each); the mapping
/// is released again. Returns false if mmap failed.
pub fn touch_fresh_pages(pages: usize) -> bool {
    let page = 4096;
    let len = pages * page;
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: advice on the mapping just created; failure is harmless
    // (transparent huge pages would only merge faults).
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    for i in 0..pages {
        // SAFETY: i * page < len, inside the writable mapping.
        unsafe { std::ptr::write_volatile(p.cast::<u8>().add(i * page), 1) };
    }
    // SAFETY: unmapping exactly the mapping created above.
    unsafe { libc::munmap(p, len) };
    true
}

fn pmu_devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/bus/event_source/devices")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
