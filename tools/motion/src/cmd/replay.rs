//! `motion replay LOG`: replay a recording instruction-exactly and check it.
//!
//! This process (the supervisor domain and front end) reads the log's header
//! to know which guest image to grant the `vmm` domain, starts the `log`,
//! `vmm` and `replay` domains, and asks the replay-controller over
//! `VmControl` (channel `control-replay`) to replay. The controller reads
//! the log over `LogRead`, refuses it if the images differ from the
//! recorded ones, and drives the vm-monitor; this process prints the guest's
//! serial output again as it comes, a progress bar, and the verdict.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use motion_records::hex;
use vm_control_api::{DivergenceReport, Outcome, ReplaySetup, Reply, Request, Status};

use crate::cmd::record::{Session, guest_path, progress_bar, split_log, work_text};
use crate::cmd::run::Backend;
use motion_records::{CounterMode, MachineInfo};

/// Exit status of a replay that diverged.
pub const EXIT_DIVERGED: u8 = 2;
/// Exit status of a log cut short (its prefix replayed and verified).
pub const EXIT_TRUNCATED: u8 = 3;
/// Exit status of a log refused up front (other images).
pub const EXIT_REFUSED: u8 = 4;

/// Arguments of `motion replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The log to replay.
    pub log: PathBuf,
    /// The guest image (default: the bundled guest or path the log names).
    #[arg(long)]
    pub guest: Option<String>,
    /// The disk image the recording used (checked against the log's hash).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Make the soft vCPU's host counter interrupt skid this many
    /// instructions (landing then arms that many branches early): shows the
    /// landing copes with imprecise counters.
    #[arg(long, default_value_t = 0)]
    pub pmi_skid: u32,
    /// vCPU backend to replay on, whichever recorded: a kvm
    /// (exit-synchronous) recording replays on soft too; an exact-mode
    /// recording cannot replay on kvm (no precise counters there).
    #[arg(long, value_enum, default_value = "soft")]
    pub backend: Backend,
    /// A system description other than the built-in one.
    #[arg(long)]
    pub system: Option<PathBuf>,
    /// Print the supervisor's events on stderr.
    #[arg(long)]
    pub events: bool,
    /// Do not print the guest's serial output.
    #[arg(long)]
    pub quiet: bool,
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// How it ended.
    pub outcome: Outcome,
    /// The final status.
    pub status: Status,
    /// Records in the log.
    pub total: u64,
    /// The serial output, rebuilt.
    pub output: Vec<u8>,
    /// Wall time from the request to the verdict.
    pub elapsed: Duration,
    /// The log header's machine description.
    pub machine: MachineInfo,
}

/// Why a log cannot replay on `backend`, before anything starts.
pub fn backend_refusal(machine: &MachineInfo, backend: Backend) -> Option<String> {
    (backend == Backend::Kvm && machine.counter_mode == CounterMode::Exact).then(|| {
        format!(
            "this log was recorded on `{}` with exact timepoints (counter mode exact), which the \
             kvm backend cannot reproduce: it has no precise guest branch counter here (no \
             usable PMU; see `motion doctor`) and replays only exit-synchronous recordings \
             (made with --backend kvm, or --counter-mode exit-synchronous on soft); replay \
             it with --backend soft",
            machine.backend
        )
    })
}

/// Replay per `args`.
pub fn replay(args: &ReplayArgs, echo: bool, progress: bool) -> anyhow::Result<Replayed> {
    let (dir, name) = split_log(&args.log)?;
    let reader = log_store::LogReader::open(&args.log)
        .with_context(|| format!("cannot open {}", args.log.display()))?;
    let machine = reader.machine().clone();
    let total = reader.record_count();
    drop(reader);
    if let Some(why) = backend_refusal(&machine, args.backend) {
        return Ok(Replayed {
            outcome: Outcome::Refused(why),
            status: Status::default(),
            total,
            output: Vec::new(),
            elapsed: Duration::ZERO,
            machine,
        });
    }
    let guest = match &args.guest {
        Some(g) => guest_path(g)?,
        None => guest_path(&machine.guest_name).with_context(|| {
            format!(
                "the log names guest `{}`; give its image with --guest",
                machine.guest_name
            )
        })?,
    };
    let mut resources = vec![("log-dir", dir), ("guest-image", guest)];
    if let Some(d) = &args.disk {
        let d = d
            .canonicalize()
            .with_context(|| format!("disk image {}", d.display()))?;
        resources.push(("disk-image", d));
    }
    let mut session = Session::start(
        args.system.as_deref(),
        &["log", "vmm", "replay"],
        resources,
        "control-replay",
        args.events,
    )?;
    let start = Instant::now();
    let mode = machine.counter_mode;
    let result = drive(&mut session, args, name, (total, mode), echo, progress);
    session.shutdown();
    let (outcome, status, output) = result?;
    Ok(Replayed {
        outcome,
        status,
        total,
        output,
        elapsed: start.elapsed(),
        machine,
    })
}

fn drive(
    session: &mut Session,
    args: &ReplayArgs,
    log: String,
    (total, mode): (u64, CounterMode),
    echo: bool,
    progress: bool,
) -> anyhow::Result<(Outcome, Status, Vec<u8>)> {
    match session.call(&Request::Replay(Box::new(ReplaySetup {
        log,
        pmi_skid: args.pmi_skid,
        backend: args.backend.name().into(),
    })))? {
        Reply::ReplayStarted => {}
        other => bail!("unexpected answer {other:?} to Replay"),
    }
    let bar = if progress {
        progress_bar(Some(total))
    } else {
        None
    };
    let mut output = Vec::new();
    let mut stdout = std::io::stdout();
    let last = session.wait(|s| {
        if !s.output.is_empty() {
            output.extend_from_slice(&s.output);
            if echo {
                let _ = match &bar {
                    Some(b) => b.suspend(|| stdout.write_all(&s.output)),
                    None => stdout.write_all(&s.output),
                };
                let _ = stdout.flush();
            }
        }
        if let Some(b) = &bar {
            b.set_position(s.records);
            b.set_message(work_text(mode, s));
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let last = last?;
    let outcome = match &last.state {
        Some(vm_control_api::SessionState::Finished(o)) => o.clone(),
        _ => bail!("the replay controller stopped answering before the end"),
    };
    Ok((outcome, last, output))
}

/// The divergence report, for people (of an exact-mode log).
pub fn report(d: &DivergenceReport) -> String {
    report_in(d, CounterMode::Exact)
}

/// The divergence report of a log timed in `mode`: the timepoint's count is
/// retired branches, or the exit clock in exit-synchronous logs.
pub fn report_in(d: &DivergenceReport, mode: CounterMode) -> String {
    let mut s = format!("divergence at record {}: {}\n", d.record, d.what);
    if let Some(t) = &d.at {
        let count = match mode {
            CounterMode::Exact => "branches",
            CounterMode::ExitSynchronous => "clocked exits",
        };
        s += &format!(
            "  replay at: vcpu {} {count} {} rip {:#x} rcx {:#x}\n",
            t.vcpu, t.branches, t.rip, t.rcx
        );
    }
    match (&d.expected_regs, &d.actual_regs) {
        (Some(e), Some(a)) => {
            s += "  register     recorded            replayed\n";
            let rows = [
                ("rax", e.rax, a.rax),
                ("rbx", e.rbx, a.rbx),
                ("rcx", e.rcx, a.rcx),
                ("rdx", e.rdx, a.rdx),
                ("rsi", e.rsi, a.rsi),
                ("rdi", e.rdi, a.rdi),
                ("rsp", e.rsp, a.rsp),
                ("rbp", e.rbp, a.rbp),
                ("r8", e.r8, a.r8),
                ("r9", e.r9, a.r9),
                ("r10", e.r10, a.r10),
                ("r11", e.r11, a.r11),
                ("r12", e.r12, a.r12),
                ("r13", e.r13, a.r13),
                ("r14", e.r14, a.r14),
                ("r15", e.r15, a.r15),
                ("rip", e.rip, a.rip),
                ("rflags", e.rflags, a.rflags),
            ];
            for (n, x, y) in rows {
                let mark = if x != y { "  <-" } else { "" };
                s += &format!("  {n:<8} {x:#018x}  {y:#018x}{mark}\n");
            }
        }
        (None, Some(a)) => {
            s += &format!(
                "  replayed registers: rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rsp {:#x} rip {:#x} rflags {:#x}\n",
                a.rax, a.rbx, a.rcx, a.rdx, a.rsi, a.rdi, a.rsp, a.rip, a.rflags
            );
            s += "  (the recording's registers are kept at digest records only)\n";
        }
        _ => {}
    }
    if let Some((page, e, a)) = d.page {
        s += &format!(
            "  first differing page: {page:#x} (guest-physical {:#x}), page hash recorded {e:#018x}, replayed {a:#018x}\n",
            page * 4096
        );
    }
    s
}

/// Run `motion replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let r = replay(&args, !args.quiet, true)?;
    if !matches!(r.outcome, Outcome::Refused(_)) {
        eprintln!(
            "motion replay: on {}; the log: {}",
            args.backend.name(),
            crate::cmd::record::mode_text(&r.machine)
        );
    }
    let digest = r
        .status
        .last_digest
        .map(|(i, h)| format!("{} (record {i})", hex(&h)))
        .unwrap_or_else(|| "none".into());
    let digest_hex = r.status.last_digest.map(|(_, h)| hex(&h));
    let (code, verified) = match &r.outcome {
        Outcome::Verified { end } => {
            println!(
                "replay verified: {} records, {}, digest {digest}; {} state checks, {} digests, {} landings, end {}, {:.3} s",
                r.status.records,
                work_text(r.machine.counter_mode, &r.status),
                r.status.checks,
                r.status.digests,
                r.status.landings,
                crate::cmd::record::end_text(end),
                r.elapsed.as_secs_f64()
            );
            (ExitCode::SUCCESS, true)
        }
        Outcome::Truncated { records } => {
            println!(
                "replay stopped: the log ends after {records} records without an end record (a recording cut short); all {records} were replayed and matched ({} instructions, last digest {digest})",
                r.status.instructions
            );
            (ExitCode::from(EXIT_TRUNCATED), false)
        }
        Outcome::Diverged(d) => {
            print!("replay DIVERGED: {}", report_in(d, r.machine.counter_mode));
            (ExitCode::from(EXIT_DIVERGED), false)
        }
        Outcome::Refused(why) => {
            println!("replay refused: {why}");
            (ExitCode::from(EXIT_REFUSED), false)
        }
        Outcome::Failed(why) => {
            eprintln!("replay failed: {why}");
            if let Some(hint) = crate::cmd::run::kvm_failure_hint(why) {
                eprintln!("motion replay: {hint}");
            }
            (ExitCode::FAILURE, false)
        }
        Outcome::Recorded { .. } => {
            eprintln!("replay failed: the controller answered like a recorder");
            (ExitCode::FAILURE, false)
        }
    };
    if args.json {
        let mut j = serde_json::json!({
            "verified": verified,
            "records": r.status.records,
            "log_records": r.total,
            "instructions": r.status.instructions,
            "exits": r.status.exits,
            "backend": args.backend.name(),
            "recorded_on": r.machine.backend,
            "counter_mode": motion_records::counter_mode_name(r.machine.counter_mode),
            "digest": digest_hex,
            "checks": r.status.checks,
            "digests": r.status.digests,
            "landings": r.status.landings,
            "seconds": r.elapsed.as_secs_f64(),
        });
        match &r.outcome {
            Outcome::Diverged(d) => {
                j["divergence_record"] = d.record.into();
                j["divergence"] = d.what.clone().into();
                if let Some((page, _, _)) = d.page {
                    j["divergence_page"] = page.into();
                }
            }
            Outcome::Truncated { records } => {
                j["truncated"] = true.into();
                j["records"] = (*records).into();
            }
            Outcome::Refused(why) => j["refused"] = why.clone().into(),
            Outcome::Failed(why) => j["error"] = why.clone().into(),
            _ => {}
        }
        println!("{j}");
    }
    Ok(code)
}
