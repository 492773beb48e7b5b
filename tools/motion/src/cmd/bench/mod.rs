//! `motion bench …`: benchmarks that print each figure beside its baseline
//! from the same run.

pub mod cpu;
pub mod tcg;

use std::process::ExitCode;

use clap::Subcommand;

/// Benchmark subcommands.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Soft vCPU speed (loop-heavy and memory-heavy MIPS) beside native ring-3 execution under KVM.
    Cpu(cpu::CpuArgs),
}

/// Run a benchmark subcommand.
pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Cpu(a) => cpu::run(a),
    }
}
