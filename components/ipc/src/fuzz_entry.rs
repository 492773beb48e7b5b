//! Entry functions for the fuzz targets in `components/ipc/fuzz` (one per
//! decoder), also run over a seeded random corpus by the normal tests. Each
//! feeds arbitrary bytes through the exact code a receiver runs, then checks
//! properties that must hold for anything accepted; a panic is a bug.

use crate::client::{Reply, decode_reply};
use crate::frame::{self, Kind};
use crate::interface::Interface;
use crate::server::decode_request;

/// The frame header checks.
pub fn frame(data: &[u8]) {
    let _ = frame::request_id_hint(data);
    if let Ok(f) = frame::parse(data, data.len()) {
        assert_eq!(f.payload.len() + frame::HEADER_SIZE, data.len());
    }
}

/// A server of `I` receiving `data`: either a request that re-encodes to a
/// frame decoding to the same request, or a rejection that the client
/// decodes back as that rejection for that request id.
pub fn server_receive<I: Interface>(data: &[u8]) {
    let mut buf = Vec::new();
    match decode_request::<I>(data, data.len()) {
        Ok(incoming) => {
            frame::encode_into(
                &mut buf,
                incoming.kind,
                I::ID,
                incoming.id,
                &incoming.request,
            )
            .expect("a request that decoded from one message re-encodes into one");
            let again = decode_request::<I>(&buf, buf.len()).expect("re-encoded request decodes");
            assert_eq!(again.id, incoming.id);
            assert_eq!(again.kind, incoming.kind);
            assert_eq!(
                format!("{:?}", again.request),
                format!("{:?}", incoming.request)
            );
        }
        Err((id, rejection)) => {
            frame::encode_into(&mut buf, Kind::Reject, I::ID, id, &rejection)
                .expect("a rejection fits in a message");
            match decode_reply::<I>(&buf, buf.len()) {
                Ok(Reply::Rejected(rid, r)) => {
                    assert_eq!(rid, id);
                    assert_eq!(r, rejection);
                }
                other => panic!("rejection frame decoded as {other:?}"),
            }
        }
    }
}

/// A client of `I` receiving `data` (a reply or a rejection).
pub fn client_receive<I: Interface>(data: &[u8]) {
    if let Ok(Reply::Response(id, Ok(response))) = decode_reply::<I>(data, data.len()) {
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, Kind::Reply, I::ID, id, &response)
            .expect("a response that decoded from one message re-encodes into one");
        match decode_reply::<I>(&buf, buf.len()) {
            Ok(Reply::Response(rid, Ok(again))) => {
                assert_eq!(rid, id);
                assert_eq!(format!("{again:?}"), format!("{response:?}"));
            }
            other => panic!("re-encoded response decoded as {other:?}"),
        }
    }
}
