//! Client/server behaviour, run over both transports.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::endpoint::Transport;
use crate::frame::{self, Kind};
use crate::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CalcReq {
    Add(u32, u32),
    Echo(Vec<u8>),
    Huge(u32),
}

struct Calc;
impl Interface for Calc {
    const NAME: &'static str = "LogAppend";
    type Request = CalcReq;
    type Response = Result<Vec<u8>, String>;
}

struct Other;
impl Interface for Other {
    const NAME: &'static str = "Pmu";
    type Request = u64;
    type Response = u64;
}

fn transports() -> Vec<Transport> {
    vec![Transport::InProcess, Transport::Seqpacket]
}

fn handle(req: CalcReq) -> Result<Vec<u8>, String> {
    match req {
        CalcReq::Add(a, b) => a
            .checked_add(b)
            .map(|s| s.to_le_bytes().to_vec())
            .ok_or("overflow".into()),
        CalcReq::Echo(v) => Ok(v),
        CalcReq::Huge(n) => Ok(vec![1; n as usize]),
    }
}

/// Start a server thread; returns the client and the server's join handle
/// (yielding its rejected count).
fn start(t: Transport) -> (Client<Calc>, std::thread::JoinHandle<u64>) {
    let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", t).unwrap();
    let h = std::thread::spawn(move || {
        let mut server = Server::<Calc>::new(s).unwrap();
        server.serve(handle).unwrap();
        server.rejected()
    });
    (Client::new(c).unwrap(), h)
}

#[test]
fn calls_round_trip_and_disconnect_ends_the_server() {
    for t in transports() {
        let (mut c, h) = start(t);
        assert_eq!(
            c.call(&CalcReq::Add(2, 3)).unwrap(),
            Ok(5u32.to_le_bytes().to_vec())
        );
        assert_eq!(
            c.call(&CalcReq::Add(u32::MAX, 1)).unwrap(),
            Err("overflow".to_string())
        );
        assert_eq!(
            c.call(&CalcReq::Echo(vec![9; 1000])).unwrap(),
            Ok(vec![9; 1000])
        );
        drop(c);
        assert_eq!(h.join().unwrap(), 0, "{t:?}");
    }
}

#[test]
fn pipelined_calls_keep_their_ids_and_the_window_is_enforced() {
    for t in transports() {
        let (c, h) = start(t);
        let mut c = c.with_window(4);
        let ids: Vec<_> = (0..4)
            .map(|i| c.send(&CalcReq::Add(i, 100)).unwrap())
            .collect();
        assert!(matches!(
            c.send(&CalcReq::Add(0, 0)),
            Err(IpcError::WindowFull { .. })
        ));
        for (i, id) in ids.iter().enumerate() {
            let (rid, r) = c.recv().unwrap();
            assert_eq!(rid, *id);
            assert_eq!(r.unwrap(), (i as u32 + 100).to_le_bytes().to_vec());
        }
        assert!(matches!(c.recv(), Err(IpcError::NothingInFlight { .. })));
        // A call while others are in flight stashes their replies.
        let first = c.send(&CalcReq::Add(1, 1)).unwrap();
        assert_eq!(
            c.call(&CalcReq::Add(2, 2)).unwrap().unwrap(),
            4u32.to_le_bytes()
        );
        assert_eq!(c.recv().unwrap().0, first);
        drop(c);
        h.join().unwrap();
    }
}

#[test]
fn raw_frames_of_another_interface_are_refused_and_the_server_keeps_serving() {
    for t in transports() {
        let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", t).unwrap();
        let h = std::thread::spawn(move || {
            let mut server = Server::<Calc>::new(s).unwrap();
            server.serve(handle).unwrap();
            server.rejected()
        });
        let mut raw = c;
        let mut expect_rejection = |bytes: &[u8], check: &dyn Fn(&Rejection) -> bool| {
            raw.send_raw(bytes).unwrap();
            let reply = raw.recv_raw(Some(Duration::from_secs(10))).unwrap();
            let f = frame::parse(&reply, reply.len()).unwrap();
            assert_eq!(f.kind, Kind::Reject);
            let rej: Rejection = frame::decode_payload(f.payload).unwrap();
            assert!(check(&rej), "{t:?}: unexpected {rej}");
            f.request_id
        };
        // A well-formed `Other` request on the `Calc` channel.
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, Kind::Call, Other::ID, 41, &7u64).unwrap();
        let id = expect_rejection(
            &buf,
            &|r| matches!(r, Rejection::WrongInterface { expected, got } if *expected == Calc::ID && *got == Other::ID),
        );
        assert_eq!(id, 41);
        // The right interface id with a payload that is not a CalcReq.
        frame::encode_into(&mut buf, Kind::Call, Calc::ID, 42, &(99u8, 1u8)).unwrap();
        expect_rejection(&buf, &|r| matches!(r, Rejection::BadPayload { .. }));
        // Garbage, a truncated header, a reply sent to a server, an empty message.
        expect_rejection(b"definitely not a frame", &|r| {
            matches!(r, Rejection::BadMagic { .. })
        });
        expect_rejection(b"CM", &|r| matches!(r, Rejection::Truncated { len: 2 }));
        frame::encode_into(&mut buf, Kind::Reply, Calc::ID, 43, &CalcReq::Add(1, 2)).unwrap();
        expect_rejection(&buf, &|r| matches!(r, Rejection::BadKind { got: 3 }));
        expect_rejection(&[], &|r| matches!(r, Rejection::Truncated { len: 0 }));
        // Oversized.
        let mut big = vec![0u8; MAX_MESSAGE_SIZE + 1];
        big[..buf.len()].copy_from_slice(&buf);
        expect_rejection(&big, &|r| matches!(r, Rejection::Oversized { .. }));
        // And it still answers a proper call.
        let mut c = Client::<Calc>::new(raw).unwrap();
        assert_eq!(c.call(&CalcReq::Echo(vec![1, 2])).unwrap(), Ok(vec![1, 2]));
        drop(c);
        assert_eq!(h.join().unwrap(), 7, "{t:?}");
    }
}

#[test]
fn a_rejected_call_returns_a_typed_error_to_the_caller() {
    // A server that speaks `Calc` facing a client built for a different
    // payload type under the same interface name: the server cannot decode
    // and the client's call fails with `Rejected`, not a hang.
    struct Liar;
    impl Interface for Liar {
        const NAME: &'static str = "LogAppend";
        type Request = (String, String, String);
        type Response = Result<Vec<u8>, String>;
    }
    for t in transports() {
        let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", t).unwrap();
        let h = std::thread::spawn(move || Server::<Calc>::new(s).unwrap().serve(handle));
        let mut liar = Client::<Liar>::new(c).unwrap();
        let e = liar
            .call(&("a".repeat(3), "b".into(), "c".into()))
            .unwrap_err();
        assert!(
            matches!(&e, IpcError::Rejected { rejection: Rejection::BadPayload { .. }, request_id, .. } if *request_id == 1),
            "{e}"
        );
        assert!(e.to_string().contains("rejected request 1"), "{e}");
        drop(liar);
        h.join().unwrap().unwrap();
    }
}

#[test]
fn oversized_requests_and_responses_fail_cleanly() {
    for t in transports() {
        let (mut c, h) = start(t);
        let e = c
            .call(&CalcReq::Echo(vec![0; MAX_MESSAGE_SIZE]))
            .unwrap_err();
        assert!(matches!(e, IpcError::TooLarge { .. }), "{e}");
        let e = c.call(&CalcReq::Huge(MAX_MESSAGE_SIZE as u32)).unwrap_err();
        assert!(
            matches!(
                e,
                IpcError::Rejected {
                    rejection: Rejection::ResponseTooLarge { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(c.call(&CalcReq::Huge(3)).unwrap(), Ok(vec![1, 1, 1]));
        drop(c);
        h.join().unwrap();
    }
}

#[test]
fn endpoints_are_bound_to_their_interface_and_role() {
    let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", Transport::InProcess).unwrap();
    let e = Client::<Other>::new(c).unwrap_err();
    assert!(e.to_string().contains("carries LogAppend, not Pmu"), "{e}");
    let e = Client::<Calc>::new(s).unwrap_err();
    assert!(matches!(e, IpcError::WrongRole { .. }), "{e}");
}

#[test]
fn a_context_hands_out_only_declared_endpoints() {
    let (c1, _s1) =
        Endpoint::pair_for::<Calc>("to-bob", "alice", "bob", Transport::InProcess).unwrap();
    let (_c2, s2) =
        Endpoint::pair_for::<Calc>("to-carol", "dave", "carol", Transport::InProcess).unwrap();
    let mut ctx = ComponentContext::new(
        "alice",
        "d",
        vec![c1, s2],
        vec!["stdout".into()],
        BTreeMap::new(),
        ShutdownSignal::new(),
    );
    // carol's endpoint was withheld: alice cannot take it by any name.
    assert_eq!(ctx.channels().count(), 1);
    let e = ctx.client_on::<Calc>("to-carol").unwrap_err();
    assert!(e.to_string().contains("no channel `to-carol`"), "{e}");
    let e = ctx.client::<Other>().unwrap_err();
    assert!(matches!(e, IpcError::NotDeclared { .. }), "{e}");
    let e = ctx.server::<Calc>().unwrap_err();
    assert!(matches!(e, IpcError::NotDeclared { .. }), "{e}");
    assert!(ctx.client::<Calc>().is_ok());
    // Taken once: gone.
    assert!(ctx.client::<Calc>().is_err());
    assert!(ctx.has_grant("stdout") && !ctx.has_grant("kvm"));
}

#[test]
fn shutdown_interrupts_a_blocked_server() {
    for t in transports() {
        let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", t).unwrap();
        let stop = ShutdownSignal::new();
        let mut s = s;
        s.set_shutdown(stop.clone());
        let h = std::thread::spawn(move || Server::<Calc>::new(s).unwrap().serve(handle));
        std::thread::sleep(Duration::from_millis(30));
        stop.request();
        h.join().unwrap().unwrap();
        drop(c);
    }
}

#[test]
fn a_call_times_out_and_a_late_reply_is_dropped() {
    for t in transports() {
        let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", t).unwrap();
        let h = std::thread::spawn(move || {
            let mut server = Server::<Calc>::new(s).unwrap();
            let first = server.recv().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            server.reply(first.id, &Ok(vec![1])).unwrap();
            server.serve(handle).unwrap();
        });
        let mut c = Client::<Calc>::new(c).unwrap();
        let e = c
            .call_timeout(&CalcReq::Echo(vec![1]), Duration::from_millis(10))
            .unwrap_err();
        assert!(matches!(e, IpcError::Timeout { .. }), "{e}");
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.call(&CalcReq::Echo(vec![2])).unwrap(), Ok(vec![2]));
        drop(c);
        h.join().unwrap();
    }
}

#[test]
fn a_rejected_notification_does_not_fail_a_later_call() {
    for t in transports() {
        let (c, s) = Endpoint::pair_for::<Calc>("calc", "alice", "bob", t).unwrap();
        let h = std::thread::spawn(move || Server::<Calc>::new(s).unwrap().serve(handle));
        let c = Client::<Calc>::new(c).unwrap();
        // A notification whose payload is not a CalcReq (the typed API
        // cannot send one, so it goes raw on the same channel).
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, Kind::Notify, Calc::ID, 900, &(7u8, 7u8)).unwrap();
        let mut raw = c.into_endpoint();
        raw.send_raw(&buf).unwrap();
        let mut c = Client::<Calc>::new(raw).unwrap();
        assert_eq!(
            c.call(&CalcReq::Add(1, 2)).unwrap().unwrap(),
            3u32.to_le_bytes()
        );
        // The rejection is reported afterwards, naming the notification.
        let e = c.recv().unwrap_err();
        assert!(
            matches!(
                e,
                IpcError::Rejected {
                    request_id: 900,
                    ..
                }
            ),
            "{e}"
        );
        drop(c);
        h.join().unwrap().unwrap();
    }
}
