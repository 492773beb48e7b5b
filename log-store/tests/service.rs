//! The log-store component's sessions over the real motion-ipc transports:
//! a recording written through `LogAppend` (with `Begin`), read back,
//! sought and verified through `LogRead`.

use log_append_api::{Appender, BatchLimits, LogAppend, LogAppendError};
use log_read_api::{LogRead, LogReadError, Reply, Request, SeekTarget};
use log_store::sample;
use log_store::service::{AppendSession, ReadSession, serve_append, serve_read};
use motion_ipc::endpoint::Transport;
use motion_ipc::{Client, Endpoint, Server};
use motion_records::Record;
use motion_records::session::{BEGIN_TYPE_ID, Begin, DurabilityRequest};

fn wire(r: &Record) -> log_append_api::Record {
    log_append_api::Record {
        record_type: r.record_type().id(),
        timepoint: r.timepoint().copied(),
        payload: r.to_payload().unwrap(),
    }
}

fn begin(log: &str, durability: DurabilityRequest, resume: bool) -> log_append_api::Record {
    log_append_api::Record {
        record_type: BEGIN_TYPE_ID,
        timepoint: None,
        payload: Begin {
            log: log.into(),
            machine: sample::machine(),
            durability,
            resume,
        }
        .to_payload(),
    }
}

fn append_server(
    dir: &std::path::Path,
    transport: Transport,
) -> (Client<LogAppend>, std::thread::JoinHandle<()>) {
    let (c, s) =
        Endpoint::pair_for::<LogAppend>("record", "vm-monitor", "log-store", transport).unwrap();
    let dir = dir.to_path_buf();
    let h = std::thread::spawn(move || {
        let mut server = Server::<LogAppend>::new(s).unwrap();
        serve_append(&mut server, &mut AppendSession::new(dir)).unwrap();
    });
    (Client::new(c).unwrap(), h)
}

fn read_client(dir: &std::path::Path) -> (Client<LogRead>, std::thread::JoinHandle<()>) {
    let (c, s) = Endpoint::pair_for::<LogRead>(
        "replay-log",
        "replay-controller",
        "log-store",
        Transport::InProcess,
    )
    .unwrap();
    let dir = dir.to_path_buf();
    let h = std::thread::spawn(move || {
        let mut server = Server::<LogRead>::new(s).unwrap();
        serve_read(&mut server, &mut ReadSession::new(dir)).unwrap();
    });
    (Client::new(c).unwrap(), h)
}

#[test]
fn record_over_log_append_then_read_seek_verify_over_log_read() {
    for transport in [Transport::InProcess, Transport::Seqpacket] {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..20_000).map(|i| sample::mixed(21, i)).collect();
        let (client, h) = append_server(dir.path(), transport);
        let mut app = Appender::new(client, BatchLimits::default());
        app.push(begin(
            "run.motionlog",
            DurabilityRequest::IntervalMs(5),
            false,
        ))
        .unwrap();
        for r in &records {
            app.push(wire(r)).unwrap();
        }
        let ack = app.flush().unwrap();
        assert_eq!((ack.accepted, ack.durable), (20_000, 20_000));
        let ack = app.seal().unwrap();
        assert_eq!(ack.durable, 20_000);
        drop(app);
        h.join().unwrap();

        let (mut rc, h) = read_client(dir.path());
        let opened = rc
            .call(&Request::Open {
                log: "run.motionlog".into(),
            })
            .unwrap()
            .unwrap();
        assert!(matches!(opened, Reply::Opened(s) if s.records == 20_000 && s.sealed));
        let Reply::Header(hd) = rc.call(&Request::Header).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((hd.backend.as_str(), hd.vcpus), ("soft", 2));
        assert_eq!(
            hd.cpuid_policy,
            motion_records::session::cpuid_policy_id(&sample::machine().cpuid)
        );

        let mut got = Vec::new();
        let mut from = 0;
        loop {
            let Reply::Records {
                first,
                records: batch,
                end,
            } = rc
                .call(&Request::Read {
                    from,
                    max_records: 3000,
                })
                .unwrap()
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(first, from);
            from += batch.len() as u64;
            for w in batch {
                let r = Record::decode(w.record_type, &w.payload).unwrap();
                assert_eq!(w.timepoint.as_ref(), r.timepoint());
                got.push(r);
            }
            if end {
                break;
            }
        }
        assert_eq!(got, records);

        let tp = *records[12_345..]
            .iter()
            .find_map(|r| r.timepoint())
            .unwrap();
        let Reply::Position { record } = rc
            .call(&Request::Seek(SeekTarget::Timepoint(tp)))
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        assert!(record <= 12_345 + 64, "{record}");
        assert_eq!(records[record as usize].timepoint().unwrap().vcpu, tp.vcpu);
        assert!(matches!(
            rc.call(&Request::Seek(SeekTarget::Record(20_001))).unwrap(),
            Err(LogReadError::OutOfRange { .. })
        ));
        let Reply::Verified(v) = rc.call(&Request::Verify).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((v.records, v.first_bad), (20_000, None));
        assert!(matches!(
            rc.call(&Request::Open {
                log: "../etc/passwd".into()
            })
            .unwrap(),
            Err(LogReadError::BadName { .. })
        ));
        drop(rc);
        h.join().unwrap();
    }
}

#[test]
fn sessions_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    // No Begin.
    let (client, h) = append_server(dir.path(), Transport::InProcess);
    let mut c = client;
    let r = c
        .call(&log_append_api::Request::Append {
            records: vec![wire(&sample::small(0, 0))],
        })
        .unwrap();
    assert!(
        matches!(r, Err(LogAppendError::InvalidRecord { index: 0, .. })),
        "{r:?}"
    );
    // A name that leaves the directory.
    let r = c
        .call(&log_append_api::Request::Append {
            records: vec![begin("../x", DurabilityRequest::EveryBatch, false)],
        })
        .unwrap();
    assert!(
        matches!(r, Err(LogAppendError::InvalidRecord { index: 0, .. })),
        "{r:?}"
    );
    // A good start; then a record whose payload lies about its type.
    let mut bad = wire(&sample::small(0, 1));
    bad.payload = vec![0xff; 3];
    bad.record_type = motion_records::RecordType::Rdtsc.id();
    let r = c
        .call(&log_append_api::Request::Append {
            records: vec![
                begin("a.motionlog", DurabilityRequest::EveryBatch, false),
                wire(&sample::small(0, 0)),
                bad,
            ],
        })
        .unwrap();
    assert!(
        matches!(r, Err(LogAppendError::InvalidRecord { index: 2, .. })),
        "{r:?}"
    );
    let r = c
        .call(&log_append_api::Request::Append {
            records: vec![wire(&sample::small(0, 0))],
        })
        .unwrap()
        .unwrap();
    assert_eq!(r.ack().durable, 1);
    assert!(matches!(
        c.call(&log_append_api::Request::Seal).unwrap(),
        Ok(log_append_api::Reply::Sealed(_))
    ));
    let r = c
        .call(&log_append_api::Request::Append {
            records: vec![wire(&sample::small(0, 0))],
        })
        .unwrap();
    assert_eq!(r, Err(LogAppendError::Sealed));
    drop(c);
    h.join().unwrap();

    // A second recording may not overwrite it; resume of a sealed log is refused too.
    let (mut c, h) = append_server(dir.path(), Transport::InProcess);
    for resume in [false, true] {
        let r = c
            .call(&log_append_api::Request::Append {
                records: vec![begin("a.motionlog", DurabilityRequest::EveryBatch, resume)],
            })
            .unwrap();
        assert!(
            matches!(
                r,
                Err(LogAppendError::Storage { .. } | LogAppendError::Sealed)
            ),
            "{r:?}"
        );
    }
    drop(c);
    h.join().unwrap();
}

#[test]
fn a_store_restarted_mid_recording_resumes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Record> = (0..3000).map(|i| sample::mixed(22, i)).collect();
    let (client, h) = append_server(dir.path(), Transport::InProcess);
    let mut app = Appender::new(client, BatchLimits::default());
    app.push(begin("r.motionlog", DurabilityRequest::EveryBatch, true))
        .unwrap();
    for r in &records[..1000] {
        app.push(wire(r)).unwrap();
    }
    assert_eq!(app.flush().unwrap().durable, 1000);
    drop(app); // the monitor's side goes away: the log stays unsealed
    h.join().unwrap();

    let (client, h) = append_server(dir.path(), Transport::InProcess);
    let mut app = Appender::new(client, BatchLimits::default());
    app.push(begin("r.motionlog", DurabilityRequest::EveryBatch, true))
        .unwrap();
    for r in &records[1000..] {
        app.push(wire(r)).unwrap();
    }
    assert_eq!(app.seal().unwrap().durable, 3000);
    drop(app);
    h.join().unwrap();
    let r = log_store::LogReader::open(dir.path().join("r.motionlog")).unwrap();
    let got: Vec<Record> = r.records().map(|x| x.unwrap().1).collect();
    assert_eq!(got, records);
}

#[test]
fn a_recording_opened_with_create_reads_back_with_its_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (client, h) = append_server(dir.path(), Transport::InProcess);
    let mut app = Appender::new(client, BatchLimits::default());
    let create = |log: &str| log_append_api::CreateLog {
        log: log.into(),
        machine: sample::machine(),
        durability: DurabilityRequest::EveryBatch,
        resume: false,
    };
    assert_eq!(app.create(create("c.motionlog")).unwrap().accepted, 0);
    let records: Vec<Record> = (0..100).map(|i| sample::mixed(3, i)).collect();
    for r in &records {
        app.push(wire(r)).unwrap();
    }
    assert_eq!(app.seal().unwrap().durable, 100);
    drop(app);
    h.join().unwrap();

    // A second Create on a session, or one naming an existing log, is refused.
    let (client, h) = append_server(dir.path(), Transport::InProcess);
    let mut app = Appender::new(client, BatchLimits::default());
    assert!(app.create(create("c.motionlog")).is_err(), "the log exists");
    assert!(
        app.create(create("../escape.motionlog")).is_err(),
        "not a plain name"
    );
    app.create(create("d.motionlog")).unwrap();
    assert!(
        app.create(create("e.motionlog")).is_err(),
        "one log per session"
    );
    drop(app);
    h.join().unwrap();

    let (mut rc, h) = read_client(dir.path());
    let Reply::Opened(s) = rc
        .call(&Request::Open {
            log: "c.motionlog".into(),
        })
        .unwrap()
        .unwrap()
    else {
        panic!("open")
    };
    assert_eq!(s.records, 100);
    let Reply::Header(hd) = rc.call(&Request::Header).unwrap().unwrap() else {
        panic!("header")
    };
    assert_eq!(*hd.machine, sample::machine());
    drop(rc);
    h.join().unwrap();
}
