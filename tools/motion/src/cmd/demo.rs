//! `motion demo`: record the bundled `timer` guest, replay the recording,
//! and show both serial outputs side by side with the verdict.
//!
//! `timer` schedules three ring-3 tasks by PIT ticks delivered at host-clock
//! moments, so every live run prints a different trace; the replay must
//! print exactly the recorded one.

use std::process::ExitCode;

use anyhow::Context;
use motion_records::hex;
use vm_control_api::Outcome;

use crate::cmd::record::{RecordArgs, RecordRun, bytes, record};
use crate::cmd::replay::{ReplayArgs, replay, report};
use crate::cmd::run::Backend;

/// Arguments of `motion demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The bundled guest to record and replay.
    #[arg(long, default_value = "timer")]
    pub guest: String,
    /// Keep the log here instead of in a temporary directory.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// One more live run of `guest` in this process, its serial output captured.
fn live_output(guest: &str) -> anyhow::Result<Vec<u8>> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let elf = guest_images::bytes(guest).context("bundled guest")?;
    let machine = vm_monitor::Machine::new(elf, &vm_monitor::MachineConfig::default())?;
    let mut vcpu = vcpu_soft::SoftVcpu::new(machine.memory().clone());
    let controls = vcpu::Vcpu::default_controls(&vcpu);
    machine.reset_vcpu(&mut vcpu, controls)?;
    let out = Capture::default();
    let mut env = vm_monitor::LiveEnvironment::new(
        machine.memory().clone(),
        vm_monitor::LiveConfig {
            serial_out: Box::new(out.clone()),
            input: None,
            disk: None,
        },
    );
    machine.run(&mut vcpu, &mut env, &vm_monitor::RunLimits::default())?;
    let bytes = out.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(bytes)
}

/// The line of `out` that holds `key`, if any.
fn line_with<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find(|l| l.contains(key)).map(str::trim)
}

fn indent(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| format!("  | {l}\n"))
        .collect()
}

/// Run `motion demo`.
pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir().context("a temporary directory")?;
    let log = match &a.keep {
        Some(p) => p.clone(),
        None => tmp.path().join(format!("{}.motionlog", a.guest)),
    };
    println!(
        "== recording the `{}` guest into {} (monitor and log store in sandboxed processes)",
        a.guest,
        log.display()
    );
    let rargs = RecordArgs {
        guest: a.guest.clone(),
        out: log.clone(),
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
    let rec = record(&RecordRun {
        args: &rargs,
        echo: false,
        progress: true,
    })?;
    print!("{}", indent(&rec.output));
    println!(
        "recorded: {} records, {} guest instructions, log {} in {:.3} s",
        rec.status.records,
        rec.status.instructions,
        bytes(rec.log_bytes),
        rec.elapsed.as_secs_f64()
    );
    if !matches!(rec.outcome, Outcome::Recorded { .. }) {
        anyhow::bail!("the recording did not complete: {:?}", rec.outcome);
    }
    println!();
    println!(
        "== replaying {} (instruction-exact, every input from the log)",
        log.display()
    );
    let pargs = ReplayArgs {
        log: log.clone(),
        guest: None,
        disk: None,
        pmi_skid: 0,
        backend: Backend::Soft,
        system: None,
        events: false,
        quiet: true,
        json: false,
    };
    let rep = replay(&pargs, false, true)?;
    print!("{}", indent(&rep.output));
    println!();
    let same = rep.output == rec.output;
    println!(
        "serial output: {}",
        if same {
            "identical to the recording"
        } else {
            "DIFFERENT from the recording"
        }
    );
    // Another live run, to show the recording captured something that varies.
    let again = live_output(&a.guest)?;
    let (rec_s, again_s) = (
        String::from_utf8_lossy(&rec.output).into_owned(),
        String::from_utf8_lossy(&again).into_owned(),
    );
    if again != rec.output {
        let key = "checksum";
        match (line_with(&rec_s, key), line_with(&again_s, key)) {
            (Some(x), Some(y)) => println!(
                "another live run of the same guest printed `{y}` where the recording has `{x}`: \
                 the timing the recording captured is not reproducible live, only by replay"
            ),
            _ => println!(
                "another live run of the same guest printed something else: the recording captured what varies"
            ),
        }
    } else {
        println!(
            "another live run printed the same output (this guest's output does not depend on timing)"
        );
    }
    let digest = rep.status.last_digest.map(|(_, h)| hex(&h));
    let ok = match &rep.outcome {
        Outcome::Verified { .. } if same => {
            println!(
                "replay verified: {} records, {} instructions, digest {}",
                rep.status.records,
                rep.status.instructions,
                digest.clone().unwrap_or_else(|| "none".into())
            );
            true
        }
        Outcome::Diverged(d) => {
            print!("replay DIVERGED: {}", report(d));
            false
        }
        other => {
            println!("replay did not verify: {other:?}");
            false
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "verified": ok,
                "records": rep.status.records,
                "instructions": rep.status.instructions,
                "digest": digest,
                "output_identical": same,
            })
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
