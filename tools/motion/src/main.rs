//! `motion`: the CAS Motion command line.
//!
//! Each subcommand group lives in its own module under `cmd/`; `main` only
//! parses and dispatches. Commands exit non-zero with a message naming what
//! was wrong; `--json` output ends with one JSON object on its last line.

mod cmd;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => cmd::version::run(),
        Command::Run(args) => cmd::run::run(args),
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
