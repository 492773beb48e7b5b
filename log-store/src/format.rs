//! The on-disk layout: byte-exact encoders and checked decoders for the file
//! header, block headers, frames, the index section and the trailer.
//! docs/log-format.md describes the same layout for people.
//!
//! Every decoder here takes untrusted bytes and returns `Err(reason)` rather
//! than panicking; callers attach the region and offset.

use motion_records::{Hash32, MachineInfo};
use serde::{Deserialize, Serialize};
use vcpu::Timepoint;

/// First bytes of every log.
pub const FILE_MAGIC: [u8; 8] = *b"CASMLOG\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// First bytes of every block.
pub const BLOCK_MAGIC: [u8; 8] = *b"CASMBLK\0";
/// First bytes of the index section (written at seal).
pub const INDEX_MAGIC: [u8; 8] = *b"CASMIDX\0";
/// First bytes of the trailer (the last bytes of a sealed log).
pub const TRAILER_MAGIC: [u8; 8] = *b"CASMEND\0";

/// Fixed part of the file header: magic, version, flags, machine length.
pub const FILE_HEADER_FIXED: usize = 16;
/// Largest machine description accepted (a CPUID table is a few KiB).
pub const MAX_MACHINE_LEN: u32 = 1 << 20;
/// Size of a block header.
pub const BLOCK_HEADER_LEN: usize = 76;
/// Largest uncompressed block (and so the largest record) accepted.
pub const MAX_BLOCK_RAW: u32 = 16 << 20;
/// Frame bytes around a payload: length (4), type (2), CRC32C (4).
pub const FRAME_OVERHEAD: usize = 10;
/// Largest record payload: one frame alone filling a maximal block.
pub const MAX_RECORD_PAYLOAD: usize = MAX_BLOCK_RAW as usize - FRAME_OVERHEAD;
/// Fixed part of the index section: magic and body length, then body and CRC.
pub const INDEX_FIXED: usize = 12;
/// Largest index body accepted.
pub const MAX_INDEX_LEN: u32 = 1 << 30;
/// Size of the trailer.
pub const TRAILER_LEN: usize = 108;

/// Block payload stored as is.
pub const CODEC_NONE: u8 = 0;
/// Block payload compressed as one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

const GENESIS_CONTEXT: &str = "CAS Motion log-store v1 genesis";
const CHAIN_CONTEXT: &str = "CAS Motion log-store v1 block chain";
const SEAL_CONTEXT: &str = "CAS Motion log-store v1 seal";

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn hash32(b: &[u8], at: usize) -> Hash32 {
    let mut a = [0; 32];
    a.copy_from_slice(&b[at..at + 32]);
    a
}

/// The complete file header as written: fixed part, machine description, CRC.
pub fn encode_file_header(machine: &MachineInfo) -> Vec<u8> {
    let body = machine.to_bytes();
    let mut out = Vec::with_capacity(FILE_HEADER_FIXED + body.len() + 4);
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Check the fixed part of a file header and return the machine description's
/// length, so the caller knows how many more bytes to read.
pub fn file_header_body_len(fixed: &[u8; FILE_HEADER_FIXED]) -> Result<u32, String> {
    if fixed[..8] != FILE_MAGIC {
        return Err("bad magic: not a CAS Motion log".into());
    }
    let len = le_u32(fixed, 12);
    if len > MAX_MACHINE_LEN {
        return Err(format!(
            "machine description length {len} exceeds the {MAX_MACHINE_LEN}-byte maximum"
        ));
    }
    Ok(len)
}

/// Decode a whole file header (as returned by [`encode_file_header`]).
pub fn decode_file_header(bytes: &[u8]) -> Result<MachineInfo, String> {
    if bytes.len() < FILE_HEADER_FIXED + 4 {
        return Err("file header truncated".into());
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content) != le_u32(crc, 0) {
        return Err("file header CRC32C mismatch".into());
    }
    let version = le_u16(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
        ));
    }
    let flags = le_u16(bytes, 10);
    if flags != 0 {
        return Err(format!("unknown header flags {flags:#06x}"));
    }
    let len = le_u32(bytes, 12) as usize;
    if FILE_HEADER_FIXED + len + 4 != bytes.len() {
        return Err("file header length field does not match".into());
    }
    MachineInfo::from_bytes(&content[FILE_HEADER_FIXED..])
        .map_err(|e| format!("machine description: {e}"))
}

/// The hash the chain starts from: BLAKE3 of the file header bytes.
pub fn genesis_hash(header_bytes: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(GENESIS_CONTEXT);
    h.update(header_bytes);
    *h.finalize().as_bytes()
}

/// A block header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// Position of the block in the file (0, 1, ...).
    pub index: u64,
    /// Record number of the block's first record.
    pub first_record: u64,
    /// Records in the block.
    pub record_count: u32,
    /// Length of the frames before compression.
    pub raw_len: u32,
    /// Length of the payload as stored after the header.
    pub stored_len: u32,
    /// [`CODEC_NONE`] or [`CODEC_ZSTD`].
    pub codec: u8,
    /// This block's link in the hash chain.
    pub chain_hash: Hash32,
}

impl BlockHeader {
    /// The first 40 bytes (every field but the chain hash and CRC): what the
    /// chain hash covers besides the previous hash and the payload.
    pub fn encode_fields(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&BLOCK_MAGIC);
        out[8..16].copy_from_slice(&self.index.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_record.to_le_bytes());
        out[24..28].copy_from_slice(&self.record_count.to_le_bytes());
        out[28..32].copy_from_slice(&self.raw_len.to_le_bytes());
        out[32..36].copy_from_slice(&self.stored_len.to_le_bytes());
        out[36] = self.codec;
        out[37..40].fill(0);
    }

    /// Write the complete 76-byte header into `out[..76]`.
    pub fn encode(&self, out: &mut [u8]) {
        self.encode_fields(out);
        out[40..72].copy_from_slice(&self.chain_hash);
        let crc = crc32c::crc32c(&out[..72]);
        out[72..76].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decode and check a block header (magic, CRC, reserved bytes, limits).
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> Result<BlockHeader, String> {
        if b[..8] != BLOCK_MAGIC {
            return Err("bad block magic".into());
        }
        if crc32c::crc32c(&b[..72]) != le_u32(b, 72) {
            return Err("block header CRC32C mismatch".into());
        }
        let h = BlockHeader {
            index: le_u64(b, 8),
            first_record: le_u64(b, 16),
            record_count: le_u32(b, 24),
            raw_len: le_u32(b, 28),
            stored_len: le_u32(b, 32),
            codec: b[36],
            chain_hash: hash32(b, 40),
        };
        if b[37..40] != [0, 0, 0] {
            return Err("block header reserved bytes are not zero".into());
        }
        if h.raw_len > MAX_BLOCK_RAW {
            return Err(format!(
                "block raw length {} exceeds the maximum",
                h.raw_len
            ));
        }
        match h.codec {
            CODEC_NONE if h.stored_len != h.raw_len => {
                Err("uncompressed block with stored length != raw length".into())
            }
            CODEC_NONE | CODEC_ZSTD => Ok(h),
            c => Err(format!("unknown block codec {c}")),
        }
    }

    /// The chain hash this header's block must carry, given the previous link
    /// and the stored payload.
    pub fn compute_chain(&self, prev: &Hash32, payload: &[u8]) -> Hash32 {
        let mut fields = [0u8; 40];
        self.encode_fields(&mut fields);
        let mut h = blake3::Hasher::new_derive_key(CHAIN_CONTEXT);
        h.update(prev);
        h.update(&fields);
        h.update(payload);
        *h.finalize().as_bytes()
    }
}

/// One frame inside a block's raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Offset of the frame within the block's raw bytes.
    pub offset: usize,
    /// The record type id.
    pub type_id: u16,
    /// The postcard payload.
    pub payload: &'a [u8],
}

/// Append a frame header placeholder; returns where the frame starts.
#[inline]
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 6]);
    start
}

/// Fill in the length and type of the frame begun at `start` (whose payload
/// is everything after the 6-byte header) and append its CRC32C.
#[inline]
pub fn finish_frame(buf: &mut Vec<u8>, start: usize, type_id: u16) {
    let len = (buf.len() - start - 6) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 6].copy_from_slice(&type_id.to_le_bytes());
    let crc = crc32c::crc32c(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Iterates the frames of a block's raw bytes, checking each CRC.
pub struct Frames<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Frames<'a> {
    /// Frames of `raw`.
    pub fn new(raw: &'a [u8]) -> Frames<'a> {
        Frames { raw, pos: 0 }
    }
}

impl<'a> Iterator for Frames<'a> {
    /// A frame, or (offset, reason) for the first bad one; iteration stops after an error.
    type Item = Result<Frame<'a>, (usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let rest = self.raw.get(start..)?;
        if rest.is_empty() {
            return None;
        }
        self.pos = self.raw.len(); // an error ends iteration
        if rest.len() < FRAME_OVERHEAD {
            return Some(Err((start, "frame truncated".into())));
        }
        let len = le_u32(rest, 0) as usize;
        let Some(total) = len.checked_add(FRAME_OVERHEAD).filter(|t| *t <= rest.len()) else {
            return Some(Err((
                start,
                format!("frame length {len} runs past the block end"),
            )));
        };
        let crc = le_u32(rest, 6 + len);
        if crc32c::crc32c(&rest[..6 + len]) != crc {
            return Some(Err((start, "frame CRC32C mismatch".into())));
        }
        self.pos = start + total;
        Some(Ok(Frame {
            offset: start,
            type_id: le_u16(rest, 4),
            payload: &rest[6..6 + len],
        }))
    }
}

/// The span of timepoints one vCPU's records cover within a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuSpan {
    /// Timepoint of the first timepointed record of this vCPU in the block.
    pub first: Timepoint,
    /// Timepoint of the last one.
    pub last: Timepoint,
}

/// Add a timepoint to a block's per-vCPU spans.
#[inline]
pub fn extend_spans(spans: &mut Vec<VcpuSpan>, tp: &Timepoint) {
    match spans.iter_mut().find(|s| s.first.vcpu == tp.vcpu) {
        Some(s) => s.last = *tp,
        None => spans.push(VcpuSpan {
            first: *tp,
            last: *tp,
        }),
    }
}

/// Where a block is and what it holds: one entry of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File offset of the block header.
    pub offset: u64,
    /// Record number of the block's first record.
    pub first_record: u64,
    /// Records in the block.
    pub record_count: u32,
    /// Frame bytes before compression.
    pub raw_len: u32,
    /// Payload bytes as stored.
    pub stored_len: u32,
    /// Timepoint spans per vCPU (seek by timepoint).
    pub spans: Vec<VcpuSpan>,
}

/// The index section's body (postcard).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IndexBody {
    /// One entry per block, in file order.
    pub entries: Vec<IndexEntry>,
    /// (record type id, count), ascending by id, zero counts omitted.
    pub counts: Vec<(u16, u64)>,
}

/// The complete index section: magic, body length, body, CRC32C.
pub fn encode_index(body: &IndexBody) -> Vec<u8> {
    let body = postcard::to_allocvec(body).unwrap_or_default();
    let mut out = Vec::with_capacity(INDEX_FIXED + body.len() + 4);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Length of the index section whose first 12 bytes are `fixed`.
pub fn index_section_len(fixed: &[u8; INDEX_FIXED]) -> Result<u64, String> {
    if fixed[..8] != INDEX_MAGIC {
        return Err("bad index magic".into());
    }
    let len = le_u32(fixed, 8);
    if len > MAX_INDEX_LEN {
        return Err(format!("index length {len} exceeds the maximum"));
    }
    Ok(INDEX_FIXED as u64 + u64::from(len) + 4)
}

/// Decode a whole index section (as returned by [`encode_index`]).
pub fn decode_index(section: &[u8]) -> Result<IndexBody, String> {
    if section.len() < INDEX_FIXED + 4 {
        return Err("index truncated".into());
    }
    let (content, crc) = section.split_at(section.len() - 4);
    if crc32c::crc32c(content) != le_u32(crc, 0) {
        return Err("index CRC32C mismatch".into());
    }
    let (body, rest) = postcard::take_from_bytes::<IndexBody>(&content[INDEX_FIXED..])
        .map_err(|e| format!("index body does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("index body has {} trailing bytes", rest.len()));
    }
    Ok(body)
}

/// The trailer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// File offset of the index section.
    pub index_offset: u64,
    /// Length of the index section.
    pub index_len: u64,
    /// Records in the log.
    pub total_records: u64,
    /// Blocks in the log.
    pub block_count: u64,
    /// The last block's chain hash (the genesis hash when there are no blocks).
    pub chain_head: Hash32,
    /// BLAKE3 over the chain head, the index section and the fields above.
    pub seal_hash: Hash32,
}

impl Trailer {
    fn encode_fields(&self, out: &mut [u8; TRAILER_LEN]) {
        out[0..8].copy_from_slice(&TRAILER_MAGIC);
        out[8..16].copy_from_slice(&self.index_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.index_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.total_records.to_le_bytes());
        out[32..40].copy_from_slice(&self.block_count.to_le_bytes());
        out[40..72].copy_from_slice(&self.chain_head);
    }

    /// The seal hash for these fields (ignoring `self.seal_hash`) and index section.
    pub fn compute_seal(&self, index_section: &[u8]) -> Hash32 {
        let mut b = [0u8; TRAILER_LEN];
        self.encode_fields(&mut b);
        let mut h = blake3::Hasher::new_derive_key(SEAL_CONTEXT);
        h.update(&self.chain_head);
        h.update(index_section);
        h.update(&b[..72]);
        *h.finalize().as_bytes()
    }

    /// The 108 trailer bytes.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        self.encode_fields(&mut b);
        b[72..104].copy_from_slice(&self.seal_hash);
        let crc = crc32c::crc32c(&b[..104]);
        b[104..108].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check magic and CRC.
    pub fn decode(b: &[u8; TRAILER_LEN]) -> Result<Trailer, String> {
        if b[..8] != TRAILER_MAGIC {
            return Err("bad trailer magic".into());
        }
        if crc32c::crc32c(&b[..104]) != le_u32(b, 104) {
            return Err("trailer CRC32C mismatch".into());
        }
        Ok(Trailer {
            index_offset: le_u64(b, 8),
            index_len: le_u64(b, 16),
            total_records: le_u64(b, 24),
            block_count: le_u64(b, 32),
            chain_head: hash32(b, 40),
            seal_hash: hash32(b, 72),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_header_round_trips_and_checks_crc() {
        let h = BlockHeader {
            index: 3,
            first_record: 100,
            record_count: 7,
            raw_len: 500,
            stored_len: 200,
            codec: CODEC_ZSTD,
            chain_hash: [9; 32],
        };
        let mut b = [0u8; BLOCK_HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(BlockHeader::decode(&b).unwrap(), h);
        for i in 0..BLOCK_HEADER_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(BlockHeader::decode(&c).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn frames_parse_and_reject_damage() {
        let mut buf = Vec::new();
        for (t, p) in [(1u16, &b"abc"[..]), (2, &b""[..]), (3, &[7u8; 300][..])] {
            let s = begin_frame(&mut buf);
            buf.extend_from_slice(p);
            finish_frame(&mut buf, s, t);
        }
        let frames: Vec<_> = Frames::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].payload, b"abc");
        assert_eq!(frames[2].type_id, 3);
        assert_eq!(frames[1].offset, 13);
        let mut bad = buf.clone();
        bad[15] ^= 1;
        let r: Vec<_> = Frames::new(&bad).collect();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].as_ref().unwrap_err().0, 13);
        let mut long = buf.clone();
        long[0] = 0xff;
        long[3] = 0xff;
        assert!(Frames::new(&long).next().unwrap().is_err());
    }

    #[test]
    fn trailer_round_trips() {
        let mut t = Trailer {
            index_offset: 1,
            index_len: 2,
            total_records: 3,
            block_count: 4,
            chain_head: [5; 32],
            seal_hash: [0; 32],
        };
        t.seal_hash = t.compute_seal(b"idx");
        let b = t.encode();
        assert_eq!(Trailer::decode(&b).unwrap(), t);
        assert_ne!(t.compute_seal(b"idy"), t.seal_hash);
    }
}
