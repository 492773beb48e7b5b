//! `motion bench record [--json]`: one guest (default `timer`) run live,
//! recorded and replayed in the same run; wall times side by side, the
//! ratios record/live and replay/record, and the log's size per record and
//! per million guest instructions.
//!
//! * live: the machine in this process on the live environment, as `motion
//!   run` does (the baseline);
//! * record: `motion record`'s path — the vm-monitor and the log store in
//!   their sandboxed domain processes, every input logged, state checks and
//!   digests, the log sealed; timed inside the monitor from the machine's
//!   start to the sealed log (process start-up is printed separately);
//! * replay: `motion replay`'s path, timed from the machine's start to the
//!   verdict.
//!
//! Each is run `--runs` times; the medians are reported.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vm_control_api::Outcome;
use vm_monitor::{LiveConfig, LiveEnvironment, Machine, MachineConfig, RunLimits};

use crate::cmd::record::{RecordArgs, RecordRun, record};
use crate::cmd::replay::{ReplayArgs, replay};
use crate::cmd::run::Backend;

/// One live/record/replay round of a guest.
struct Round {
    live: f64,
    record: f64,
    replay: f64,
    startup: f64,
    live_insns: u64,
    records: u64,
    log_bytes: u64,
    insns: u64,
}

fn round(guest: &str, dir: &std::path::Path, i: usize) -> anyhow::Result<Round> {
    let (t, live_insns) = live(guest)?;
    let out = dir.join(format!("bench-{guest}-{i}.motionlog"));
    let args = RecordArgs {
        guest: guest.to_string(),
        out: out.clone(),
        disk: None,
        input: None,
        backend: Backend::Soft,
        counter_mode: None,
        ram_mib: 128,
        digest_every: vm_monitor::record::DEFAULT_DIGEST_EVERY,
        sync_ms: 10,
        timeout: None,
        system: None,
        events: false,
        json: false,
    };
    let t0 = Instant::now();
    let r = record(&RecordRun {
        args: &args,
        echo: false,
        progress: false,
    })?;
    let total = t0.elapsed().as_secs_f64();
    if !matches!(r.outcome, Outcome::Recorded { .. }) {
        bail!("recording {i} of {guest} did not complete: {:?}", r.outcome);
    }
    let session = r.status.session_ns as f64 / 1e9;
    let p = replay(
        &ReplayArgs {
            log: out,
            guest: None,
            disk: None,
            pmi_skid: 0,
            backend: Backend::Soft,
            system: None,
            events: false,
            quiet: true,
            json: false,
        },
        false,
        false,
    )?;
    if !matches!(p.outcome, Outcome::Verified { .. }) || p.output != r.output {
        bail!("replay {i} of {guest} did not verify: {:?}", p.outcome);
    }
    Ok(Round {
        live: t.as_secs_f64(),
        record: session,
        replay: p.status.session_ns as f64 / 1e9,
        startup: total - session,
        live_insns,
        records: r.status.records,
        log_bytes: r.log_bytes,
        insns: r.status.instructions,
    })
}

/// Arguments of `motion bench record`.
#[derive(Debug, clap::Args)]
pub struct RecordBenchArgs {
    /// The bundled guest.
    #[arg(long, default_value = "timer")]
    pub guest: String,
    /// Runs of each; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn live(guest: &str) -> anyhow::Result<(Duration, u64)> {
    let elf = guest_images::bytes(guest).context("bundled guest")?;
    let machine = Machine::new(elf, &MachineConfig::default())?;
    let mut vcpu = vcpu_soft::SoftVcpu::new(machine.memory().clone());
    let controls = vcpu::Vcpu::default_controls(&vcpu);
    machine.reset_vcpu(&mut vcpu, controls)?;
    let mut env = LiveEnvironment::new(
        machine.memory().clone(),
        LiveConfig {
            serial_out: Box::new(std::io::sink()),
            input: None,
            disk: None,
        },
    );
    let o = machine.run(&mut vcpu, &mut env, &RunLimits::default())?;
    Ok((o.elapsed, o.retired.map_or(0, |r| r.instructions)))
}

fn medians(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

/// Run the benchmark.
pub fn run(a: RecordBenchArgs) -> anyhow::Result<ExitCode> {
    if guest_images::bytes(&a.guest).is_none() {
        bail!("unknown bundled guest {:?}", a.guest);
    }
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let runs = a.runs.max(1);
    let mut main = Vec::new();
    let mut control = Vec::new();
    // Interleaved, so that load from elsewhere on the host hits all alike.
    for i in 0..runs {
        main.push(round(&a.guest, dir.path(), i)?);
        if a.guest != CONTROL {
            control.push(round(CONTROL, dir.path(), i)?);
        }
    }
    let (l, r, p) = (
        medians(&main, |x| x.live),
        medians(&main, |x| x.record),
        medians(&main, |x| x.replay),
    );
    let startup = medians(&main, |x| x.startup);
    let bpr = medians(&main, |x| x.log_bytes as f64 / x.records.max(1) as f64);
    let bpm = medians(&main, |x| {
        x.log_bytes as f64 / (x.insns.max(1) as f64 / 1e6)
    });
    let (li, ri) = (
        medians(&main, |x| x.live_insns as f64),
        medians(&main, |x| x.insns as f64),
    );
    let last = main.last().context("no run")?;
    println!("guest `{}`, {runs} runs each, medians:", a.guest);
    println!("  live     {l:8.3} s   (baseline: in-process, live devices, nothing logged)");
    println!(
        "  record   {r:8.3} s   record/live   {:.3}   (monitor and log store in sandboxed processes; +{startup:.3} s starting them)",
        r / l
    );
    println!(
        "  replay   {p:8.3} s   replay/record {:.3}   (every input from the log, events landed, checks compared)",
        p / r
    );
    println!(
        "  guest instructions: live {li:.0}, recorded {ri:.0} (the timer guest's work grows with how fast its tasks ran between ticks)"
    );
    println!(
        "  log      {} bytes for {} records and {} guest instructions (last run): {bpr:.1} bytes/record, {bpm:.1} bytes per million instructions",
        last.log_bytes, last.records, last.insns
    );
    let mut json = serde_json::json!({
        "guest": a.guest,
        "runs": runs,
        "live_s": l,
        "record_s": r,
        "replay_s": p,
        "startup_s": startup,
        "record_over_live": r / l,
        "replay_over_record": p / r,
        "log_bytes_per_record": bpr,
        "log_bytes_per_minsn": bpm,
        "live_instructions": li,
        "record_instructions": ri,
    });
    if !control.is_empty() {
        let (cl, cr, cp) = (
            medians(&control, |x| x.live),
            medians(&control, |x| x.record),
            medians(&control, |x| x.replay),
        );
        println!(
            "control: `{CONTROL}` (fixed work, {} instructions, no timer): live {cl:.3} s, record {cr:.3} s (record/live {:.3}), replay {cp:.3} s (replay/record {:.3})",
            control[0].insns,
            cr / cl,
            cp / cr
        );
        json["control_guest"] = CONTROL.into();
        json["control_record_over_live"] = (cr / cl).into();
        json["control_replay_over_record"] = (cp / cr).into();
    }
    if a.json {
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A guest with a fixed amount of work and no timer: its ratios show what
/// recording costs the guest's execution itself.
const CONTROL: &str = "compute";
