//! The runtime end to end: domains as sandboxed processes and as threads.
//!
//! Acceptance of the foundation issue:
//! * a component cannot send on a channel not declared for it;
//! * a domain that makes a forbidden syscall is killed by its seccomp filter
//!   and the supervisor reports it with the domain's name and SIGSYS;
//! * an IPC round trip gives the same result threaded and cross-process.
//!
//! Domain processes are this test binary started again, so it has its own
//! `main` (harness = false) that first checks whether it is a domain.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log_append_api::{Ack, Appender, BatchLimits, LogAppend, LogAppendError, Record};
use log_read_api::{LogHeader, LogRead, LogReadError, LogSummary, SeekTarget, VerifyReport};
use motion_ipc::frame::{self, Kind};
use motion_ipc::{
    Client, ComponentContext, ComponentResult, Interface, IpcError, Rejection, Server,
};
use motion_runtime::{
    Access, Capability, ChannelDesc, DomainDesc, DomainOutcome, Events, Mode, OnViolation,
    Registry, RestartPolicy, Runtime, RuntimeConfig, SupervisorEvent, SystemGraph,
};
use pmu_api::Pmu;
use vcpu::Timepoint;

const LONG: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let registry = registry();
    if let Some(code) = motion_runtime::run_domain_if_requested(&registry) {
        return code;
    }
    let tests: &[motion_e2e::harness::Test<Registry>] = &[
        ("undeclared_channel_cannot_be_used_processes", |r| {
            undeclared_channel_cannot_be_used(r, Mode::Processes)
        }),
        ("undeclared_channel_cannot_be_used_threads", |r| {
            undeclared_channel_cannot_be_used(r, Mode::Threads)
        }),
        (
            "forbidden_syscall_kills_the_domain_with_sigsys",
            forbidden_syscall_kills_the_domain,
        ),
        (
            "report_mode_names_the_forbidden_syscall",
            report_mode_names_the_syscall,
        ),
        (
            "the_same_component_is_not_killed_without_a_sandbox",
            unsandboxed_opener_survives,
        ),
        (
            "read_only_file_capability_reads_but_cannot_write",
            read_only_capability,
        ),
        (
            "round_trip_is_the_same_threaded_and_cross_process",
            round_trip_same_in_both_modes,
        ),
        (
            "restart_policy_and_channels_survive_a_restart_processes",
            |r| restart_keeps_channels(r, Mode::Processes),
        ),
        (
            "restart_policy_and_channels_survive_a_restart_threads",
            |r| restart_keeps_channels(r, Mode::Threads),
        ),
        ("failure_health_and_shutdown_processes", |r| {
            failure_health_shutdown(r, Mode::Processes)
        }),
        ("failure_health_and_shutdown_threads", |r| {
            failure_health_shutdown(r, Mode::Threads)
        }),
        (
            "the_cross_process_bench_path_acknowledges_every_record",
            bench_paths_count,
        ),
        (
            "freeing_memory_in_a_thread_survives_the_sandbox",
            freeing_memory_survives,
        ),
        (
            "a_domain_ignores_terminal_signals_until_the_runtime_stops_it",
            terminal_signals_ignored,
        ),
    ];
    // Domain processes need seccomp; on a kernel without it the process-mode
    // tests say so and are skipped (threaded ones still run).
    let sandbox = motion_runtime::seccomp::probe();
    let needs_sandbox =
        |name: &str| !name.ends_with("_threads") && !name.contains("without_a_sandbox");
    motion_e2e::harness::run(&registry, tests, |name| match &sandbox {
        Err(why) if needs_sandbox(name) => Some(why.to_string()),
        _ => None,
    })
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("mem-log", mem_log)
        .register("census", census)
        .register("opener", opener)
        .register("reader", reader)
        .register("crashy-log", crashy_log)
        .register("quitter", quitter)
        .register("idler", idler)
        .register("trimmer", trimmer);
    motion_runtime::bench::register(&mut r);
    r
}

// ------------------------------------------------------------------ helpers

fn domain(
    name: &str,
    components: &[&str],
    grants: Vec<Capability>,
    restart: RestartPolicy,
) -> DomainDesc {
    DomainDesc {
        name: name.into(),
        components: components.iter().map(|c| c.to_string()).collect(),
        grants,
        restart,
    }
}

fn channel(name: &str, interface: &str, client: &str, server: &str) -> ChannelDesc {
    ChannelDesc {
        name: name.into(),
        interface: interface.into(),
        client: client.into(),
        server: server.into(),
    }
}

/// The test itself is component `probe` of domain `host`.
fn host() -> DomainDesc {
    domain("host", &["probe"], vec![], RestartPolicy::Never)
}

fn start(
    graph: &SystemGraph,
    registry: &Registry,
    mode: Mode,
    resources: BTreeMap<String, PathBuf>,
) -> (Runtime, ComponentContext) {
    start_with(graph, registry, mode, resources, OnViolation::Kill)
}

fn start_with(
    graph: &SystemGraph,
    registry: &Registry,
    mode: Mode,
    resources: BTreeMap<String, PathBuf>,
    on_violation: OnViolation,
) -> (Runtime, ComponentContext) {
    let mut rt = Runtime::start(
        graph,
        registry,
        RuntimeConfig {
            mode,
            resources,
            on_violation,
            ..RuntimeConfig::default()
        },
    )
    .expect("runtime starts");
    let probe = rt.take_host_context("probe").expect("probe context");
    (rt, probe)
}

/// Events seen so far, and a way to wait for one.
struct Watch {
    events: Events,
    seen: Vec<SupervisorEvent>,
}

impl Watch {
    fn new(rt: &Runtime) -> Watch {
        Watch {
            events: rt.events(),
            seen: Vec::new(),
        }
    }

    /// The first event (seen before or arriving within `LONG`) matching `pred`.
    fn expect(&mut self, what: &str, pred: impl Fn(&SupervisorEvent) -> bool) -> SupervisorEvent {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = Instant::now() + LONG;
        while let Ok(e) = self.events.recv_deadline(deadline) {
            self.seen.push(e.clone());
            if pred(&e) {
                return e;
            }
        }
        let all: Vec<String> = self.seen.iter().map(|e| format!("  {e}")).collect();
        panic!(
            "no event {what} within {LONG:?}; events:\n{}",
            all.join("\n")
        );
    }

    fn exited(&mut self, domain: &str, generation: u32) -> DomainOutcome {
        let e = self.expect(&format!("`{domain}` run {generation} exited"), |e| {
            matches!(e, SupervisorEvent::Exited { domain: d, generation: g, .. } if d == domain && *g == generation)
        });
        match e {
            SupervisorEvent::Exited { outcome, .. } => outcome,
            _ => unreachable!(),
        }
    }
}

/// The probe's side of a report channel: the next record's text.
fn next_report(server: &mut Server<LogAppend>) -> String {
    let incoming = server.recv_timeout(LONG).expect("a report arrives");
    let log_append_api::Request::Append { records } = incoming.request else {
        panic!("expected an append, got {:?}", incoming.request);
    };
    let n = records.len() as u64;
    server
        .reply(
            incoming.id,
            &Ok(log_append_api::Reply::Appended(Ack {
                accepted: n,
                durable: n,
            })),
        )
        .unwrap();
    String::from_utf8(records[0].payload.clone()).unwrap()
}

/// A component's side of a report channel.
fn send_report(c: &mut Client<LogAppend>, text: &str) -> ComponentResult {
    c.call(&log_append_api::Request::Append {
        records: vec![Record {
            record_type: 1,
            timepoint: None,
            payload: text.as_bytes().to_vec(),
        }],
    })??;
    Ok(())
}

fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no `{key}` in report:\n{report}"))
}

// --------------------------------------------------------------- components

/// An in-memory log store serving every `LogAppend` and `LogRead` channel
/// it is given (one thread each), until its clients go away.
fn mem_log(mut ctx: ComponentContext) -> ComponentResult {
    #[derive(Default)]
    struct State {
        records: Vec<Record>,
        sealed: bool,
    }
    let state = Arc::new(Mutex::new(State::default()));
    let mut threads = Vec::new();
    for mut server in ctx.servers::<LogAppend>()? {
        let state = Arc::clone(&state);
        threads.push(std::thread::spawn(move || {
            server.serve(|req| {
                let mut s = state.lock().unwrap();
                let n = s.records.len() as u64;
                let ack = Ack {
                    accepted: n,
                    durable: n,
                };
                use log_append_api::{Reply, Request};
                match req {
                    _ if s.sealed => Err(LogAppendError::Sealed),
                    Request::Append { records } => {
                        if let Some(i) = records.iter().position(|r| r.record_type == 0) {
                            return Err(LogAppendError::InvalidRecord {
                                index: i as u32,
                                why: "record type 0 is reserved".into(),
                            });
                        }
                        s.records.extend(records);
                        let n = s.records.len() as u64;
                        Ok(Reply::Appended(Ack {
                            accepted: n,
                            durable: n,
                        }))
                    }
                    Request::Flush => Ok(Reply::Flushed(ack)),
                    Request::Seal => {
                        s.sealed = true;
                        Ok(Reply::Sealed(ack))
                    }
                    Request::Create(_) => Ok(Reply::Created(ack)),
                }
            })
        }));
    }
    for mut server in ctx.servers::<LogRead>()? {
        let state = Arc::clone(&state);
        threads.push(std::thread::spawn(move || {
            let mut open = false;
            server.serve(|req| {
                use log_read_api::{Reply, Request};
                let s = state.lock().unwrap();
                let len = s.records.len() as u64;
                if !open && !matches!(req, Request::Open { .. }) {
                    return Err(LogReadError::NotOpen);
                }
                match req {
                    Request::Open { log } if log == "mem" => {
                        open = true;
                        Ok(Reply::Opened(LogSummary {
                            records: len,
                            sealed: s.sealed,
                        }))
                    }
                    Request::Open { log } => Err(LogReadError::NoSuchLog {
                        log,
                        why: "only `mem` exists".into(),
                    }),
                    Request::Header => Ok(Reply::Header(LogHeader {
                        format_version: 1,
                        backend: "none".into(),
                        vcpus: 1,
                        memory_bytes: 0,
                        guest_image_hash: [0; 32],
                        disk_image_hash: None,
                        cpuid_policy: "none".into(),
                        machine: Box::new(log_store::sample::machine()),
                    })),
                    Request::Read { from, .. } if from > len => {
                        Err(LogReadError::OutOfRange { from, records: len })
                    }
                    Request::Read { from, max_records } => {
                        let end = (from + u64::from(max_records)).min(len);
                        Ok(Reply::Records {
                            first: from,
                            records: s.records[from as usize..end as usize].to_vec(),
                            end: end == len,
                        })
                    }
                    Request::Seek(SeekTarget::Record(n)) => {
                        Ok(Reply::Position { record: n.min(len) })
                    }
                    Request::Seek(SeekTarget::Timepoint(tp)) => Ok(Reply::Position {
                        record: s
                            .records
                            .iter()
                            .position(|r| r.timepoint.is_some_and(|t| t >= tp))
                            .map_or(len, |i| i as u64),
                    }),
                    Request::Verify => Ok(Reply::Verified(VerifyReport {
                        records: len,
                        first_bad: None,
                    })),
                }
            })
        }));
    }
    for t in threads {
        t.join().map_err(|_| "a server thread panicked")??;
    }
    Ok(())
}

/// Reports what it can and cannot reach (see `undeclared_channel_cannot_be_used`).
fn census(mut ctx: ComponentContext) -> ComponentResult {
    let mut text = String::new();
    // The descriptors this process holds, before it touches any.
    let fds: Vec<String> = (0..4096)
        // SAFETY: F_GETFD only reads the descriptor's flags.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
        .map(|fd: i32| fd.to_string())
        .collect();
    text += &format!("fds={}\n", fds.join(","));
    let mut report = ctx.client_on::<LogAppend>("census-report")?;
    // A channel that exists in the system, between other components.
    let e = ctx.client_on::<LogAppend>("probe-store").unwrap_err();
    text += &format!("undeclared={e}\n");
    // An interface it has no channel for at all.
    let e = ctx.client::<Pmu>().unwrap_err();
    text += &format!("no-pmu={e}\n");
    // Its own LogAppend channel to the store, abused with a Pmu frame.
    let mut raw = ctx.take_endpoint("census-store")?;
    let mut frame_bytes = Vec::new();
    frame::encode_into(
        &mut frame_bytes,
        Kind::Call,
        Pmu::ID,
        7,
        &pmu_api::Request::Capabilities,
    )?;
    raw.send_raw(&frame_bytes)?;
    let answer = raw.recv_raw(Some(LONG))?;
    let f = frame::parse(&answer, answer.len())?;
    let rejection: Rejection = frame::decode_payload(f.payload)?;
    text += &format!(
        "raw-kind={:?}\nraw-id={}\nraw={rejection}\n",
        f.kind, f.request_id
    );
    // Binding that endpoint as another interface's client.
    let e = Client::<Pmu>::new(raw).unwrap_err();
    text += &format!("bind={e}\n");
    send_report(&mut report, &text)
}

/// Says it is about to open a file, then opens one (it has no file capability).
fn opener(mut ctx: ComponentContext) -> ComponentResult {
    let mut report = ctx.client_on::<LogAppend>("opener-report")?;
    send_report(&mut report, "about to open /etc/hostname")?;
    let opened = std::fs::File::open("/etc/hostname").is_ok();
    send_report(&mut report, &format!("opened={opened}"))
}

/// Holds `log-dir:read`: reads a file there, then tries to create one.
fn reader(mut ctx: ComponentContext) -> ComponentResult {
    let mut report = ctx.client_on::<LogAppend>("reader-report")?;
    let dir = ctx
        .resource("log-dir")
        .ok_or("no log-dir resource")?
        .to_owned();
    let text = std::fs::read_to_string(dir.join("hello.txt"))?;
    send_report(&mut report, &format!("read={text}"))?;
    let created = std::fs::File::create(dir.join("new.txt")).is_ok();
    send_report(&mut report, &format!("created={created}"))
}

/// Counts appends; panics on a record of type 0xDEAD.
fn crashy_log(mut ctx: ComponentContext) -> ComponentResult {
    let mut server = ctx.server::<LogAppend>()?;
    let mut n = 0u64;
    server.serve(|req| match req {
        log_append_api::Request::Append { records } => {
            if records.iter().any(|r| r.record_type == 0xDEAD) {
                panic!("asked to crash");
            }
            n += records.len() as u64;
            Ok(log_append_api::Reply::Appended(Ack {
                accepted: n,
                durable: n,
            }))
        }
        _ => Err(LogAppendError::Storage {
            what: "unsupported".into(),
        }),
    })?;
    Ok(())
}

/// A thread of its own (so glibc gives it its own malloc arena) allocates
/// a megabyte in 64 KiB blocks and frees it, which makes glibc shrink that
/// arena's heap; then reports.
fn trimmer(mut ctx: ComponentContext) -> ComponentResult {
    let mut report = ctx.client_on::<LogAppend>("trimmer-report")?;
    let freed = std::thread::spawn(|| {
        let blocks: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 64 << 10]).collect();
        let n: usize = blocks.iter().map(|b| b.len()).sum();
        drop(blocks);
        n
    })
    .join()
    .map_err(|_| "the allocating thread panicked")?;
    send_report(&mut report, &format!("freed={freed}"))
}

fn quitter(_ctx: ComponentContext) -> ComponentResult {
    Err("deliberate failure".into())
}

/// Runs until asked to stop.
fn idler(ctx: ComponentContext) -> ComponentResult {
    if ctx.channels().next().is_some() {
        return Err("the control channel was handed to the component".into());
    }
    while !ctx.shutdown().is_requested() {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

// -------------------------------------------------------------------- tests

fn undeclared_channel_cannot_be_used(registry: &Registry, mode: Mode) {
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain("d-census", &["census"], vec![], RestartPolicy::Never),
            domain("d-store", &["mem-log"], vec![], RestartPolicy::Never),
        ],
        channels: vec![
            channel("census-report", "LogAppend", "census", "probe"),
            channel("census-store", "LogAppend", "census", "mem-log"),
            channel("probe-store", "LogAppend", "probe", "mem-log"),
        ],
    };
    let (rt, mut probe) = start(&graph, registry, mode, BTreeMap::new());
    let mut reports = probe.server_on::<LogAppend>("census-report").unwrap();
    let report = next_report(&mut reports);

    assert!(
        field(&report, "undeclared").contains("component `census` has no channel `probe-store`"),
        "{report}"
    );
    assert!(
        field(&report, "no-pmu").contains("component `census` has no Pmu channel as client"),
        "{report}"
    );
    assert_eq!(field(&report, "raw-kind"), "Reject", "{report}");
    assert_eq!(field(&report, "raw-id"), "7", "{report}");
    assert_eq!(
        field(&report, "raw"),
        "channel carries LogAppend (id 1) but the message is for Pmu (id 3)"
    );
    assert_eq!(
        field(&report, "bind"),
        "channel `census-store` carries LogAppend, not Pmu"
    );
    if mode == Mode::Processes {
        // stdin, stdout, stderr, the control socket, and its two endpoints:
        // nothing of the store's or the probe's other channels.
        assert_eq!(field(&report, "fds"), "0,1,2,3,4,5", "{report}");
    }

    // The store still serves its declared client normally.
    let mut store = probe.client_on::<LogAppend>("probe-store").unwrap();
    let reply = store
        .call(&log_append_api::Request::Append {
            records: vec![Record {
                record_type: 3,
                timepoint: None,
                payload: vec![1],
            }],
        })
        .unwrap()
        .unwrap();
    assert_eq!(reply.ack().accepted, 1);
    drop((store, reports, probe));
    let mut w = Watch::new(&rt);
    assert_eq!(w.exited("d-census", 0), DomainOutcome::Finished);
    assert_eq!(w.exited("d-store", 0), DomainOutcome::Finished);
    rt.shutdown(LONG).unwrap();
}

/// glibc shrinks a thread arena's heap when enough of it is freed, and the
/// first time it does it reads /proc/sys/vm/overcommit_memory: an `openat`
/// that no domain may make. Seen as a `replay` domain killed by SIGSYS at a
/// random moment (which thread's arena shrinks first depends on timing);
/// here made to happen on purpose.
fn freeing_memory_survives(registry: &Registry) {
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain("d-trim", &["trimmer"], vec![], RestartPolicy::Never),
        ],
        channels: vec![channel("trimmer-report", "LogAppend", "trimmer", "probe")],
    };
    let (rt, mut probe) = start(&graph, registry, Mode::Processes, BTreeMap::new());
    let mut w = Watch::new(&rt);
    let mut reports = probe.server_on::<LogAppend>("trimmer-report").unwrap();
    assert_eq!(
        next_report(&mut reports),
        format!("freed={}", 16 * (64 << 10))
    );
    assert_eq!(w.exited("d-trim", 0), DomainOutcome::Finished);
    rt.shutdown(LONG).unwrap();
}

fn opener_graph() -> SystemGraph {
    SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain("d-rogue", &["opener"], vec![], RestartPolicy::Never),
        ],
        channels: vec![channel("opener-report", "LogAppend", "opener", "probe")],
    }
}

fn forbidden_syscall_kills_the_domain(registry: &Registry) {
    let (rt, mut probe) = start(&opener_graph(), registry, Mode::Processes, BTreeMap::new());
    let mut w = Watch::new(&rt);
    let mut reports = probe.server_on::<LogAppend>("opener-report").unwrap();
    // It ran (the sandbox let it talk over its channel) ...
    assert_eq!(next_report(&mut reports), "about to open /etc/hostname");
    // ... and died at the open.
    let outcome = w.exited("d-rogue", 0);
    assert_eq!(
        outcome,
        DomainOutcome::Killed {
            signal: libc::SIGSYS
        }
    );
    let event = w.expect("the crash report", |e| {
        matches!(e, SupervisorEvent::Exited { .. })
    });
    assert_eq!(
        event.to_string(),
        "domain `d-rogue` killed by SIGSYS (seccomp: forbidden syscall)"
    );
    w.expect(
        "d-rogue down",
        |e| matches!(e, SupervisorEvent::Down { domain, failed: true } if domain == "d-rogue"),
    );
    // Its end of the channel is closed now that it is down for good.
    let e = reports.recv_timeout(LONG).unwrap_err();
    assert!(matches!(e, IpcError::Disconnected { .. }), "{e}");
    rt.shutdown(LONG).unwrap();
}

/// Run `f` with this process's stderr (and so its domain processes') going
/// to a pipe; returns what was written. The harness runs tests one at a time.
fn capture_stderr(f: impl FnOnce()) -> String {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded; both descriptors are ours alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: dup/dup2 on descriptors this process owns.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    // SAFETY: as above.
    unsafe { libc::dup2(write_end.as_raw_fd(), 2) };
    drop(write_end);
    let result = catch_unwind(AssertUnwindSafe(f));
    // SAFETY: restore stderr; `saved` is ours.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut text = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut text)
        .unwrap();
    eprint!("{text}");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    text
}

fn report_mode_names_the_syscall(registry: &Registry) {
    let stderr = capture_stderr(|| {
        let (rt, mut probe) = start_with(
            &opener_graph(),
            registry,
            Mode::Processes,
            BTreeMap::new(),
            OnViolation::Report,
        );
        let mut w = Watch::new(&rt);
        let mut reports = probe.server_on::<LogAppend>("opener-report").unwrap();
        assert_eq!(next_report(&mut reports), "about to open /etc/hostname");
        assert_eq!(
            w.exited("d-rogue", 0),
            DomainOutcome::Killed {
                signal: libc::SIGSYS
            }
        );
        drop((reports, probe));
        rt.shutdown(LONG).unwrap();
    });
    assert!(
        stderr.contains("motion domain `d-rogue`: seccomp: forbidden syscall 257 (openat)"),
        "{stderr}"
    );
}

fn unsandboxed_opener_survives(registry: &Registry) {
    // The same component, threaded (no seccomp): the open succeeds, so the
    // kill above is the filter's doing.
    let (rt, mut probe) = start(&opener_graph(), registry, Mode::Threads, BTreeMap::new());
    let mut w = Watch::new(&rt);
    let mut reports = probe.server_on::<LogAppend>("opener-report").unwrap();
    assert_eq!(next_report(&mut reports), "about to open /etc/hostname");
    assert_eq!(next_report(&mut reports), "opened=true");
    assert_eq!(w.exited("d-rogue", 0), DomainOutcome::Finished);
    rt.shutdown(LONG).unwrap();
}

fn read_only_capability(registry: &Registry) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from the log dir").unwrap();
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain(
                "d-reader",
                &["reader"],
                vec![Capability::LogDir(Access::Read)],
                RestartPolicy::Never,
            ),
        ],
        channels: vec![channel("reader-report", "LogAppend", "reader", "probe")],
    };
    let resources = BTreeMap::from([("log-dir".to_string(), dir.path().to_owned())]);
    let (rt, mut probe) = start(&graph, registry, Mode::Processes, resources);
    let mut w = Watch::new(&rt);
    let mut reports = probe.server_on::<LogAppend>("reader-report").unwrap();
    assert_eq!(next_report(&mut reports), "read=hello from the log dir");
    assert_eq!(
        w.exited("d-reader", 0),
        DomainOutcome::Killed {
            signal: libc::SIGSYS
        }
    );
    assert!(!dir.path().join("new.txt").exists());
    rt.shutdown(LONG).unwrap();
}

/// Drive the mem-log store through both interfaces and write down every
/// answer; the transcript must not depend on the transport.
fn round_trip_transcript(registry: &Registry, mode: Mode) -> Vec<String> {
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain("d-store", &["mem-log"], vec![], RestartPolicy::Never),
        ],
        channels: vec![
            channel("probe-store", "LogAppend", "probe", "mem-log"),
            channel("probe-read", "LogRead", "probe", "mem-log"),
        ],
    };
    let (rt, mut probe) = start(&graph, registry, mode, BTreeMap::new());
    let mut t = Vec::new();

    let records: Vec<Record> = (0..1000u64)
        .map(|i| Record {
            record_type: 1 + (i % 5) as u16,
            timepoint: (i % 10 == 0).then_some(Timepoint {
                vcpu: 0,
                branches: i * 3,
                rip: 0x1000 + i,
                rcx: 0,
            }),
            payload: i.to_le_bytes()[..(i % 9) as usize].to_vec(),
        })
        .collect();
    let mut appender = Appender::new(
        probe.client_on::<LogAppend>("probe-store").unwrap(),
        BatchLimits {
            max_records: 64,
            max_bytes: 4096,
            window: 4,
        },
    );
    for r in &records {
        appender.push(r.clone()).unwrap();
    }
    let ack = appender.flush().unwrap();
    assert_eq!(
        ack,
        Ack {
            accepted: 1000,
            durable: 1000
        }
    );
    t.push(format!("flush {ack:?}"));
    t.push(format!("seal {:?}", appender.seal().unwrap()));

    let mut raw = probe.take_endpoint("probe-read").unwrap();
    raw.send_raw(b"CM\x01\x01garbage").unwrap();
    let answer = raw.recv_raw(Some(LONG)).unwrap();
    let f = frame::parse(&answer, answer.len()).unwrap();
    t.push(format!(
        "garbage -> {:?} {:?}",
        f.kind,
        frame::decode_payload::<Rejection>(f.payload).unwrap()
    ));
    let mut reader = Client::<LogRead>::new(raw).unwrap();
    use log_read_api::Request as R;
    let tp = Timepoint {
        vcpu: 0,
        branches: 1500,
        rip: 0,
        rcx: 0,
    };
    for req in [
        R::Read {
            from: 0,
            max_records: 1,
        },
        R::Open { log: "nope".into() },
        R::Open { log: "mem".into() },
        R::Header,
        R::Read {
            from: 0,
            max_records: 3,
        },
        R::Read {
            from: 998,
            max_records: 100,
        },
        R::Read {
            from: 5000,
            max_records: 1,
        },
        R::Seek(SeekTarget::Record(500)),
        R::Seek(SeekTarget::Timepoint(tp)),
        R::Verify,
    ] {
        let reply = reader.call(&req).unwrap();
        t.push(format!("{req:?} -> {reply:?}"));
    }
    // Everything appended reads back, in order.
    let mut back = Vec::new();
    while back.len() < records.len() {
        let r = reader
            .call(&R::Read {
                from: back.len() as u64,
                max_records: 300,
            })
            .unwrap()
            .unwrap();
        let log_read_api::Reply::Records { records, .. } = r else {
            panic!("{r:?}")
        };
        back.extend(records);
    }
    assert_eq!(back, records);

    // The log is sealed: appending is refused, with a typed error.
    let mut writer = appender.into_client().unwrap();
    let refused = writer.call(&log_append_api::Request::Append {
        records: vec![records[0].clone()],
    });
    t.push(format!("append after seal -> {refused:?}"));
    drop((reader, writer, probe));
    let mut w = Watch::new(&rt);
    assert_eq!(w.exited("d-store", 0), DomainOutcome::Finished);
    rt.shutdown(LONG).unwrap();
    t
}

fn round_trip_same_in_both_modes(registry: &Registry) {
    let threaded = round_trip_transcript(registry, Mode::Threads);
    let processes = round_trip_transcript(registry, Mode::Processes);
    assert_eq!(threaded, processes);
    let text = processes.join("\n");
    for expected in [
        "flush Ack { accepted: 1000, durable: 1000 }",
        "garbage -> Reject Truncated { len: 11 }",
        "Err(NotOpen)",
        "Err(NoSuchLog",
        "Opened(LogSummary { records: 1000, sealed: true })",
        "Read { from: 998, max_records: 100 } -> Ok(Records { first: 998",
        "end: true",
        "Err(OutOfRange { from: 5000, records: 1000 })",
        "Position { record: 500 }",
        "Position { record: 500 }",
        "Verified(VerifyReport { records: 1000, first_bad: None })",
        "append after seal -> Ok(Err(Sealed))",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

fn restart_keeps_channels(registry: &Registry, mode: Mode) {
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain(
                "d-crashy",
                &["crashy-log"],
                vec![],
                RestartPolicy::OnFailure { max_restarts: 1 },
            ),
        ],
        channels: vec![channel("probe-crashy", "LogAppend", "probe", "crashy-log")],
    };
    let (rt, mut probe) = start(&graph, registry, mode, BTreeMap::new());
    let mut w = Watch::new(&rt);
    let mut c = probe.client_on::<LogAppend>("probe-crashy").unwrap();
    let append = |ty: u16| log_append_api::Request::Append {
        records: vec![Record {
            record_type: ty,
            timepoint: None,
            payload: vec![],
        }],
    };
    let accepted = |c: &mut Client<LogAppend>| c.call(&append(1)).unwrap().unwrap().ack().accepted;

    assert_eq!(accepted(&mut c), 1);
    assert_eq!(accepted(&mut c), 2);
    // The call that crashes it gets no reply.
    let e = c
        .call_timeout(&append(0xDEAD), Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(e, IpcError::Timeout { .. }), "{e}");
    let outcome = w.exited("d-crashy", 0);
    assert_eq!(
        outcome,
        DomainOutcome::Panicked {
            component: Some("crashy-log".into()),
            message: "asked to crash".into()
        }
    );
    w.expect("a restart", |e| {
        matches!(
            e,
            SupervisorEvent::Restarting {
                restart: 1,
                max_restarts: Some(1),
                ..
            }
        )
    });
    w.expect("run 1 started", |e| {
        matches!(e, SupervisorEvent::Started { generation: 1, .. })
    });
    // Same channel, new run: its count starts afresh.
    assert_eq!(accepted(&mut c), 1);
    let _ = c
        .call_timeout(&append(0xDEAD), Duration::from_millis(500))
        .unwrap_err();
    assert!(w.exited("d-crashy", 1).is_failure());
    w.expect("d-crashy down", |e| {
        matches!(e, SupervisorEvent::Down { failed: true, .. })
    });
    // No restarts left: the channel is closed.
    let e = c.call_timeout(&append(1), LONG).unwrap_err();
    assert!(matches!(e, IpcError::Disconnected { .. }), "{e}");
    assert!(
        !w.seen
            .iter()
            .any(|e| matches!(e, SupervisorEvent::Started { generation: 2, .. })),
        "restarted beyond the policy"
    );
    rt.shutdown(LONG).unwrap();
}

fn failure_health_shutdown(registry: &Registry, mode: Mode) {
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain("d-idle", &["idler"], vec![], RestartPolicy::Never),
            domain("d-quit", &["quitter"], vec![], RestartPolicy::Never),
        ],
        // The runtime serves this one itself (the domain's control channel):
        // `idler` gets no endpoint for it.
        channels: vec![channel("supervise-idle", "Supervisor", "probe", "idler")],
    };
    let (rt, probe) = start(&graph, registry, mode, BTreeMap::new());
    assert_eq!(
        probe.channels().count(),
        0,
        "the runtime drives supervise-idle"
    );
    let mut w = Watch::new(&rt);
    let outcome = w.exited("d-quit", 0);
    let DomainOutcome::Failed {
        component,
        error,
        exit_code,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(component.as_deref(), Some("quitter"));
    assert_eq!(error, "deliberate failure");
    assert_eq!(*exit_code, (mode == Mode::Processes).then_some(1));
    let event = w.expect(
        "d-quit exit",
        |e| matches!(e, SupervisorEvent::Exited { domain, .. } if domain == "d-quit"),
    );
    let expected = match mode {
        Mode::Processes => {
            "domain `d-quit` failed (exit status 1): component `quitter`: deliberate failure"
        }
        Mode::Threads => "domain `d-quit` failed: component `quitter`: deliberate failure",
    };
    assert_eq!(event.to_string(), expected);

    w.expect(
        "d-idle started",
        |e| matches!(e, SupervisorEvent::Started { domain, .. } if domain == "d-idle"),
    );
    rt.ping("d-idle").unwrap();
    let health = rt.health("d-idle").unwrap();
    assert_eq!(health.domain, "d-idle");
    assert_eq!(health.components.len(), 1);
    assert_eq!(health.components[0].name, "idler");
    assert_eq!(
        health.components[0].state,
        supervisor_api::ComponentState::Running
    );
    match mode {
        Mode::Processes => assert_ne!(health.pid, std::process::id()),
        Mode::Threads => assert_eq!(health.pid, std::process::id()),
    }
    let e = rt.ping("d-quit").unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");

    let events = rt.events();
    rt.shutdown(LONG).unwrap();
    let rest: Vec<_> = events.try_iter().collect();
    assert!(
        rest.iter().any(|e| matches!(e, SupervisorEvent::Exited { domain, outcome: DomainOutcome::Finished, .. } if domain == "d-idle")),
        "{rest:?}"
    );
}

/// A terminal's Ctrl-C goes to the whole foreground process group, domain
/// processes included: they must ignore SIGINT, SIGQUIT and SIGTERM and stop
/// only when the runtime tells them (`motion record` seals its log first).
fn terminal_signals_ignored(registry: &Registry) {
    let graph = SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            host(),
            domain("d-idle", &["idler"], vec![], RestartPolicy::Never),
        ],
        channels: vec![],
    };
    let (rt, _probe) = start(&graph, registry, Mode::Processes, BTreeMap::new());
    let mut w = Watch::new(&rt);
    let started = w.expect(
        "d-idle started",
        |e| matches!(e, SupervisorEvent::Started { domain, .. } if domain == "d-idle"),
    );
    let SupervisorEvent::Started { pid: Some(pid), .. } = started else {
        panic!("no pid in {started:?}")
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("SigIgn in /proc/PID/status");
    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGTERM, "SIGTERM"),
    ] {
        assert_ne!(
            ignored & (1 << (sig - 1)),
            0,
            "{name} not ignored (SigIgn {ignored:#x})"
        );
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: kill takes integers; `pid` is the runtime's unreaped child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {name}");
    }
    std::thread::sleep(Duration::from_millis(200));
    rt.ping("d-idle")
        .expect("the domain survives SIGINT, SIGQUIT and SIGTERM");
    let events = rt.events();
    rt.shutdown(LONG).unwrap();
    let rest: Vec<_> = events.try_iter().collect();
    assert!(
        rest.iter().any(|e| matches!(e, SupervisorEvent::Exited { domain, outcome: DomainOutcome::Finished, .. } if domain == "d-idle")),
        "the runtime stops it cleanly: {rest:?}"
    );
}

fn bench_paths_count(registry: &Registry) {
    // Not a timing test: the bench's cross-process path runs and every record
    // comes back acknowledged durable (the bench checks the count itself).
    let bench = motion_runtime::bench::AppendBench {
        records: 20_000,
        ..Default::default()
    };
    for mode in [Mode::Threads, Mode::Processes] {
        let r = motion_runtime::bench::run_over_runtime(registry, mode, &bench).unwrap();
        assert_eq!(r.records, 20_000);
    }
}
