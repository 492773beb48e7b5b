//! `motion bench cpu [--json]`: MIPS of the soft vCPU on a loop-heavy and a
//! memory-heavy workload, and of the same loop run natively in ring 3 under
//! KVM, in one run, with the ratio.

use std::process::ExitCode;

use anyhow::Context;
use vcpu_soft::bench::{Workload, loop_workload, mem_workload, run_soft};

/// Arguments of `motion bench cpu`.
#[derive(clap::Args)]
pub struct CpuArgs {
    /// End with one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Loop iterations (six instructions each).
    #[arg(long, default_value_t = 50_000_000)]
    pub loop_iters: u32,
    /// Passes over the 32 KiB array of the memory workload.
    #[arg(long, default_value_t = 1000)]
    pub mem_passes: u32,
    /// Runs per workload; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn soft(w: &Workload, runs: usize) -> anyhow::Result<f64> {
    let mut m = Vec::new();
    for _ in 0..runs.max(1) {
        m.push(
            run_soft(w)
                .with_context(|| format!("soft vCPU, workload {}", w.name))?
                .mips(),
        );
    }
    Ok(median(m))
}

/// The same loop natively in ring 3 under KVM: Ok(MIPS) or Err(why not).
fn native(w: &Workload, runs: usize) -> Result<f64, String> {
    native_impl(w, runs)
}

/// Run the benchmark.
pub fn run(a: CpuArgs) -> anyhow::Result<ExitCode> {
    let lw = loop_workload(a.loop_iters);
    let mw = mem_workload(a.mem_passes);
    let soft_loop = soft(&lw, a.runs)?;
    println!(
        "soft vCPU   loop-heavy   {soft_loop:8.1} MIPS  ({} instructions)",
        lw.instructions
    );
    let soft_mem = soft(&mw, a.runs)?;
    println!(
        "soft vCPU   memory-heavy {soft_mem:8.1} MIPS  ({} instructions)",
        mw.instructions
    );
    let nat = native(&lw, a.runs);
    match &nat {
        Ok(n) => {
            println!("native KVM  loop-heavy   {n:8.1} MIPS  (same code, ring 3)");
            println!(
                "ratio       soft/native  {:8.4}  (native is {:.1}x faster)",
                soft_loop / n,
                n / soft_loop
            );
        }
        Err(why) => println!("native KVM  loop-heavy   unavailable: {why}"),
    }
    let tcg = crate::cmd::bench::tcg::tcg_mips(
        |n| {
            let w = loop_workload(n);
            (w.code, w.instructions)
        },
        a.loop_iters.saturating_mul(2),
        0x20_0000,
        0x20_0000,
    );
    match &tcg {
        Ok(q) => println!(
            "QEMU TCG    loop-heavy   {q:8.1} MIPS  (QEMU 7.2 JIT with -icount, same code; soft/QEMU {:.2})",
            soft_loop / q
        ),
        Err(why) => println!("QEMU TCG    loop-heavy   unavailable: {why}"),
    }
    let tcg_mem = crate::cmd::bench::tcg::tcg_mips(
        |n| {
            let w = mem_workload(n);
            (w.code, w.instructions)
        },
        a.mem_passes.saturating_mul(8).max(1),
        0x20_0000 + mw.data_offsets.0,
        0x20_0000 + mw.data_offsets.1,
    );
    match &tcg_mem {
        Ok(q) => println!(
            "QEMU TCG    memory-heavy {q:8.1} MIPS  (soft/QEMU {:.2})",
            soft_mem / q
        ),
        Err(why) => println!("QEMU TCG    memory-heavy unavailable: {why}"),
    }
    if a.json {
        let (native_v, reason) = match &nat {
            Ok(n) => (serde_json::json!(n), serde_json::Value::Null),
            Err(why) => (serde_json::Value::Null, serde_json::json!(why)),
        };
        let obj = serde_json::json!({
            "soft_mips_loop": soft_loop,
            "soft_mips_mem": soft_mem,
            "native_mips_loop": native_v,
            "native_unavailable_reason": reason,
            "qemu_tcg_icount_mips_loop": tcg.as_ref().ok(),
            "qemu_tcg_icount_mips_mem": tcg_mem.as_ref().ok(),
            "qemu_unavailable_reason": tcg.as_ref().err(),
            "ratio_soft_to_native_loop": nat.as_ref().ok().map(|n| soft_loop / n),
            "loop_instructions": lw.instructions,
            "mem_instructions": mw.instructions,
            "runs": a.runs,
        });
        println!("{obj}");
    }
    Ok(ExitCode::SUCCESS)
}

fn native_impl(w: &Workload, runs: usize) -> Result<f64, String> {
    use vcpu_kvm::ring3::{Ring3Block, Ring3End, Ring3Runner, layout};
    let mut runner = Ring3Runner::new().map_err(|e| e.to_string())?;
    runner.set_timeout(std::time::Duration::from_secs(120));
    let mut block = Ring3Block::new(w.code.clone());
    block.regs.rsi = layout::DATA_BASE + w.data_offsets.0;
    block.regs.rdi = layout::DATA_BASE + w.data_offsets.1;
    let mut m = Vec::new();
    for _ in 0..runs.max(1) {
        let (out, elapsed) = runner.time_block(&block).map_err(|e| e.to_string())?;
        if out.end != Ring3End::Completed {
            return Err(format!(
                "the {} workload ended with {:?} in ring 3",
                w.name, out.end
            ));
        }
        m.push(w.instructions as f64 / elapsed.as_secs_f64() / 1e6);
    }
    Ok(median(m))
}
