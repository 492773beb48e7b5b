//! The log-store component under the real runtime: its domain is a separate,
//! seccomp-sandboxed process holding only `log-dir:write`, reached over
//! seqpacket channels, as `system.toml` declares it.
//!
//! * A recording goes in through `LogAppend` (with `Begin`) and comes back
//!   through `LogRead`, verified, with no syscall outside the filter.
//! * The log domain SIGKILLed mid-recording leaves a log that recovers,
//!   verifies and holds every record acknowledged before the kill.
//!
//! Domain processes are this test binary started again (harness = false).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use log_append_api::{Appender, BatchLimits, LogAppend, Record as WireRecord};
use log_read_api::{LogRead, Reply, Request};
use log_store::{LogReader, LogWriter, WriterConfig, sample};
use motion_ipc::ComponentContext;
use motion_records::Record;
use motion_records::session::{BEGIN_TYPE_ID, Begin, DurabilityRequest};
use motion_runtime::{
    Access, Capability, ChannelDesc, DomainDesc, Mode, Registry, RestartPolicy, Runtime,
    RuntimeConfig, SystemGraph,
};

const LONG: Duration = Duration::from_secs(20);

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("log-store", log_store::service::component_entry);
    r
}

fn main() -> ExitCode {
    let registry = registry();
    if let Some(code) = motion_runtime::run_domain_if_requested(&registry) {
        return code;
    }
    let tests: &[motion_e2e::harness::Test<Registry>] = &[
        (
            "sandboxed_log_store_records_reads_and_verifies",
            records_reads_and_verifies,
        ),
        (
            "killed_log_domain_keeps_every_acknowledged_record",
            killed_log_domain_keeps_acknowledged_records,
        ),
    ];
    motion_e2e::harness::run(&registry, tests, |_| None)
}

fn graph() -> SystemGraph {
    let channel = |name: &str, interface: &str| ChannelDesc {
        name: name.into(),
        interface: interface.into(),
        client: "probe".into(),
        server: "log-store".into(),
    };
    SystemGraph {
        supervisor: Some("host".into()),
        domains: vec![
            DomainDesc {
                name: "host".into(),
                components: vec!["probe".into()],
                grants: vec![],
                restart: RestartPolicy::Never,
            },
            DomainDesc {
                name: "log".into(),
                components: vec!["log-store".into()],
                grants: vec![Capability::LogDir(Access::Write)],
                restart: RestartPolicy::Never,
            },
        ],
        channels: vec![
            channel("record", "LogAppend"),
            channel("replay-log", "LogRead"),
        ],
    }
}

fn start(registry: &Registry, dir: &std::path::Path) -> (Runtime, ComponentContext) {
    let mut rt = Runtime::start(
        &graph(),
        registry,
        RuntimeConfig {
            mode: Mode::Processes,
            resources: BTreeMap::from([("log-dir".to_string(), dir.to_owned())]),
            ..RuntimeConfig::default()
        },
    )
    .expect("runtime starts");
    let probe = rt.take_host_context("probe").expect("probe context");
    (rt, probe)
}

fn wire(r: &Record) -> WireRecord {
    WireRecord {
        record_type: r.record_type().id(),
        timepoint: r.timepoint().copied(),
        payload: r.to_payload().unwrap(),
    }
}

fn begin(log: &str, durability: DurabilityRequest) -> WireRecord {
    WireRecord {
        record_type: BEGIN_TYPE_ID,
        timepoint: None,
        payload: Begin {
            log: log.into(),
            machine: sample::machine(),
            durability,
            resume: false,
        }
        .to_payload(),
    }
}

fn records_reads_and_verifies(registry: &Registry) {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mut probe) = start(registry, dir.path());
    let records: Vec<Record> = (0..20_000).map(|i| sample::mixed(31, i)).collect();
    let mut app = Appender::new(
        probe.client_on::<LogAppend>("record").unwrap(),
        BatchLimits::default(),
    );
    app.push(begin(
        "sandboxed.motionlog",
        DurabilityRequest::IntervalMs(5),
    ))
    .unwrap();
    for r in &records {
        app.push(wire(r)).unwrap();
    }
    let ack = app.seal().unwrap();
    assert_eq!(ack.durable, 20_000);

    let mut rc = probe.client_on::<LogRead>("replay-log").unwrap();
    let opened = rc
        .call(&Request::Open {
            log: "sandboxed.motionlog".into(),
        })
        .unwrap()
        .unwrap();
    assert!(matches!(opened, Reply::Opened(s) if s.records == 20_000 && s.sealed));
    let mut got = Vec::new();
    loop {
        let reply = rc
            .call(&Request::Read {
                from: got.len() as u64,
                max_records: 5000,
            })
            .unwrap()
            .unwrap();
        let Reply::Records {
            records: batch,
            end,
            ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        got.extend(
            batch
                .iter()
                .map(|w| Record::decode(w.record_type, &w.payload).unwrap()),
        );
        if end {
            break;
        }
    }
    assert_eq!(got, records);
    let Reply::Verified(v) = rc.call(&Request::Verify).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!((v.records, v.first_bad), (20_000, None));
    // The domain is alive (a forbidden syscall would have killed it).
    assert!(rt.ping("log").is_ok());
    drop((app, rc));
    rt.shutdown(LONG).unwrap();
    // And the file is what a local reader sees too.
    let r = LogReader::open(dir.path().join("sandboxed.motionlog")).unwrap();
    assert_eq!(r.record_count(), 20_000);
}

fn killed_log_domain_keeps_acknowledged_records(registry: &Registry) {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mut probe) = start(registry, dir.path());
    // The domain answers health requests once it runs.
    let deadline = Instant::now() + LONG;
    let pid = loop {
        match rt.health("log") {
            Ok(h) => break h.pid,
            Err(e) if Instant::now() > deadline => panic!("log domain never ran: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert_ne!(
        pid,
        std::process::id(),
        "the log domain is a process of its own"
    );
    let records: Vec<Record> = (0..200_000).map(|i| sample::mixed(32, i)).collect();
    let mut app = Appender::new(
        probe.client_on::<LogAppend>("record").unwrap(),
        BatchLimits {
            max_records: 100,
            window: 2,
            ..BatchLimits::default()
        },
    );
    app.push(begin("killed.motionlog", DurabilityRequest::EveryBatch))
        .unwrap();
    let mut killed = false;
    let mut acked = 0;
    for (i, r) in records.iter().enumerate() {
        if app.push(wire(r)).is_err() {
            break;
        }
        acked = acked.max(app.ack().durable);
        if !killed && i == 30_000 {
            // SAFETY-free: kill(2) through the libc wrapper takes plain integers.
            let rc = unsafe_kill(pid);
            assert_eq!(rc, 0, "kill the log domain");
            killed = true;
        }
    }
    assert!(killed);
    assert!(acked > 0, "some records were acknowledged before the kill");
    drop(app);
    rt.shutdown(LONG).ok();

    let path = dir.path().join("killed.motionlog");
    let (w, recovery) = LogWriter::recover(&path, WriterConfig::default()).unwrap();
    drop(w);
    let scan = log_store::verify_path(&path).unwrap();
    assert!(scan.is_intact(), "{:?}", scan.fault);
    let r = LogReader::open(&path).unwrap();
    assert!(
        r.record_count() >= acked,
        "{acked} acknowledged, {} kept ({recovery:?})",
        r.record_count()
    );
    for item in r.records() {
        let (i, rec) = item.unwrap();
        assert_eq!(rec, records[i as usize]);
    }
    eprintln!(
        "log domain killed: {acked} records acknowledged, {} kept",
        r.record_count()
    );
}

fn unsafe_kill(pid: u32) -> i32 {
    let pid = libc::pid_t::try_from(pid).unwrap_or(0);
    assert!(pid > 0);
    // SAFETY: kill(2) takes a pid and a signal number and touches no memory.
    unsafe { libc::kill(pid, libc::SIGKILL) }
}
