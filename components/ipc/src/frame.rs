//! The message frame: a fixed header, then a postcard payload.
//!
//! ```text
//! offset size field
//!   0     2   magic "CM"
//!   2     1   version (1)
//!   3     1   kind: 1 call, 2 notify, 3 reply, 4 rejection
//!   4     2   interface id (little-endian)
//!   6     2   flags, reserved: must be 0
//!   8     4   request id (little-endian; a reply echoes its call's id)
//!  12     4   payload length (little-endian); header + payload = the message
//!  16     …   postcard payload
//! ```
//!
//! There is no checksum: both transports are reliable and message-preserving
//! (a bounded in-memory queue, a `SOCK_SEQPACKET` socket), so a frame arrives
//! whole or not at all. What a frame can be is *hostile*, which is what
//! [`parse`] checks.

use serde::Serialize;
use serde::de::DeserializeOwned;
use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{IpcError, Rejection};
use crate::interface::InterfaceId;

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"CM";
/// Frame format version.
pub const VERSION: u8 = 1;
/// Size of [`FrameHeader`].
pub const HEADER_SIZE: usize = 16;
/// Largest message (header included) either transport carries. Sized so a
/// `LogAppend` batch of a few thousand small records, or a 64 KiB DMA payload,
/// fits in one message, and below the socket buffer the seqpacket transport
/// asks for (a datagram must fit the sender's buffer whole).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;
/// Largest postcard payload.
pub const MAX_PAYLOAD_SIZE: usize = MAX_MESSAGE_SIZE - HEADER_SIZE;

/// Identifies a call so its reply can be matched; wraps around.
pub type RequestId = u32;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A request that expects a reply.
    Call = 1,
    /// A request that expects no reply.
    Notify = 2,
    /// The answer to a call.
    Reply = 3,
    /// The receiver refused a message (payload: [`Rejection`]).
    Reject = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Call,
            2 => Kind::Notify,
            3 => Kind::Reply,
            4 => Kind::Reject,
            _ => return None,
        })
    }
}

/// The fixed header, byte for byte as on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    magic: [u8; 2],
    version: u8,
    kind: u8,
    interface: U16,
    flags: U16,
    request_id: U32,
    payload_len: U32,
}

const _: () = assert!(size_of::<FrameHeader>() == HEADER_SIZE);

/// A frame whose header has been checked; the payload is not decoded yet.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The message kind.
    pub kind: Kind,
    /// The interface the sender claims.
    pub interface: InterfaceId,
    /// The request id.
    pub request_id: RequestId,
    /// The postcard payload, exactly `payload_len` bytes.
    pub payload: &'a [u8],
}

/// Best-effort request id of a message whose header is bad, so a rejection
/// can still name the call it refuses (0 when not even that much arrived).
pub fn request_id_hint(bytes: &[u8]) -> RequestId {
    FrameHeader::read_from_prefix(bytes)
        .map(|(h, _)| h.request_id.get())
        .unwrap_or(0)
}

/// Check a message's header against the frame rules. `total_len` is the
/// message's real length, which a transport may know to exceed the bytes it
/// kept (`bytes`); anything over [`MAX_MESSAGE_SIZE`] is refused.
pub fn parse(bytes: &[u8], total_len: usize) -> Result<Frame<'_>, Rejection> {
    if total_len > MAX_MESSAGE_SIZE || bytes.len() > MAX_MESSAGE_SIZE {
        return Err(Rejection::Oversized {
            len: total_len.max(bytes.len()) as u64,
            max: MAX_MESSAGE_SIZE as u64,
        });
    }
    let Ok((header, payload)) = FrameHeader::read_from_prefix(bytes) else {
        return Err(Rejection::Truncated {
            len: bytes.len() as u64,
        });
    };
    if header.magic != MAGIC {
        return Err(Rejection::BadMagic { got: header.magic });
    }
    if header.version != VERSION {
        return Err(Rejection::BadVersion {
            got: header.version,
        });
    }
    let Some(kind) = Kind::from_u8(header.kind) else {
        return Err(Rejection::BadKind { got: header.kind });
    };
    if header.flags.get() != 0 {
        return Err(Rejection::ReservedFlags {
            flags: header.flags.get(),
        });
    }
    let declared = header.payload_len.get() as usize;
    if declared != payload.len() {
        return Err(Rejection::LengthMismatch {
            declared: declared as u64,
            actual: payload.len() as u64,
        });
    }
    Ok(Frame {
        kind,
        interface: header.interface.get(),
        request_id: header.request_id.get(),
        payload,
    })
}

/// Decode a postcard payload that must be consumed exactly.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Rejection::BadPayload {
            reason: format!("{} trailing bytes after the message", rest.len()),
        }),
        Err(e) => Err(Rejection::BadPayload {
            reason: e.to_string(),
        }),
    }
}

/// Encode a frame into `buf` (cleared first). Fails with
/// [`IpcError::TooLarge`] when the message would exceed [`MAX_MESSAGE_SIZE`];
/// `buf` then holds garbage and must not be sent.
pub fn encode_into<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    kind: Kind,
    interface: InterfaceId,
    request_id: RequestId,
    body: &T,
) -> Result<(), IpcError> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER_SIZE]);
    postcard::serialize_with_flavor::<T, _, _>(body, VecFlavor(buf))
        .map_err(|e| IpcError::Encode(e.to_string()))?;
    if buf.len() > MAX_MESSAGE_SIZE {
        return Err(IpcError::TooLarge {
            len: buf.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    let header = FrameHeader {
        magic: MAGIC,
        version: VERSION,
        kind: kind as u8,
        interface: U16::new(interface),
        flags: U16::new(0),
        request_id: U32::new(request_id),
        // Cannot truncate: bounded by MAX_MESSAGE_SIZE just above.
        payload_len: U32::new((buf.len() - HEADER_SIZE) as u32),
    };
    buf[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    Ok(())
}

/// A postcard output flavor that appends to a borrowed, reused `Vec`.
struct VecFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, body: &(u32, String)) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_into(&mut buf, kind, 3, 77, body).unwrap();
        buf
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let body = (5u32, "hello".to_string());
        let buf = frame(Kind::Call, &body);
        let f = parse(&buf, buf.len()).unwrap();
        assert_eq!(f.kind, Kind::Call);
        assert_eq!(f.interface, 3);
        assert_eq!(f.request_id, 77);
        assert_eq!(decode_payload::<(u32, String)>(f.payload).unwrap(), body);
    }

    #[test]
    fn header_rules_are_enforced() {
        let good = frame(Kind::Reply, &(1, "x".into()));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            parse(&bad, bad.len()),
            Err(Rejection::BadMagic { .. })
        ));
        let mut bad = good.clone();
        bad[2] = 9;
        assert!(matches!(
            parse(&bad, bad.len()),
            Err(Rejection::BadVersion { got: 9 })
        ));
        let mut bad = good.clone();
        bad[3] = 0;
        assert!(matches!(
            parse(&bad, bad.len()),
            Err(Rejection::BadKind { got: 0 })
        ));
        let mut bad = good.clone();
        bad[6] = 1;
        assert!(matches!(
            parse(&bad, bad.len()),
            Err(Rejection::ReservedFlags { flags: 1 })
        ));
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            parse(&bad, bad.len()),
            Err(Rejection::LengthMismatch { .. })
        ));
        assert!(matches!(
            parse(&good[..10], 10),
            Err(Rejection::Truncated { len: 10 })
        ));
        assert!(matches!(
            parse(&good, MAX_MESSAGE_SIZE + 1),
            Err(Rejection::Oversized { .. })
        ));
        assert_eq!(request_id_hint(&good), 77);
        assert_eq!(request_id_hint(&good[..3]), 0);
    }

    #[test]
    fn trailing_payload_bytes_are_refused() {
        let mut payload = postcard::to_allocvec(&7u32).unwrap();
        payload.push(1);
        let e = decode_payload::<u32>(&payload).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    #[test]
    fn oversized_encode_is_refused_locally() {
        let big = vec![0u8; MAX_MESSAGE_SIZE];
        let mut buf = Vec::new();
        let e = encode_into(&mut buf, Kind::Call, 1, 1, &big).unwrap_err();
        assert!(matches!(e, IpcError::TooLarge { .. }), "{e}");
    }
}
