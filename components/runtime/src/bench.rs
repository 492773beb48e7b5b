//! Append throughput over the runtime's channels: how many small `LogAppend`
//! records per second the transport carries in-process and across processes,
//! against a baseline without IPC. The server is a null log (it checks and
//! counts records, stores nothing), so the figures are the IPC path's ceiling;
//! `motion bench log` measures the real log store on top of it.
//!
//! A binary using this must register [`NULL_LOG`] (see [`register`]) in the
//! registry it passes to `run_domain_if_requested`, since the cross-process
//! run starts the null log as a domain process of that binary.

use std::collections::BTreeMap;
use std::time::Instant;

use log_append_api::{
    Ack, AppendError, Appender, BatchLimits, LogAppend, LogAppendError, Record, Reply, Request,
};
use motion_ipc::{ComponentContext, ComponentResult};

use crate::{
    ChannelDesc, DomainDesc, Mode, Registry, RestartPolicy, Runtime, RuntimeConfig, RuntimeError,
    SystemGraph,
};

/// The null log component's name.
pub const NULL_LOG: &str = "bench-null-log";

/// Register the null log component.
pub fn register(registry: &mut Registry) {
    registry.register(NULL_LOG, null_log);
}

/// What to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendBench {
    /// Records to append.
    pub records: u64,
    /// Payload bytes of each record.
    pub payload_bytes: usize,
    /// One record in this many carries a timepoint (an asynchronous event).
    pub timepoint_every: u64,
    /// Client batching.
    pub limits: BatchLimits,
}

impl Default for AppendBench {
    fn default() -> Self {
        AppendBench {
            records: 2_000_000,
            payload_bytes: 8,
            timepoint_every: 10,
            limits: BatchLimits::default(),
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendBenchResult {
    /// "direct (no IPC)", "in-process", "cross-process".
    pub path: &'static str,
    /// Records appended and acknowledged durable.
    pub records: u64,
    /// Wall time from the first push to the final acknowledgement.
    pub seconds: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Payload megabytes (10^6) per second.
    pub payload_mb_per_s: f64,
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting the graph failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Appending failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The null log acknowledged a different count than was sent.
    #[error("sent {sent} records but the log acknowledged {acked} as durable")]
    Count {
        /// Sent.
        sent: u64,
        /// Acknowledged.
        acked: u64,
    },
}

fn record(i: u64, bench: &AppendBench) -> Record {
    let mut payload = vec![0u8; bench.payload_bytes];
    for (b, v) in payload.iter_mut().zip(i.to_le_bytes()) {
        *b = v;
    }
    Record {
        record_type: 1 + (i % 4) as u16,
        timepoint: (bench.timepoint_every > 0 && i % bench.timepoint_every == 0).then_some(
            vcpu::Timepoint {
                vcpu: 0,
                branches: i,
                rip: 0x1000 + (i & 0xfff),
                rcx: 0,
            },
        ),
        payload,
    }
}

/// The null log's state: what a log store has to do per record at least.
#[derive(Debug, Default)]
struct NullLog {
    records: u64,
    checksum: u64,
    sealed: bool,
}

impl NullLog {
    fn handle(&mut self, request: Request) -> Result<Reply, LogAppendError> {
        if self.sealed {
            return Err(LogAppendError::Sealed);
        }
        let ack = |n| Ack {
            accepted: n,
            durable: n,
        };
        match request {
            Request::Append { records } => {
                for r in &records {
                    self.checksum = self
                        .checksum
                        .wrapping_mul(31)
                        .wrapping_add(u64::from(r.record_type))
                        .wrapping_add(r.payload.iter().map(|b| u64::from(*b)).sum::<u64>());
                }
                self.records += records.len() as u64;
                Ok(Reply::Appended(ack(self.records)))
            }
            Request::Flush => Ok(Reply::Flushed(ack(self.records))),
            Request::Seal => {
                self.sealed = true;
                Ok(Reply::Sealed(ack(self.records)))
            }
            Request::Create(_) => Ok(Reply::Created(ack(self.records))),
        }
    }
}

/// The null log component: serves every `LogAppend` channel it has, each on
/// its own thread, until the clients go away.
pub fn null_log(mut ctx: ComponentContext) -> ComponentResult {
    let servers = ctx.servers::<LogAppend>()?;
    let threads: Vec<_> = servers
        .into_iter()
        .map(|mut server| {
            std::thread::spawn(move || {
                let mut log = NullLog::default();
                server.serve(|request| log.handle(request))
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "null log thread panicked")??;
    }
    Ok(())
}

fn result(path: &'static str, bench: &AppendBench, t0: Instant) -> AppendBenchResult {
    let seconds = t0.elapsed().as_secs_f64().max(1e-9);
    AppendBenchResult {
        path,
        records: bench.records,
        seconds,
        records_per_s: bench.records as f64 / seconds,
        payload_mb_per_s: (bench.records as f64 * bench.payload_bytes as f64) / seconds / 1e6,
    }
}

/// Baseline: the same records built and handed to the null log by function
/// call, in batches of the same size, with no encoding and no transport.
pub fn run_direct(bench: &AppendBench) -> Result<AppendBenchResult, BenchError> {
    let mut log = NullLog::default();
    let t0 = Instant::now();
    let batch = bench.limits.max_records.max(1);
    let mut pending = Vec::with_capacity(batch);
    let mut acked = 0;
    for i in 0..bench.records {
        pending.push(record(i, bench));
        if pending.len() == batch || i + 1 == bench.records {
            let records = std::mem::replace(&mut pending, Vec::with_capacity(batch));
            acked = log
                .handle(Request::Append { records })
                .map_err(AppendError::from)?
                .ack()
                .durable;
        }
    }
    if acked != bench.records {
        return Err(BenchError::Count {
            sent: bench.records,
            acked,
        });
    }
    Ok(result("direct (no IPC)", bench, t0))
}

/// Append through the runtime: the null log in its own domain, in-process
/// ([`Mode::Threads`]) or as a sandboxed process ([`Mode::Processes`]).
pub fn run_over_runtime(
    registry: &Registry,
    mode: Mode,
    bench: &AppendBench,
) -> Result<AppendBenchResult, BenchError> {
    let graph = SystemGraph {
        domains: vec![
            DomainDesc {
                name: "bench-host".into(),
                components: vec!["bench-client".into()],
                grants: vec![],
                restart: RestartPolicy::Never,
            },
            DomainDesc {
                name: "bench-log".into(),
                components: vec![NULL_LOG.into()],
                grants: vec![],
                restart: RestartPolicy::Never,
            },
        ],
        channels: vec![ChannelDesc {
            name: "bench-append".into(),
            interface: "LogAppend".into(),
            client: "bench-client".into(),
            server: NULL_LOG.into(),
        }],
        supervisor: Some("bench-host".into()),
    };
    let mut runtime = Runtime::start(
        &graph,
        registry,
        RuntimeConfig {
            mode,
            resources: BTreeMap::new(),
            ..RuntimeConfig::default()
        },
    )?;
    let mut ctx = runtime
        .take_host_context("bench-client")
        .ok_or_else(|| RuntimeError::Internal("no bench-client context".into()))?;
    let client = ctx.client::<LogAppend>().map_err(RuntimeError::from)?;
    let mut appender = Appender::new(client, bench.limits);
    // Build records outside the timed loop's allocations as little as the
    // baseline does: both construct each record in the loop.
    let t0 = Instant::now();
    for i in 0..bench.records {
        appender.push(record(i, bench))?;
    }
    let ack = appender.flush()?;
    let path = match mode {
        Mode::Threads => "in-process",
        Mode::Processes => "cross-process",
    };
    let measured = result(path, bench, t0);
    drop(appender);
    drop(ctx);
    runtime.shutdown(std::time::Duration::from_secs(10))?;
    if ack.durable != bench.records {
        return Err(BenchError::Count {
            sent: bench.records,
            acked: ack.durable,
        });
    }
    Ok(measured)
}

/// Run all three paths and format them side by side with the targets of the
/// log-append path (2,000,000/s in-process, 500,000/s across processes).
pub fn run_all(registry: &Registry, bench: &AppendBench) -> Result<String, BenchError> {
    let direct = run_direct(bench)?;
    let inproc = run_over_runtime(registry, Mode::Threads, bench)?;
    let xproc = run_over_runtime(registry, Mode::Processes, bench)?;
    let mut out = format!(
        "LogAppend transport: {} records of {} payload bytes, a timepoint every {}, batches of up to {} records / {} bytes, window {}\n",
        bench.records,
        bench.payload_bytes,
        bench.timepoint_every,
        bench.limits.max_records,
        bench.limits.max_bytes,
        bench.limits.window
    );
    out += &format!(
        "{:<16} {:>14} {:>10} {:>12} {:>14}\n",
        "path", "records/s", "MB/s", "vs direct", "vs target"
    );
    for (r, target) in [(&direct, None), (&inproc, Some(2e6)), (&xproc, Some(5e5))] {
        out += &format!(
            "{:<16} {:>14.0} {:>10.1} {:>11.2}x {:>14}\n",
            r.path,
            r.records_per_s,
            r.payload_mb_per_s,
            r.records_per_s / direct.records_per_s,
            target.map_or("-".to_string(), |t: f64| format!(
                "{:.2}x of {:.0}",
                r.records_per_s / t,
                t
            )),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_baseline_counts_every_record() {
        let bench = AppendBench {
            records: 1000,
            ..AppendBench::default()
        };
        let r = run_direct(&bench).unwrap();
        assert_eq!(r.records, 1000);
        assert!(r.records_per_s > 0.0);
    }

    #[test]
    fn the_threaded_path_counts_every_record() {
        let mut registry = Registry::new();
        register(&mut registry);
        let bench = AppendBench {
            records: 5000,
            ..AppendBench::default()
        };
        let r = run_over_runtime(&registry, Mode::Threads, &bench).unwrap();
        assert_eq!(r.records, 5000);
    }
}
