//! `motion bench …`: benchmarks that print each figure beside its baseline
//! from the same run.

pub mod backends;
pub mod cpu;
pub mod log;
pub mod record;
pub mod tcg;

use std::process::ExitCode;

use clap::Subcommand;

/// `motion bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Soft vCPU speed (loop-heavy and memory-heavy MIPS) beside native ring-3 execution under KVM and QEMU TCG.
    Cpu(cpu::CpuArgs),
    /// Log-store append throughput and bytes per record.
    Log(log::LogBenchArgs),
    /// A guest live, recorded and replayed: wall times, ratios, log size.
    Record(record::RecordBenchArgs),
    /// The same guests on soft and on kvm, live and recorded, side by side.
    Backends(backends::BackendsBenchArgs),
}

/// Run a `motion bench` subcommand.
pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Cpu(a) => cpu::run(a),
        BenchCmd::Log(args) => log::run(args),
        BenchCmd::Record(args) => record::run(args),
        BenchCmd::Backends(args) => backends::run(args),
    }
}
