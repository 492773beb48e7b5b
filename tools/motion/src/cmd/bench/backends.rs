//! `motion bench backends [--json]`: the same guests on the soft vCPU and on
//! kvm, side by side, in one run: live (in this process, as `motion run`)
//! and recorded (as `motion record`: monitor and log store in their
//! sandboxed processes, timed inside the monitor from the machine's start to
//! the sealed log). Wall times, exits, instructions where the backend counts
//! them, log sizes, and the ratio kvm/soft.
//!
//! The guests: `compute` (ring-0 fixed work: the standard guest, which the
//! nested KVM of the development machines cannot run — reported, not
//! hidden), `compute-r3` (the same work in ring 3, which runs natively
//! there), `disk-r3` (exit-heavy: virtio-blk MMIO and DMA) and
//! `serial-echo-r3` (input-driven: port polling while serial input arrives).
//! Soft records with exact timepoints, kvm in exit-synchronous mode (its only
//! mode here). Where kvm is unusable the reason is printed with the soft
//! figures.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use vm_control_api::Outcome;
use vm_monitor::devices::virtio_blk::DiskImage;
use vm_monitor::{InputFeed, LiveConfig, LiveEnvironment, Machine, MachineConfig, RunLimits};

use crate::cmd::record::{RecordArgs, RecordRun, record};
use crate::cmd::run::Backend;

/// The guests, in the order printed.
const GUESTS: &[&str] = &["compute", "compute-r3", "disk-r3", "serial-echo-r3"];

/// Arguments of `motion bench backends`.
#[derive(Debug, clap::Args)]
pub struct BackendsBenchArgs {
    /// Runs of each; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Only these bundled guests (default: compute, compute-r3, disk-r3,
    /// serial-echo-r3).
    #[arg(long, value_delimiter = ',')]
    pub guests: Vec<String>,
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    /// VM exits (live), the exit clock (exit-synchronous recordings); none
    /// for exact recordings, which count instructions instead.
    exits: Option<u64>,
    instructions: Option<u64>,
    log_bytes: Option<u64>,
    records: Option<u64>,
}

/// The inputs a guest needs: a disk image and serial input.
struct Fixtures {
    dir: tempfile::TempDir,
    input: Vec<u8>,
}

impl Fixtures {
    fn new() -> anyhow::Result<Fixtures> {
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let disk = guest_images::samples::disk_image();
        std::fs::write(dir.path().join("disk.img"), disk).context("writing the disk image")?;
        let input = guest_images::samples::serial_input();
        std::fs::write(dir.path().join("input.txt"), &input).context("writing the input")?;
        Ok(Fixtures {
            dir,
            input: input.into_bytes(),
        })
    }

    fn disk(&self, guest: &str) -> Option<PathBuf> {
        guest
            .starts_with("disk")
            .then(|| self.dir.path().join("disk.img"))
    }

    fn input(&self, guest: &str) -> Option<PathBuf> {
        guest
            .starts_with("serial-echo")
            .then(|| self.dir.path().join("input.txt"))
    }
}

fn live(fx: &Fixtures, guest: &str, backend: Backend) -> anyhow::Result<Sample> {
    let elf = guest_images::bytes(guest).context("bundled guest")?;
    let machine = Machine::new(elf, &MachineConfig::default())?;
    let disk = match fx.disk(guest) {
        Some(p) => Some(DiskImage::open(&p, false)?),
        None => None,
    };
    let mut env = LiveEnvironment::new(
        machine.memory().clone(),
        LiveConfig {
            serial_out: Box::new(std::io::sink()),
            input: fx
                .input(guest)
                .map(|_| InputFeed::from_bytes(fx.input.as_slice())),
            disk,
        },
    );
    let limits = RunLimits {
        wall: Some(std::time::Duration::from_secs(60)),
        ..RunLimits::default()
    };
    let o = crate::cmd::backend::with_vcpu(backend, &machine, |vcpu, controls| {
        machine.reset_vcpu(vcpu, controls)?;
        Ok(machine.run(vcpu, &mut env, &limits)?)
    })?;
    if !matches!(o.stop, vm_monitor::StopReason::Exit(0)) {
        anyhow::bail!("the guest did not finish: {}", o.stop);
    }
    Ok(Sample {
        wall: o.elapsed.as_secs_f64(),
        exits: Some(o.exits),
        instructions: o.retired.map(|r| r.instructions),
        log_bytes: None,
        records: None,
    })
}

fn recorded(fx: &Fixtures, guest: &str, backend: Backend, i: usize) -> anyhow::Result<Sample> {
    let out = fx
        .dir
        .path()
        .join(format!("{guest}-{}-{i}.motionlog", backend.name()));
    let args = RecordArgs {
        guest: guest.to_string(),
        out,
        disk: fx.disk(guest),
        input: fx.input(guest),
        backend,
        counter_mode: None,
        ram_mib: 128,
        digest_every: vm_monitor::record::DEFAULT_DIGEST_EVERY,
        sync_ms: 10,
        timeout: Some(60.0),
        system: None,
        events: false,
        json: false,
    };
    let r = record(&RecordRun {
        args: &args,
        echo: false,
        progress: false,
    })?;
    match &r.outcome {
        Outcome::Recorded {
            end: motion_records::EndStatus::GuestShutdown { code: 0 },
        } => {}
        Outcome::Recorded { end } => {
            let end = crate::cmd::record::end_text(end);
            match crate::cmd::run::kvm_failure_hint(&end) {
                Some(hint) => anyhow::bail!("{end}: {hint}"),
                None => anyhow::bail!("the recording ended with {end}"),
            }
        }
        other => anyhow::bail!("the recording did not complete: {other:?}"),
    }
    let exact = r.machine.counter_mode == motion_records::CounterMode::Exact;
    Ok(Sample {
        wall: r.status.session_ns as f64 / 1e9,
        // Exact sessions count no clock; their instructions say the work.
        exits: (!exact).then_some(r.status.exits),
        instructions: exact.then_some(r.status.instructions),
        log_bytes: Some(r.log_bytes),
        records: Some(r.status.records),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The medians of a cell's samples, or why it could not run.
type Cell = Result<Vec<Sample>, String>;

fn summary(c: &Cell) -> Result<Sample, String> {
    let v = c.as_ref().map_err(Clone::clone)?;
    let m = |f: &dyn Fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let first = v.first().ok_or("no run")?;
    // A count's median, if the runs measured it (all or none of them do).
    let count = |get: fn(&Sample) -> Option<u64>| {
        get(first).map(|_| m(&|s| get(s).unwrap_or(0) as f64) as u64)
    };
    Ok(Sample {
        wall: m(&|s| s.wall),
        exits: count(|s| s.exits),
        instructions: count(|s| s.instructions),
        log_bytes: count(|s| s.log_bytes),
        records: count(|s| s.records),
    })
}

fn sample_json(s: &Result<Sample, String>) -> Value {
    match s {
        Ok(s) => json!({
            "wall_s": s.wall,
            "exits": s.exits,
            "instructions": s.instructions,
            "log_bytes": s.log_bytes,
            "records": s.records,
        }),
        Err(why) => json!({ "error": why }),
    }
}

fn cell_text(s: &Result<Sample, String>) -> String {
    match s {
        Ok(s) => {
            let mut t = format!("{:8.3} s", s.wall);
            if let Some(e) = s.exits {
                t += &format!(" {e:>7} exits");
            }
            if let Some(i) = s.instructions {
                t += &format!(" {:>11} insns", i);
            }
            if let Some(b) = s.log_bytes {
                t += &format!(" log {}", crate::cmd::record::bytes(b));
            }
            t
        }
        Err(_) => "cannot run (below)".into(),
    }
}

/// Whether kvm can be used at all here, and why not.
fn kvm_unusable() -> Option<String> {
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 21)])
            .ok()?;
    match vcpu_kvm::KvmVm::new(mem) {
        Ok(vm) => vm
            .create_vcpu(0, &vcpu::CpuidPolicy::baseline().entries)
            .err()
            .map(|e| format!("cannot create a kvm vCPU: {e}")),
        Err(e) => Some(e.to_string()),
    }
}

/// Run the benchmark.
pub fn run(a: BackendsBenchArgs) -> anyhow::Result<ExitCode> {
    let guests: Vec<String> = if a.guests.is_empty() {
        GUESTS.iter().map(|s| s.to_string()).collect()
    } else {
        a.guests.clone()
    };
    for g in &guests {
        if guest_images::bytes(g).is_none() {
            anyhow::bail!("unknown bundled guest {g:?}");
        }
    }
    let fx = Fixtures::new()?;
    let runs = a.runs.max(1);
    let kvm_why = kvm_unusable();
    let backends: Vec<Backend> = match &kvm_why {
        None => vec![Backend::Soft, Backend::Kvm],
        Some(_) => vec![Backend::Soft],
    };
    // cells[guest][phase][backend]
    let mut cells: Vec<[Vec<Cell>; 2]> = guests
        .iter()
        .map(|_| [vec![Ok(Vec::new()); 2], vec![Ok(Vec::new()); 2]])
        .collect();
    // Interleaved, so that load from elsewhere on the host hits all alike.
    for i in 0..runs {
        for (g, phases) in guests.iter().zip(cells.iter_mut()) {
            for (bi, &b) in backends.iter().enumerate() {
                for (phase, by_backend) in phases.iter_mut().enumerate() {
                    let cell = &mut by_backend[bi];
                    let Ok(samples) = cell else { continue };
                    let s = if phase == 0 {
                        live(&fx, g, b)
                    } else {
                        recorded(&fx, g, b, i)
                    };
                    match s {
                        Ok(s) => samples.push(s),
                        Err(e) => *cell = Err(format!("{e:#}")),
                    }
                }
            }
        }
    }
    println!(
        "motion bench backends: {runs} runs each, medians; soft records exact, kvm exit-synchronous"
    );
    if let Some(why) = &kvm_why {
        println!("kvm: unusable here ({why}); soft only");
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (gi, g) in guests.iter().enumerate() {
        for (phase, name) in ["live", "record"].iter().enumerate() {
            let soft = summary(&cells[gi][phase][0]);
            let kvm = match &kvm_why {
                None => summary(&cells[gi][phase][1]),
                Some(why) => Err(format!("kvm unusable: {why}")),
            };
            let ratio = match (&soft, &kvm) {
                (Ok(s), Ok(k)) if s.wall > 0.0 => Some(k.wall / s.wall),
                _ => None,
            };
            println!(
                "{g:<15} {name:<6}  soft {}  |  kvm {}  |  kvm/soft {}",
                cell_text(&soft),
                if kvm_why.is_some() {
                    "-".into()
                } else {
                    cell_text(&kvm)
                },
                ratio.map_or("-".into(), |r| format!("{r:.3}"))
            );
            for (b, s) in [("soft", &soft), ("kvm", &kvm)] {
                if let Err(why) = s {
                    if kvm_why.is_none() || b == "soft" {
                        notes.push(format!("{g} {name} on {b}: {why}"));
                    }
                }
            }
            rows.push(json!({
                "guest": g,
                "phase": name,
                "soft": sample_json(&soft),
                "kvm": sample_json(&kvm),
                "kvm_over_soft": ratio,
            }));
        }
    }
    for n in &notes {
        println!("  cannot run: {n}");
    }
    println!(
        "(live: in-process, nothing logged; record: machine start to sealed log; exits on kvm are KVM exits to user space, on soft every VM exit incl. CPUID/RDTSC; insns only where counted exactly)"
    );
    if a.json {
        println!(
            "{}",
            json!({
                "runs": runs,
                "kvm_usable": kvm_why.is_none(),
                "kvm_unusable_reason": kvm_why,
                "rows": rows,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
