//! `motion bench log`: how fast the log-store takes records, and how small it
//! keeps them.
//!
//! In process, the records are built before the clock starts (the monitor
//! builds each record anyway) and appended in batches, as the log-store
//! component receives them. The baseline, timed in the same run on the same
//! records and disk, is the least a log could do: postcard-encode each record
//! and write the bytes, with no framing, CRC, hash chain, compression, index
//! or fsync.
//!
//! Across processes, this binary starts itself again as a log-store process
//! serving `LogAppend` over a seqpacket socket (its standard input) and
//! streams the same small records to it through the `Appender`, as the
//! monitor does; the baseline is the same stream to a server that
//! acknowledges without storing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use log_store::{Durability, LogWriter, WriterConfig, sample};
use motion_records::Record;
use serde_json::json;

/// Options of `motion bench log`.
#[derive(Args)]
pub struct LogBenchArgs {
    /// Small records (port reads, RDTSC, interrupts) in the throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Records of the realistic mix (adds MMIO, RDRAND, serial input, DMA
    /// sectors, digests) for throughput and bytes per record.
    #[arg(long, default_value_t = 500_000)]
    mixed: u64,
    /// Records per append call.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Directory for the temporary logs (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// End with one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Internal: be the log-store process of the cross-process run, serving
    /// `LogAppend` on standard input (a seqpacket socket) in this directory.
    #[arg(long, hide = true)]
    serve_dir: Option<PathBuf>,
    /// Internal: be a server that acknowledges without storing (the IPC
    /// baseline of the cross-process run).
    #[arg(long, hide = true)]
    serve_null: bool,
}

mod xproc;

/// Target from issue 6 for small records in process.
const INPROC_TARGET: f64 = 2_000_000.0;
/// Target from issue 6 across processes.
const XPROC_TARGET: f64 = 500_000.0;

struct Run {
    records: u64,
    elapsed: Duration,
    raw_bytes: u64,
    file_bytes: u64,
}

impl Run {
    fn per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn raw_mb_per_s(&self) -> f64 {
        self.raw_bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

fn temp_path(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!(
        "motion-bench-{}-{name}.motionlog",
        std::process::id()
    ))
}

/// Append `records` to a new log under `durability`, seal, and time it all.
fn log_run(
    dir: &std::path::Path,
    name: &str,
    records: &[Record],
    batch: usize,
    durability: Durability,
) -> anyhow::Result<Run> {
    let path = temp_path(dir, name);
    let config = WriterConfig::with_durability(durability);
    let start = Instant::now();
    let mut w = LogWriter::create(&path, &sample::machine(), config)
        .with_context(|| format!("creating {}", path.display()))?;
    for chunk in records.chunks(batch) {
        w.append(chunk)?;
    }
    let summary = w.seal()?;
    let elapsed = start.elapsed();
    let reader = log_store::LogReader::open(&path)?;
    anyhow::ensure!(
        reader.record_count() == records.len() as u64,
        "log holds {} records, {} appended",
        reader.record_count(),
        records.len()
    );
    let raw_bytes = reader.raw_bytes();
    drop(reader);
    std::fs::remove_file(&path).ok();
    Ok(Run {
        records: records.len() as u64,
        elapsed,
        raw_bytes,
        file_bytes: summary.file_bytes,
    })
}

/// The baseline: encode and write, nothing else.
fn baseline_run(
    dir: &std::path::Path,
    name: &str,
    records: &[Record],
    batch: usize,
) -> anyhow::Result<Run> {
    use std::io::Write;
    let path = temp_path(dir, name);
    let start = Instant::now();
    let mut f =
        std::fs::File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut bytes = 0u64;
    for chunk in records.chunks(batch) {
        for r in chunk {
            r.encode_into(&mut buf)?;
        }
        if buf.len() >= 64 << 10 {
            f.write_all(&buf)?;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    f.write_all(&buf)?;
    bytes += buf.len() as u64;
    let elapsed = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).ok();
    Ok(Run {
        records: records.len() as u64,
        elapsed,
        raw_bytes: bytes,
        file_bytes: bytes,
    })
}

/// Run the benchmark.
pub fn run(args: LogBenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.serve_dir {
        return xproc::serve(Some(dir));
    }
    if args.serve_null {
        return xproc::serve(None);
    }
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let small: Vec<Record> = (0..args.records).map(|i| sample::small(1, i)).collect();
    let mixed: Vec<Record> = (0..args.mixed).map(|i| sample::mixed(1, i)).collect();
    let interval = Durability::Interval(Duration::from_millis(10));

    let base_small = baseline_run(&dir, "base-small", &small, args.batch)?;
    let log_small = log_run(&dir, "small", &small, args.batch, interval)?;
    let base_mixed = baseline_run(&dir, "base-mixed", &mixed, args.batch)?;
    let log_mixed = log_run(&dir, "mixed", &mixed, args.batch, interval)?;
    // fsync per batch: bounded by the disk's sync latency, so fewer records.
    let n_sync = mixed.len().min(50_000);
    let log_sync = log_run(
        &dir,
        "every-batch",
        &mixed[..n_sync],
        args.batch,
        Durability::EveryBatch,
    )?;

    let xproc = xproc::measure(&dir, &small);
    let inproc = log_small.per_s();
    let bytes_per_record = log_mixed.file_bytes as f64 / log_mixed.records as f64;
    let raw_per_record = log_mixed.raw_bytes as f64 / log_mixed.records as f64;
    let encoded_per_record = base_mixed.raw_bytes as f64 / base_mixed.records as f64;

    println!(
        "motion bench log: batches of {}, logs in {}",
        args.batch,
        dir.display()
    );
    println!("in-process append, durability every 10 ms, sealed:");
    println!(
        "  small records: {:>12.0} records/s ({:.0} MB/s of frames)  baseline encode+write {:>12.0}/s  ratio {:.2}  target >= {:.0}/s: {}",
        inproc,
        log_small.raw_mb_per_s(),
        base_small.per_s(),
        inproc / base_small.per_s(),
        INPROC_TARGET,
        if inproc >= INPROC_TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  realistic mix: {:>12.0} records/s ({:.0} MB/s of frames)  baseline encode+write {:>12.0}/s  ratio {:.2}",
        log_mixed.per_s(),
        log_mixed.raw_mb_per_s(),
        base_mixed.per_s(),
        log_mixed.per_s() / base_mixed.per_s()
    );
    println!(
        "  mix, fsync every batch: {:>8.0} records/s ({} records)",
        log_sync.per_s(),
        log_sync.records
    );
    println!(
        "bytes per record (realistic mix): postcard payload {encoded_per_record:.1}, framed raw {raw_per_record:.1}, on disk {bytes_per_record:.1} (compression {:.2}:1)",
        raw_per_record / bytes_per_record
    );
    match &xproc {
        Ok((log, null)) => println!(
            "across processes (LogAppend over a seqpacket socket to a log-store process, batches of {}): {:>10.0} records/s  baseline same IPC, server stores nothing {:>10.0}/s  ratio {:.2}  target >= {XPROC_TARGET:.0}/s: {}",
            xproc::BATCH,
            log.per_s(),
            null.per_s(),
            log.per_s() / null.per_s(),
            if log.per_s() >= XPROC_TARGET {
                "met"
            } else {
                "NOT met"
            }
        ),
        Err(e) => println!("across processes: not measured: {e:#}"),
    }
    if args.json {
        let v = json!({
            "inproc_records_per_s": inproc,
            "inproc_mb_per_s": log_small.raw_mb_per_s(),
            "inproc_baseline_records_per_s": base_small.per_s(),
            "inproc_mixed_records_per_s": log_mixed.per_s(),
            "inproc_mixed_baseline_records_per_s": base_mixed.per_s(),
            "every_batch_records_per_s": log_sync.per_s(),
            "xproc_records_per_s": xproc.as_ref().ok().map(|(l, _)| l.per_s()),
            "xproc_baseline_records_per_s": xproc.as_ref().ok().map(|(_, n)| n.per_s()),
            "xproc_error": xproc.as_ref().err().map(|e| format!("{e:#}")),
            "bytes_per_record": bytes_per_record,
            "raw_bytes_per_record": raw_per_record,
            "payload_bytes_per_record": encoded_per_record,
            "compression_ratio": raw_per_record / bytes_per_record,
            "batch": args.batch,
        });
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}
