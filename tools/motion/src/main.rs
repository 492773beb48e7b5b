//! `motion`: the CAS Motion command line.
//!
//! Each subcommand group lives in its own module under `cmd/`; `main` only
//! parses and dispatches. Commands exit non-zero with a message naming what
//! was wrong; `--json` output ends with one JSON object on its last line.

mod cmd;
mod components;
mod stop_signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// CAS Motion: record a virtual machine's execution and replay it instruction-exactly.
#[derive(Parser)]
#[command(name = "motion", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// Boot a guest live: serial on stdout, exit with its isa-debug-exit status.
    Run(cmd::run::RunArgs),
    /// Record a guest into a log (monitor and log store in sandboxed processes).
    Record(cmd::record::RecordArgs),
    /// Replay a log instruction-exactly, checking every record; exits non-zero on divergence.
    Replay(cmd::replay::ReplayArgs),
    /// Record and replay the bundled `timer` guest and show both outputs and the verdict.
    Demo(cmd::demo::DemoArgs),
    /// Benchmarks, each printed beside its baseline.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
    /// Look into a recording's log.
    #[command(subcommand)]
    Log(cmd::log::LogCmd),
    /// The system description (system.toml).
    #[command(subcommand)]
    System(cmd::system::SystemCmd),
    /// Report what this host offers (KVM, PMU, single-step, QEMU) and which backends work.
    Doctor {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// The components this binary can run as domains of `system.toml`.
pub fn registry() -> motion_runtime::Registry {
    let mut r = motion_runtime::Registry::new();
    r.register("log-store", log_store::service::component_entry)
        .register("vm-monitor", vm_monitor::component::component_entry)
        .register("replay-controller", replay_controller::component_entry)
        .register("pmu-driver", components::pmu_driver_entry);
    r
}

fn main() -> ExitCode {
    // A domain process is this executable started again: it runs its
    // components and exits here, before anything else happens.
    if let Some(code) = motion_runtime::run_domain_if_requested(&registry()) {
        return code;
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: nothing else runs yet (no thread has been started), so
        // nobody reads the environment concurrently. Domain processes inherit
        // it: their routine `info` logs stay quiet unless RUST_LOG asks.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => cmd::version::run(),
        Command::Run(args) => cmd::run::run(args),
        Command::Record(args) => cmd::record::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Log(c) => cmd::log::run(c),
        Command::System(c) => cmd::system::run(c),
        Command::Doctor { json } => cmd::doctor::run(json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("motion: {e:#}");
            ExitCode::FAILURE
        }
    }
}
