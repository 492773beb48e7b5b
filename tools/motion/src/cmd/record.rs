//! `motion record`: record a guest into a log, with the monitor and the log
//! store in their own sandboxed processes as `system.toml` declares.
//!
//! This process is the supervisor domain and the front end: it starts the
//! `log` and `vmm` domains, asks the vm-monitor over `VmControl` (channel
//! `control-vm`) to record, forwards serial input, and polls for progress
//! and the guest's serial output until the recording has ended and the log
//! is sealed.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use motion_ipc::Client;
use motion_records::session::DurabilityRequest;
use motion_runtime::{DomainOutcome, Runtime, RuntimeConfig, SupervisorEvent, SystemGraph};
use vm_control_api::{Outcome, RecordSetup, Reply, Request, SessionState, Status, VmControl};

use crate::cmd::run::{Backend, CounterModeArg};
use crate::stop_signals::{self, StopSignals};
use motion_records::{CounterMode, MachineInfo, counter_mode_name};

/// The repository's `system.toml`, built in: the graph every session starts.
pub const SYSTEM_TOML: &str = include_str!("../../../../system.toml");

/// How often the front end asks for progress.
const POLL: Duration = Duration::from_millis(50);

/// Arguments of `motion record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// A bundled guest (hello, timer, disk, entropy, compute, serial-echo;
    /// ring-3 variants for KVM hosts that emulate ring 0: hello-r3, disk-r3,
    /// serial-echo-r3, compute-r3) or
    /// the path of a PVH ELF kernel.
    #[arg(long)]
    pub guest: String,
    /// The log to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Disk image for the virtio-blk device (guest writes stay in memory).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Serial input: a file, or `-` for standard input.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// vCPU backend. kvm records in exit-synchronous mode (no precise
    /// counters there); such a log replays on soft and on kvm.
    #[arg(long, value_enum, default_value = "soft")]
    pub backend: Backend,
    /// How asynchronous events are timed (default: exact on soft,
    /// exit-synchronous on kvm). `exit-synchronous` on soft makes a log
    /// that also replays on kvm.
    #[arg(long, value_enum)]
    pub counter_mode: Option<CounterModeArg>,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    pub ram_mib: u64,
    /// A digest (registers, memory hash) every this many inputs.
    #[arg(long, default_value_t = vm_monitor::record::DEFAULT_DIGEST_EVERY)]
    pub digest_every: u64,
    /// fsync the log at most this many milliseconds after a record (0: every batch).
    #[arg(long, default_value_t = 10)]
    pub sync_ms: u32,
    /// Stop the recording after this many seconds (the log then ends `stopped`).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// A system description other than the built-in one.
    #[arg(long)]
    pub system: Option<PathBuf>,
    /// Print the supervisor's events (domains started, ended) on stderr.
    #[arg(long)]
    pub events: bool,
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// A running session: the runtime and the front end's channel.
pub struct Session {
    /// The runtime (dropping it stops every domain).
    pub runtime: Runtime,
    /// The front end's `VmControl` channel.
    pub control: Client<VmControl>,
    events: motion_runtime::Events,
    show_events: bool,
    /// Why a domain died, once one did.
    pub died: Option<String>,
}

impl Session {
    /// Start the domains of the system description that `channel` needs
    /// (the domains named in `domains` and the supervisor), with `resources`.
    pub fn start(
        system: Option<&Path>,
        domains: &[&str],
        resources: Vec<(&str, PathBuf)>,
        channel: &str,
        show_events: bool,
    ) -> anyhow::Result<Session> {
        let sys = match system {
            Some(p) => motion_system::load(p, motion_ipc::INTERFACE_NAMES)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            None => motion_system::parse(
                Path::new("system.toml (built in)"),
                SYSTEM_TOML,
                motion_ipc::INTERFACE_NAMES,
            )
            .map_err(|d| {
                anyhow::anyhow!(
                    "{}",
                    d.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?,
        };
        let mut graph = SystemGraph::from_system(&sys);
        let keep = |d: &str| domains.contains(&d) || graph.supervisor.as_deref() == Some(d);
        graph.domains.retain(|d| keep(&d.name));
        let placed: Vec<String> = graph
            .domains
            .iter()
            .flat_map(|d| d.components.clone())
            .collect();
        graph
            .channels
            .retain(|c| placed.contains(&c.client) && placed.contains(&c.server));
        let mut runtime = Runtime::start(
            &graph,
            &crate::registry(),
            RuntimeConfig {
                resources: resources
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                ..RuntimeConfig::default()
            },
        )
        .context("starting the component runtime")?;
        let events = runtime.events();
        let host = graph
            .supervisor
            .clone()
            .context("the system description has no supervisor domain")?;
        let component = graph
            .domain_of("supervisor")
            .map(|_| "supervisor".to_string())
            .or_else(|| {
                graph
                    .domains
                    .iter()
                    .find(|d| d.name == host)
                    .and_then(|d| d.components.first().cloned())
            })
            .context("no component in the supervisor domain")?;
        let mut ctx = runtime
            .take_host_context(&component)
            .context("the supervisor's context")?;
        let control = ctx
            .client_on::<VmControl>(channel)
            .with_context(|| format!("channel `{channel}` of the system description"))?;
        Ok(Session {
            runtime,
            control,
            events,
            show_events,
            died: None,
        })
    }

    /// Note supervisor events: a domain that ended with a failure.
    pub fn watch(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            if self.show_events {
                eprintln!("motion: {ev}");
            }
            if let SupervisorEvent::Exited {
                domain, outcome, ..
            } = &ev
            {
                if outcome.is_failure() && self.died.is_none() {
                    self.died = Some(match outcome {
                        DomainOutcome::Killed { signal } => format!(
                            "the `{domain}` domain was killed by {}",
                            motion_runtime::signal_name(*signal)
                        ),
                        other => format!("the `{domain}` domain failed: {other:?}"),
                    });
                }
            }
        }
    }

    /// One request on the front end's channel.
    pub fn call(&mut self, req: &Request) -> anyhow::Result<Reply> {
        let r = self.control.call(req);
        self.watch();
        match r {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
            Err(e) => match &self.died {
                Some(d) => Err(anyhow::anyhow!("{d}")),
                None => Err(anyhow::anyhow!("{e}")),
            },
        }
    }

    /// Poll `Progress`, handing each status to `each`, until the session
    /// has finished; returns the last status.
    pub fn wait(&mut self, mut each: impl FnMut(&Status)) -> anyhow::Result<Status> {
        loop {
            let status = match self.call(&Request::Progress)? {
                Reply::Status(s) => *s,
                other => bail!("unexpected answer {other:?} to Progress"),
            };
            each(&status);
            if matches!(status.state, Some(SessionState::Finished(_))) {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stop every domain.
    pub fn shutdown(mut self) {
        self.watch();
        let _ = self.runtime.shutdown(Duration::from_secs(5));
    }
}

/// The ELF path for `--guest`: a bundled guest's file, or the path given.
pub fn guest_path(guest: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = guest_images::path(guest) {
        if p.is_file() {
            return Ok(p);
        }
        // The build's copy is gone (a binary moved elsewhere): write the
        // embedded image next to the log instead.
        let bytes = guest_images::bytes(guest).context("bundled guest")?;
        let p = std::env::temp_dir().join(format!("motion-guest-{guest}.elf"));
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        return Ok(p);
    }
    let path = PathBuf::from(guest);
    if !path.is_file() {
        bail!(
            "unknown guest {guest:?}: not a bundled guest ({}) and no such file",
            guest_images::NAMES.join(", ")
        );
    }
    Ok(path)
}

/// A log path as (directory, file name), the directory made absolute.
pub fn split_log(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file name", path.display()))?
        .to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("directory {}", dir.display()))?;
    Ok((dir, name))
}

/// Human size.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 10 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A progress line on stderr, only when stderr is a terminal.
pub fn progress_bar(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} records {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// What a recording produced.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The log header's machine description (backend, counter mode).
    pub machine: MachineInfo,
    /// How it ended.
    pub outcome: Outcome,
    /// The final status.
    pub status: Status,
    /// The log's size.
    pub log_bytes: u64,
    /// Wall time from the request to the sealed log.
    pub elapsed: Duration,
    /// The serial output.
    pub output: Vec<u8>,
    /// Why a domain died, if one did.
    pub died: Option<String>,
    /// The signal that asked this recording to stop, if one did.
    pub stopped_by: Option<i32>,
}

/// Options of [`record`] beyond the CLI's.
pub struct RecordRun<'a> {
    /// The arguments.
    pub args: &'a RecordArgs,
    /// Print the guest's serial output on stdout as it comes.
    pub echo: bool,
    /// Show progress on stderr (when it is a terminal).
    pub progress: bool,
}

/// Record per `args`; the log is sealed when this returns `Ok` with
/// [`Outcome::Recorded`].
pub fn record(run: &RecordRun<'_>) -> anyhow::Result<Recorded> {
    record_until(run, None)
}

/// [`record`], asking the monitor to stop (as `--timeout` does) once
/// `signals` has seen SIGINT or SIGTERM.
pub fn record_until(
    run: &RecordRun<'_>,
    signals: Option<&StopSignals>,
) -> anyhow::Result<Recorded> {
    let args = run.args;
    if args.backend == Backend::Kvm && args.counter_mode == Some(CounterModeArg::Exact) {
        bail!(
            "--counter-mode exact is not available on the kvm backend: it has no precise guest \
             branch counter here (see `motion doctor`); kvm records exit-synchronous"
        );
    }
    if args.out.exists() {
        bail!(
            "{} exists: a log is never overwritten; choose another --out",
            args.out.display()
        );
    }
    let (dir, name) = split_log(&args.out)?;
    let guest = guest_path(&args.guest)?;
    let mut resources = vec![("log-dir", dir.clone()), ("guest-image", guest)];
    if let Some(d) = &args.disk {
        let d = d
            .canonicalize()
            .with_context(|| format!("disk image {}", d.display()))?;
        resources.push(("disk-image", d));
    }
    let input: Option<Box<dyn Read + Send>> = match &args.input {
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdin())),
        Some(p) => {
            Some(Box::new(std::fs::File::open(p).with_context(|| {
                format!("cannot open serial input {}", p.display())
            })?))
        }
        None => None,
    };
    let mut session = Session::start(
        args.system.as_deref(),
        &["log", "vmm"],
        resources,
        "control-vm",
        args.events,
    )?;
    let setup = RecordSetup {
        log: name,
        guest_name: args.guest.clone(),
        ram: args.ram_mib.saturating_mul(1 << 20),
        backend: args.backend.name().into(),
        counter_mode: args.counter_mode.map(Into::into),
        digest_every: args.digest_every.max(1),
        durability: if args.sync_ms == 0 {
            DurabilityRequest::EveryBatch
        } else {
            DurabilityRequest::IntervalMs(args.sync_ms)
        },
        serial_input: input.is_some(),
        time_limit_ms: args.timeout.map(|s| (s * 1000.0) as u64),
    };
    let start = Instant::now();
    let result = drive(&mut session, run, setup, input, &args.out, signals);
    if let (Some(s), Ok((Outcome::Recorded { .. }, ..))) = (signals, &result) {
        s.log_sealed();
    }
    let stopped_by = signals.and_then(StopSignals::requested);
    let died = session.died.clone();
    session.shutdown();
    let (outcome, status, output, machine) = match result {
        Ok(x) => x,
        Err(e) => {
            let held = log_store::LogReader::open(&args.out)
                .map(|r| r.record_count())
                .ok();
            return Err(match held {
                Some(n) => e.context(format!(
                    "the recording did not finish; {} holds {n} records (replay it to check the prefix)",
                    args.out.display()
                )),
                None => e,
            });
        }
    };
    let log_bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    Ok(Recorded {
        machine,
        outcome,
        status,
        log_bytes,
        elapsed: start.elapsed(),
        output,
        died,
        stopped_by,
    })
}

fn drive(
    session: &mut Session,
    run: &RecordRun<'_>,
    setup: RecordSetup,
    input: Option<Box<dyn Read + Send>>,
    out: &Path,
    signals: Option<&StopSignals>,
) -> anyhow::Result<(Outcome, Status, Vec<u8>, MachineInfo)> {
    if let Some(sig) = signals.and_then(StopSignals::requested) {
        bail!(
            "{} before the recording started: nothing recorded",
            stop_signals::name(sig)
        );
    }
    let machine = match session.call(&Request::Record(Box::new(setup)))? {
        Reply::Recording(m) => *m,
        other => bail!("unexpected answer {other:?} to Record"),
    };
    if run.progress {
        eprintln!("motion record: {}", mode_text(&machine));
    }
    let (tx, rx) = crossbeam_channel::unbounded::<Option<Vec<u8>>>();
    if let Some(mut r) = input {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let bar = if run.progress {
        progress_bar(None)
    } else {
        None
    };
    let mut output = Vec::new();
    let mut stdout = std::io::stdout();
    let mut last_durable = 0;
    let mut stop_sent = false;
    let result = loop {
        if !stop_sent && signals.and_then(StopSignals::requested).is_some() {
            // The same stop as `--timeout`: the monitor ends the run at the
            // guest's next exit and seals the log; keep polling until then.
            stop_sent = true;
            session.call(&Request::Stop)?;
        }
        for chunk in rx.try_iter() {
            let (bytes, end) = match chunk {
                Some(b) => (b, false),
                None => (Vec::new(), true),
            };
            session.call(&Request::SerialInput { bytes, end })?;
        }
        let status = match session.call(&Request::Progress) {
            Ok(Reply::Status(s)) => *s,
            Ok(other) => break Err(anyhow::anyhow!("unexpected answer {other:?} to Progress")),
            Err(e) => {
                break Err(e.context(format!(
                    "the last record acknowledged as durable was number {last_durable}"
                )));
            }
        };
        last_durable = status.durable;
        if !status.output.is_empty() {
            output.extend_from_slice(&status.output);
            if run.echo {
                let _ = match &bar {
                    Some(b) => b.suspend(|| stdout.write_all(&status.output)),
                    None => stdout.write_all(&status.output),
                };
                let _ = stdout.flush();
            }
        }
        if let Some(b) = &bar {
            let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            b.set_message(format!(
                "recording ({}, {}): {} records ({} durable), {}, log {}",
                machine.backend,
                counter_mode_name(machine.counter_mode),
                status.records,
                status.durable,
                work_text(machine.counter_mode, &status),
                bytes(size)
            ));
        }
        if let Some(SessionState::Finished(o)) = &status.state {
            break Ok((o.clone(), status));
        }
        std::thread::sleep(POLL);
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (outcome, status) = result?;
    Ok((outcome, status, output, machine))
}

/// The backend, counter mode and untrapped instructions of a log, for people.
pub fn mode_text(m: &MachineInfo) -> String {
    let mut s = format!(
        "backend {}, counter mode {}",
        m.backend,
        counter_mode_name(m.counter_mode)
    );
    if m.counter_mode == CounterMode::ExitSynchronous {
        s += " (asynchronous events delivered only at port I/O, MMIO and HLT exits, timed by their count)";
    }
    if !m.untrapped.is_empty() {
        let names: Vec<&str> = m.untrapped.iter().map(|u| u.name()).collect();
        s += &format!(
            "; not trapped: {} (values not recorded: a guest that executes them will not replay)",
            names.join(", ")
        );
    }
    s
}

/// The guest work a status reports: instructions where counted exactly,
/// the exit clock in exit-synchronous sessions.
pub fn work_text(mode: CounterMode, s: &Status) -> String {
    match mode {
        CounterMode::Exact => format!("{} guest instructions", s.instructions),
        CounterMode::ExitSynchronous => format!("{} clocked exits", s.exits),
    }
}

/// An end status for people and JSON: `shutdown (status N)`, `halted`,
/// `stopped`, `error: …`.
pub fn end_text(end: &motion_records::EndStatus) -> String {
    use motion_records::EndStatus;
    match end {
        EndStatus::GuestShutdown { code } => format!("shutdown (status {code})"),
        EndStatus::GuestHalted => "halted".into(),
        EndStatus::Stopped => "stopped".into(),
        EndStatus::Error { message } => format!("error: {message}"),
    }
}

/// Where a sealed log's `end` record says the guest stopped, for people.
fn end_point(log: &Path) -> Option<String> {
    let reader = log_store::LogReader::open(log).ok()?;
    let last = reader.record_count().checked_sub(1)?;
    match reader.record(last).ok()? {
        motion_records::Record::End(e) => Some(match e.at {
            Some(t) => format!(
                "record {last} at rip {:#x} (vCPU {}, {} branches, rcx {:#x})",
                t.rip, t.vcpu, t.branches, t.rcx
            ),
            None => format!("record {last}"),
        }),
        _ => None,
    }
}

/// Run `motion record`.
///
/// Exit status: 0 recorded (the guest ended, or `--timeout` stopped it);
/// 1 failed; 3 aborted by a second SIGINT/SIGTERM (the log is not sealed;
/// its acknowledged prefix replays); 130 (SIGINT) or 143 (SIGTERM) when a
/// signal stopped the recording and the log was sealed.
pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let signals =
        StopSignals::watch(args.out.clone()).context("cannot watch for SIGINT and SIGTERM")?;
    let r = record_until(
        &RecordRun {
            args: &args,
            echo: true,
            progress: true,
        },
        Some(&signals),
    )
    .map_err(|e| match signals.requested() {
        Some(sig) => e.context(format!("stopping on {}", stop_signals::name(sig))),
        None => e,
    })?;
    let (ok, end) = match &r.outcome {
        Outcome::Recorded { end } => (true, end_text(end)),
        other => (false, format!("{other:?}")),
    };
    let summary = format!(
        "recorded {} records ({} durable), {}, {} digests, log {} ({}), {:.3} s, end: {end}",
        r.status.records,
        r.status.durable,
        work_text(r.machine.counter_mode, &r.status),
        r.status.digests,
        args.out.display(),
        bytes(r.log_bytes),
        r.elapsed.as_secs_f64(),
    );
    eprintln!("motion record: {summary}");
    if let Some(hint) = crate::cmd::run::kvm_failure_hint(&end) {
        eprintln!("motion record: {hint}");
    }
    if let Some(d) = &r.died {
        eprintln!("motion record: {d}");
    }
    if let (true, Some(sig)) = (ok, r.stopped_by) {
        let at = end_point(&args.out).unwrap_or_else(|| "its last record".into());
        eprintln!(
            "motion record: stopped by {}: the log is sealed, ending at {at}; \
             `motion replay {}` replays it to that point",
            stop_signals::name(sig),
            args.out.display()
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "recorded": ok,
                "log": args.out.display().to_string(),
                "records": r.status.records,
                "durable": r.status.durable,
                "instructions": r.status.instructions,
                "exits": r.status.exits,
                "backend": r.machine.backend,
                "counter_mode": counter_mode_name(r.machine.counter_mode),
                "untrapped": r.machine.untrapped.iter().map(|u| u.name()).collect::<Vec<_>>(),
                "digests": r.status.digests,
                "checks": r.status.checks,
                "log_bytes": r.log_bytes,
                "seconds": r.elapsed.as_secs_f64(),
                "end": end,
                "stopped_by": r.stopped_by.map(stop_signals::name),
            })
        );
    }
    Ok(match (ok, r.stopped_by) {
        (true, Some(sig)) => ExitCode::from(stop_signals::stopped_status(sig)),
        (true, None) => ExitCode::SUCCESS,
        (false, _) => ExitCode::FAILURE,
    })
}
