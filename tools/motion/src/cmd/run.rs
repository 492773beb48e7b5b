//! `motion run`: boot a guest live, its serial port on stdout, and exit with
//! the guest's isa-debug-exit status.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use vm_monitor::devices::virtio_blk::DiskImage;
use vm_monitor::{
    InputFeed, LiveConfig, LiveEnvironment, Machine, MachineConfig, RunLimits, StopReason,
};

/// Which vCPU implementation runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The software vCPU (an x86-64 interpreter; exact counters).
    Soft,
    /// Linux KVM.
    Kvm,
}

impl Backend {
    /// Its name in log headers and messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Soft => "soft",
            Backend::Kvm => "kvm",
        }
    }
}

/// How a recording times asynchronous events (`--counter-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CounterModeArg {
    /// Exact retired-branch timepoints: events land at any instruction (soft).
    Exact,
    /// Events delivered only at port I/O, MMIO and HLT exits, timed by their
    /// count: what kvm records, replayable on soft and kvm.
    ExitSynchronous,
}

impl From<CounterModeArg> for vcpu::CounterMode {
    fn from(m: CounterModeArg) -> Self {
        match m {
            CounterModeArg::Exact => vcpu::CounterMode::Exact,
            CounterModeArg::ExitSynchronous => vcpu::CounterMode::ExitSynchronous,
        }
    }
}

/// Arguments of `motion run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A bundled guest (hello, timer, disk, entropy, compute, serial-echo;
    /// ring-3 variants for KVM hosts that emulate ring 0: hello-r3, disk-r3,
    /// serial-echo-r3, compute-r3) or
    /// the path of a PVH ELF kernel.
    #[arg(long)]
    pub guest: String,
    /// Disk image for the virtio-blk device (guest writes stay in memory).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Service time the disk worker waits before each request's I/O, in
    /// microseconds (default 50; 0 for none).
    #[arg(long, requires = "disk")]
    pub disk_latency_us: Option<u64>,
    /// Serial input: a file, or `-` for standard input.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// vCPU backend.
    #[arg(long, value_enum, default_value = "soft")]
    pub backend: Backend,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    pub ram_mib: u64,
    /// Kernel command line (PVH `cmdline`).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Stop the guest after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Print exits, interrupts, retired instructions and time on stderr.
    #[arg(long)]
    pub stats: bool,
}

/// The ELF image for `--guest`: a bundled guest's name, or a file.
pub fn guest_image(guest: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(b) = guest_images::bytes(guest) {
        return Ok(b.to_vec());
    }
    let path = std::path::Path::new(guest);
    if !path.exists() {
        bail!(
            "unknown guest {guest:?}: not a bundled guest ({}) and no such file",
            guest_images::NAMES.join(", ")
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read guest image {}", path.display()))
}

/// Run `motion run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let elf = guest_image(&args.guest)?;
    let machine = Machine::new(
        &elf,
        &MachineConfig {
            ram: args.ram_mib.saturating_mul(1 << 20),
            cmdline: args.cmdline.clone(),
            ..MachineConfig::default()
        },
    )
    .with_context(|| format!("guest {}", args.guest))?;
    let disk = match &args.disk {
        Some(p) => Some(DiskImage::open(p, false)?),
        None => None,
    };
    let input = match &args.input {
        Some(p) if p.as_os_str() == "-" => Some(InputFeed::from_reader(std::io::stdin())),
        Some(p) => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot open serial input {}", p.display()))?;
            Some(InputFeed::from_reader(f))
        }
        None => None,
    };
    let mut env = LiveEnvironment::new(
        machine.memory().clone(),
        LiveConfig {
            serial_out: Box::new(std::io::stdout()),
            input,
            disk,
        },
    );
    if let Some(us) = args.disk_latency_us {
        env.set_disk_timing(vm_monitor::live::DiskTiming::Worker {
            latency: Duration::from_micros(us),
        });
    }
    let limits = RunLimits {
        wall: args.timeout.map(Duration::from_secs_f64),
        exits: None,
        exit_synchronous: false,
    };
    let outcome = crate::cmd::backend::with_vcpu(args.backend, &machine, |vcpu, controls| {
        machine.reset_vcpu(vcpu, controls)?;
        Ok(machine.run(vcpu, &mut env, &limits)?)
    })
    .map_err(explain_kvm_failure)?;
    std::io::stdout().flush().ok();
    if args.stats {
        let insns = outcome
            .retired
            .map_or("n/a".to_string(), |r| r.instructions.to_string());
        eprintln!(
            "motion run: {} exits, {} interrupts, {} instructions, {:.3} s",
            outcome.exits,
            outcome.interrupts,
            insns,
            outcome.elapsed.as_secs_f64()
        );
    }
    if let Some(why) = env.disk_broken() {
        eprintln!("motion run: the guest broke the disk device: {why}");
    }
    if !matches!(outcome.stop, StopReason::Exit(_)) {
        eprintln!("motion run: {}", outcome.stop);
    }
    Ok(ExitCode::from(outcome.exit_status()))
}

/// What the user can do about a KVM emulation failure, if `message` is one.
pub fn kvm_failure_hint(message: &str) -> Option<&'static str> {
    message.contains("KVM_EXIT_INTERNAL_ERROR").then_some(
        "KVM could not execute a guest instruction: where KVM runs ring-0 guest code in its \
         instruction emulator (nested KVM; see `motion doctor`), SSE arithmetic and INT/IRET \
         in 64-bit mode are not emulated; use --backend soft, or a ring-3 guest",
    )
}

/// Add what the user can do to a KVM emulation failure.
fn explain_kvm_failure(e: anyhow::Error) -> anyhow::Error {
    match kvm_failure_hint(&format!("{e:#}")) {
        Some(hint) => e.context(hint),
        None => e,
    }
}
