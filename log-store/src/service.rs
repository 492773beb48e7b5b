//! The log-store component: `LogAppend` and `LogRead` served over motion-ipc.
//!
//! The sessions ([`AppendSession`], [`ReadSession`]) turn requests into
//! writer and reader calls and know nothing of transports; the serve loops
//! ([`serve_append`], [`serve_read`]) run a session over a [`Server`];
//! [`component_entry`] is what the runtime calls for the `log-store`
//! component: it serves every `LogAppend` and `LogRead` channel declared for
//! it, on logs in the directory its domain's `log-dir` resource names.
//!
//! A recording session on `LogAppend` starts with a `Create` request (the
//! log's name, its machine description, the durability policy) — or, the
//! older way, a [`motion_records::session::Begin`] record (type id 0)
//! carrying the same. Acknowledgements count log records only, so record
//! number `k` is the `k`-th record appended.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log_append_api::{self as append, LogAppend, LogAppendError};
use log_read_api::{self as read, LogRead, LogReadError};
use motion_ipc::{ComponentContext, ComponentResult, IpcError, Server};
use motion_records::session::{BEGIN_TYPE_ID, Begin, DurabilityRequest, cpuid_policy_id};

use crate::error::{Fault, LogError, Region};
use crate::reader::LogReader;
use crate::writer::{Ack, Durability, EncodedRecord, LogWriter, WriterConfig};

/// Largest reply payload `Read` builds (below the IPC message limit, with
/// room for the reply's own framing).
const READ_REPLY_BUDGET: usize = motion_ipc::MAX_PAYLOAD_SIZE - 4096;

/// Whether `name` is a plain file name: no directories, no `.`/`..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= 255
}

fn durability(d: DurabilityRequest) -> Durability {
    match d {
        DurabilityRequest::EveryBatch => Durability::EveryBatch,
        DurabilityRequest::IntervalMs(ms) => Durability::Interval(Duration::from_millis(ms.into())),
        DurabilityRequest::AtSeal => Durability::AtSeal,
    }
}

fn wire_ack(a: Ack) -> append::Ack {
    append::Ack {
        accepted: a.appended,
        durable: a.durable,
    }
}

fn append_error(e: LogError) -> LogAppendError {
    match e {
        LogError::Sealed => LogAppendError::Sealed,
        LogError::InvalidRecord { index, reason } => LogAppendError::InvalidRecord {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            why: reason,
        },
        other => LogAppendError::Storage {
            what: other.to_string(),
        },
    }
}

enum AppendState {
    /// No `Begin` yet.
    Waiting,
    Open(Box<LogWriter>),
    Sealed(Ack),
    /// A write failed: nothing more is accepted (what was durable stays so).
    Failed(String),
}

/// One `LogAppend` session: a recording being written.
pub struct AppendSession {
    dir: PathBuf,
    state: AppendState,
}

impl AppendSession {
    /// A session that creates (or resumes) the log a `Begin` names, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> AppendSession {
        AppendSession {
            dir: dir.into(),
            state: AppendState::Waiting,
        }
    }

    /// A session on a writer already open (no `Begin` expected).
    pub fn with_writer(writer: LogWriter) -> AppendSession {
        AppendSession {
            dir: PathBuf::new(),
            state: AppendState::Open(Box::new(writer)),
        }
    }

    fn begin(&mut self, payload: &[u8]) -> Result<(), LogAppendError> {
        let invalid = |why: String| LogAppendError::InvalidRecord { index: 0, why };
        let b = Begin::from_payload(payload).map_err(|e| invalid(e.to_string()))?;
        self.open(b)
    }

    /// Create (or resume) the log a `Begin` record or a `Create` request names.
    fn open(&mut self, b: Begin) -> Result<(), LogAppendError> {
        let invalid = |why: String| LogAppendError::InvalidRecord { index: 0, why };
        if !plain_name(&b.log) {
            return Err(invalid(format!(
                "log name `{}` is not a plain file name",
                b.log
            )));
        }
        let path = self.dir.join(&b.log);
        let config = WriterConfig::with_durability(durability(b.durability));
        let writer = if b.resume && path.exists() {
            let reader = LogReader::open(&path).map_err(append_error)?;
            if reader.machine() != &b.machine {
                return Err(invalid(format!(
                    "cannot resume `{}`: it records another machine",
                    b.log
                )));
            }
            drop(reader);
            let (w, recovery) = LogWriter::recover(&path, config).map_err(append_error)?;
            tracing::info!(
                log = %b.log,
                kept = recovery.kept_records,
                truncated_bytes = recovery.truncated_bytes,
                "resumed a log"
            );
            w
        } else {
            LogWriter::create(&path, &b.machine, config).map_err(append_error)?
        };
        self.state = AppendState::Open(Box::new(writer));
        Ok(())
    }

    fn writer(&mut self) -> Result<&mut LogWriter, LogAppendError> {
        match &mut self.state {
            AppendState::Open(w) => Ok(w),
            AppendState::Sealed(_) => Err(LogAppendError::Sealed),
            AppendState::Waiting => Err(LogAppendError::InvalidRecord {
                index: 0,
                why: "a recording session starts with a Begin record (type id 0)".into(),
            }),
            AppendState::Failed(what) => Err(LogAppendError::Storage { what: what.clone() }),
        }
    }

    fn fail(&mut self, e: LogError) -> LogAppendError {
        let wire = append_error(e);
        if let LogAppendError::Storage { what } = &wire {
            self.state = AppendState::Failed(what.clone());
        }
        wire
    }

    /// Answer one request.
    pub fn handle(&mut self, request: append::Request) -> Result<append::Reply, LogAppendError> {
        match request {
            append::Request::Append { records } => {
                let mut batch: &[append::Record] = &records;
                if matches!(self.state, AppendState::Waiting)
                    && let Some(first) = batch.first()
                    && first.record_type == BEGIN_TYPE_ID
                {
                    self.begin(&first.payload)?;
                    batch = &batch[1..];
                }
                if let Some(i) = batch.iter().position(|r| r.record_type == BEGIN_TYPE_ID) {
                    let offset = records.len() - batch.len();
                    return Err(LogAppendError::InvalidRecord {
                        index: u32::try_from(i + offset).unwrap_or(u32::MAX),
                        why: "Begin only opens a session".into(),
                    });
                }
                let encoded: Vec<EncodedRecord<'_>> = batch
                    .iter()
                    .map(|r| EncodedRecord {
                        type_id: r.record_type,
                        payload: &r.payload,
                        timepoint: r.timepoint,
                    })
                    .collect();
                let offset = records.len() - batch.len();
                let result = self.writer()?.append_encoded(&encoded);
                match result {
                    Ok(a) => Ok(append::Reply::Appended(wire_ack(a))),
                    Err(LogError::InvalidRecord { index, reason }) => {
                        Err(LogAppendError::InvalidRecord {
                            index: u32::try_from(index + offset).unwrap_or(u32::MAX),
                            why: reason,
                        })
                    }
                    Err(e) => Err(self.fail(e)),
                }
            }
            append::Request::Create(c) => {
                if !matches!(self.state, AppendState::Waiting) {
                    return Err(LogAppendError::InvalidRecord {
                        index: 0,
                        why: "this session has opened its log already".into(),
                    });
                }
                let c = *c;
                self.open(Begin {
                    log: c.log,
                    machine: c.machine,
                    durability: c.durability,
                    resume: c.resume,
                })?;
                Ok(append::Reply::Created(wire_ack(self.writer()?.ack())))
            }
            append::Request::Flush => {
                if let AppendState::Sealed(a) = self.state {
                    return Ok(append::Reply::Flushed(wire_ack(a)));
                }
                let result = self.writer()?.flush();
                match result {
                    Ok(a) => Ok(append::Reply::Flushed(wire_ack(a))),
                    Err(e) => Err(self.fail(e)),
                }
            }
            append::Request::Seal => {
                if let AppendState::Sealed(a) = self.state {
                    return Ok(append::Reply::Sealed(wire_ack(a)));
                }
                self.writer()?;
                let AppendState::Open(w) = std::mem::replace(&mut self.state, AppendState::Waiting)
                else {
                    return Err(LogAppendError::Storage {
                        what: "internal: no open log".into(),
                    });
                };
                match w.seal() {
                    Ok(s) => {
                        tracing::info!(records = s.records, chain_head = %motion_records::hex(&s.chain_head), "sealed");
                        let a = Ack {
                            appended: s.records,
                            durable: s.records,
                        };
                        self.state = AppendState::Sealed(a);
                        Ok(append::Reply::Sealed(wire_ack(a)))
                    }
                    Err(e) => Err(self.fail(e)),
                }
            }
        }
    }

    /// When [`AppendSession::poll`] next has work (interval durability).
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            AppendState::Open(w) => w.next_deadline(),
            _ => None,
        }
    }

    /// Make records durable whose interval has passed.
    pub fn poll(&mut self) {
        if let AppendState::Open(w) = &mut self.state
            && let Err(e) = w.poll()
        {
            tracing::error!("log-store: periodic fsync failed: {e}");
            self.state = AppendState::Failed(e.to_string());
        }
    }

    /// The client went away: make what it sent durable (the log stays
    /// unsealed: an unsealed log is the mark of a recording that did not end).
    pub fn finish(&mut self) {
        if let AppendState::Open(w) = &mut self.state
            && let Err(e) = w.flush()
        {
            tracing::error!("log-store: final flush failed: {e}");
        }
    }
}

/// Serve one `LogAppend` channel until its client disconnects or shutdown
/// is requested; fsyncs by the session's interval while idle.
pub fn serve_append(
    server: &mut Server<LogAppend>,
    session: &mut AppendSession,
) -> Result<(), IpcError> {
    loop {
        let received = match session.next_deadline() {
            Some(t) => server.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => server.recv(),
        };
        let incoming = match received {
            Ok(i) => i,
            Err(IpcError::Timeout { .. }) => {
                session.poll();
                continue;
            }
            Err(IpcError::Disconnected { .. } | IpcError::Shutdown) => {
                session.finish();
                return Ok(());
            }
            Err(e) => {
                session.finish();
                return Err(e);
            }
        };
        let wants_reply = incoming.expects_reply();
        let response = session.handle(incoming.request);
        if wants_reply {
            match server.reply(incoming.id, &response) {
                Ok(()) | Err(IpcError::TooLarge { .. }) => {}
                Err(IpcError::Disconnected { .. } | IpcError::Shutdown) => {
                    session.finish();
                    return Ok(());
                }
                Err(e) => {
                    session.finish();
                    return Err(e);
                }
            }
        }
    }
}

fn bad_spot(f: &Fault) -> read::BadSpot {
    let (block, frame) = match f.region {
        Region::Block { block } => (Some(block), None),
        Region::Frame { block, frame, .. } => (Some(block), Some(u64::from(frame))),
        _ => (None, None),
    };
    read::BadSpot {
        offset: f.offset,
        block,
        frame,
        what: f.to_string(),
    }
}

fn read_error(e: LogError) -> LogReadError {
    match e {
        LogError::Corrupt(f) => LogReadError::Corrupt {
            offset: f.offset,
            what: f.to_string(),
        },
        LogError::OutOfRange { requested, total } => LogReadError::OutOfRange {
            from: requested,
            records: total,
        },
        other => LogReadError::Storage {
            what: other.to_string(),
        },
    }
}

/// One `LogRead` session: a log opened read-only.
pub struct ReadSession {
    dir: PathBuf,
    open: Option<LogReader>,
}

impl ReadSession {
    /// A session on logs in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> ReadSession {
        ReadSession {
            dir: dir.into(),
            open: None,
        }
    }

    fn reader(&self) -> Result<&LogReader, LogReadError> {
        self.open.as_ref().ok_or(LogReadError::NotOpen)
    }

    /// Answer one request.
    pub fn handle(&mut self, request: read::Request) -> Result<read::Reply, LogReadError> {
        match request {
            read::Request::Open { log } => {
                if !plain_name(&log) {
                    return Err(LogReadError::BadName { log });
                }
                let reader =
                    LogReader::open(self.dir.join(&log)).map_err(|e| LogReadError::NoSuchLog {
                        log: log.clone(),
                        why: e.to_string(),
                    })?;
                let summary = read::LogSummary {
                    records: reader.record_count(),
                    sealed: reader.sealed().is_some(),
                };
                self.open = Some(reader);
                Ok(read::Reply::Opened(summary))
            }
            read::Request::Header => {
                let m = self.reader()?.machine();
                Ok(read::Reply::Header(read::LogHeader {
                    format_version: u32::from(crate::format::FORMAT_VERSION),
                    backend: m.backend.clone(),
                    vcpus: m.vcpus,
                    memory_bytes: m.memory_bytes,
                    guest_image_hash: m.guest_image,
                    disk_image_hash: m.disk_image,
                    cpuid_policy: cpuid_policy_id(&m.cpuid),
                    machine: Box::new(m.clone()),
                }))
            }
            read::Request::Read { from, max_records } => {
                let r = self.reader()?;
                let total = r.record_count();
                let mut records = Vec::new();
                let mut bytes = 0usize;
                let mut first_err = None;
                for item in r.records_from(from).map_err(read_error)? {
                    if records.len() >= max_records as usize {
                        break;
                    }
                    let (_, rec) = match item {
                        Ok(x) => x,
                        Err(e) => {
                            first_err = Some(read_error(e));
                            break;
                        }
                    };
                    let payload = rec.to_payload().map_err(|e| LogReadError::Storage {
                        what: e.to_string(),
                    })?;
                    let size = payload.len() + append::Record::MAX_OVERHEAD;
                    if bytes + size > READ_REPLY_BUDGET {
                        if records.is_empty() {
                            return Err(LogReadError::Storage {
                                what: format!(
                                    "record {from} ({} bytes) does not fit in one message",
                                    payload.len()
                                ),
                            });
                        }
                        break;
                    }
                    bytes += size;
                    records.push(append::Record {
                        record_type: rec.record_type().id(),
                        timepoint: rec.timepoint().copied(),
                        payload,
                    });
                }
                if records.is_empty()
                    && let Some(e) = first_err
                {
                    return Err(e);
                }
                let end = from + records.len() as u64 >= total;
                Ok(read::Reply::Records {
                    first: from,
                    records,
                    end,
                })
            }
            read::Request::Seek(target) => {
                let r = self.reader()?;
                let record = match target {
                    read::SeekTarget::Record(n) => {
                        if n > r.record_count() {
                            return Err(LogReadError::OutOfRange {
                                from: n,
                                records: r.record_count(),
                            });
                        }
                        n
                    }
                    read::SeekTarget::Timepoint(tp) => r
                        .find_timepoint(&tp)
                        .map_err(read_error)?
                        .unwrap_or(r.record_count()),
                };
                Ok(read::Reply::Position { record })
            }
            read::Request::Verify => {
                let s = self.reader()?.verify().map_err(read_error)?;
                Ok(read::Reply::Verified(read::VerifyReport {
                    records: s.records,
                    first_bad: s.fault.as_ref().map(bad_spot),
                }))
            }
        }
    }
}

/// Serve one `LogRead` channel until its client disconnects or shutdown.
pub fn serve_read(server: &mut Server<LogRead>, session: &mut ReadSession) -> Result<(), IpcError> {
    server.serve(|request| session.handle(request))
}

/// The `log-store` component's entry, for the runtime's registry: serves
/// every `LogAppend` and `LogRead` channel declared for it (one thread
/// each), on logs in the `log-dir` resource.
pub fn component_entry(mut ctx: ComponentContext) -> ComponentResult {
    let dir: PathBuf = ctx
        .resource("log-dir")
        .map(Path::to_path_buf)
        .ok_or("log-store: no `log-dir` resource was given to this domain")?;
    let appends = ctx.servers::<LogAppend>()?;
    let reads = ctx.servers::<LogRead>()?;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for mut server in appends {
            let dir = dir.clone();
            handles.push(s.spawn(move || serve_append(&mut server, &mut AppendSession::new(dir))));
        }
        for mut server in reads {
            let dir = dir.clone();
            handles.push(s.spawn(move || serve_read(&mut server, &mut ReadSession::new(dir))));
        }
        let mut first_err: ComponentResult = Ok(());
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if first_err.is_ok() {
                        first_err = Err(Box::new(e));
                    }
                }
                Err(_) => {
                    if first_err.is_ok() {
                        first_err = Err("log-store: a serving thread panicked".into());
                    }
                }
            }
        }
        first_err
    })
}
