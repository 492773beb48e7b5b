//! `motion bench ...`: benchmarks that print each figure beside its baseline
//! from the same run.

use std::process::ExitCode;

use clap::Subcommand;

pub mod log;

/// `motion bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Log-store append throughput and bytes per record.
    Log(log::LogBenchArgs),
}

/// Run a `motion bench` subcommand.
pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Log(args) => log::run(args),
    }
}
