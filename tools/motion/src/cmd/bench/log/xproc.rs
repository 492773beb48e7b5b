//! The cross-process run of `motion bench log`: this binary again, as a
//! log-store process serving `LogAppend` on a seqpacket socket.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::Context;
use log_append_api::{Ack, Appender, BatchLimits, LogAppend, Record as WireRecord, Reply, Request};
use log_store::service::{AppendSession, serve_append};
use motion_ipc::link::{Link, SeqpacketLink};
use motion_ipc::{Client, Endpoint, EndpointInfo, Interface, Role, Server};
use motion_records::Record;
use motion_records::session::{BEGIN_TYPE_ID, Begin, DurabilityRequest};

use super::Run;

/// Records per `Append` request.
pub const BATCH: usize = 1024;

fn info(role: Role) -> EndpointInfo {
    let (local, peer) = match role {
        Role::Client => ("vm-monitor", "log-store"),
        Role::Server => ("log-store", "vm-monitor"),
    };
    EndpointInfo {
        channel: "record".into(),
        interface: LogAppend::NAME.into(),
        interface_id: LogAppend::ID,
        local: local.into(),
        peer: peer.into(),
        role,
    }
}

/// Be the server: `dir` stores into a log there, `None` acknowledges only.
pub fn serve(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("standard input")?;
    let link = SeqpacketLink::from_fd(fd).context("standard input is not the bench's socket")?;
    let mut server =
        Server::<LogAppend>::new(Endpoint::new(info(Role::Server), Link::Seqpacket(link)))?;
    match dir {
        Some(dir) => serve_append(&mut server, &mut AppendSession::new(dir))?,
        None => {
            let mut n = 0u64;
            server.serve(|request| {
                let ack = |n| Ack {
                    accepted: n,
                    durable: n,
                };
                Ok(match request {
                    Request::Append { records } => {
                        n += records.len() as u64;
                        Reply::Appended(ack(n))
                    }
                    Request::Flush => Reply::Flushed(ack(n)),
                    Request::Seal => Reply::Sealed(ack(n)),
                    Request::Create(_) => Reply::Created(ack(n)),
                })
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn one(dir: &Path, records: &[Record], store: bool) -> anyhow::Result<Run> {
    let name = format!("motion-bench-{}-xproc.motionlog", std::process::id());
    let (mine, theirs) = SeqpacketLink::pair().context("socketpair")?;
    let fd = theirs.as_fd().try_clone_to_owned()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "log"]);
    if store {
        cmd.arg("--serve-dir").arg(dir);
    } else {
        cmd.arg("--serve-null");
    }
    let mut child = cmd
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .spawn()
        .context("starting the log-store process")?;
    drop(theirs);
    let client =
        Client::<LogAppend>::new(Endpoint::new(info(Role::Client), Link::Seqpacket(mine)))?;

    // The monitor builds each record as it happens; build them all first so
    // the clock sees the channel and the store, not record construction.
    let mut wire = Vec::with_capacity(records.len() + 1);
    wire.push(WireRecord {
        record_type: BEGIN_TYPE_ID,
        timepoint: None,
        payload: Begin {
            log: name.clone(),
            machine: log_store::sample::machine(),
            durability: DurabilityRequest::IntervalMs(10),
            resume: false,
        }
        .to_payload(),
    });
    for r in records {
        wire.push(WireRecord {
            record_type: r.record_type().id(),
            timepoint: r.timepoint().copied(),
            payload: r.to_payload()?,
        });
    }
    let limits = BatchLimits {
        max_records: BATCH,
        ..BatchLimits::default()
    };
    let start = Instant::now();
    let mut app = Appender::new(client, limits);
    for w in wire {
        app.push(w)?;
    }
    let ack = app.seal()?;
    let elapsed = start.elapsed();
    drop(app);
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the log-store process failed: {status}");
    let expect = records.len() as u64 + u64::from(!store);
    anyhow::ensure!(
        ack.durable == expect,
        "{} records durable, {expect} sent",
        ack.durable
    );
    let path = dir.join(&name);
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if store {
        let n = log_store::LogReader::open(&path)?.record_count();
        anyhow::ensure!(n == records.len() as u64, "log holds {n} records");
        std::fs::remove_file(&path).ok();
    }
    Ok(Run {
        records: records.len() as u64,
        elapsed,
        raw_bytes: 0,
        file_bytes,
    })
}

/// The log-store run and the acknowledge-only baseline.
pub fn measure(dir: &Path, records: &[Record]) -> anyhow::Result<(Run, Run)> {
    let log = one(dir, records, true)?;
    let null = one(dir, records, false)?;
    Ok((log, null))
}
