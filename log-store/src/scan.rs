//! The sequential walk that verify, recovery and the reader of an unsealed
//! log share: header, then block after block along the hash chain, then the
//! index and trailer if present. It stops at the first fault, so what it
//! reports is the first bad region in file order.

use std::collections::BTreeMap;
use std::io;

use motion_records::{Hash32, MachineInfo, Record};

use crate::error::{Fault, Region};
use crate::format::{
    self, BLOCK_HEADER_LEN, BLOCK_MAGIC, BlockHeader, CODEC_NONE, CODEC_ZSTD, FILE_HEADER_FIXED,
    Frames, INDEX_FIXED, INDEX_MAGIC, IndexEntry, MAX_BLOCK_RAW, TRAILER_LEN, TRAILER_MAGIC,
    Trailer,
};
use crate::source::Source;

/// A block that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Where it is and what it holds (what the index stores).
    pub entry: IndexEntry,
    /// Its chain hash.
    pub chain_hash: Hash32,
}

/// What a walk over a log found.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The machine description, when the header is intact.
    pub machine: Option<MachineInfo>,
    /// File length.
    pub file_len: u64,
    /// Length of the file header.
    pub header_len: u64,
    /// The blocks that passed every check, in order.
    pub blocks: Vec<BlockInfo>,
    /// Records in those blocks.
    pub records: u64,
    /// Records per type id in those blocks.
    pub counts: BTreeMap<u16, u64>,
    /// Chain hash of the last good block (the genesis hash if none).
    pub chain_head: Hash32,
    /// Frame bytes before compression in the good blocks.
    pub raw_bytes: u64,
    /// File offset just past the last good block (where a writer resumes).
    pub blocks_end: u64,
    /// The trailer, when the log is sealed and the index and trailer check out.
    pub sealed: Option<Trailer>,
    /// The first fault, if any.
    pub fault: Option<Fault>,
}

impl Scan {
    /// No fault anywhere (the log may still be unsealed).
    pub fn is_intact(&self) -> bool {
        self.fault.is_none()
    }
}

/// Reads and checks one block at a time, reusing its buffers.
pub(crate) struct BlockLoader {
    decompressor: zstd::bulk::Decompressor<'static>,
    stored: Vec<u8>,
    /// The frames of the last block loaded.
    pub raw: Vec<u8>,
}

/// Why a block failed, and whether it simply runs past the end of the file.
pub(crate) struct BlockFailure {
    pub reason: String,
    pub incomplete: bool,
}

fn fail(reason: impl Into<String>) -> BlockFailure {
    BlockFailure {
        reason: reason.into(),
        incomplete: false,
    }
}

impl BlockLoader {
    pub fn new() -> io::Result<BlockLoader> {
        Ok(BlockLoader {
            decompressor: zstd::bulk::Decompressor::new()?,
            stored: Vec::new(),
            raw: Vec::new(),
        })
    }

    /// Load the block at `offset`: check its header, that its stored payload
    /// links to `prev` in the chain, and decompress it into `self.raw`.
    pub fn load<S: Source + ?Sized>(
        &mut self,
        src: &S,
        file_len: u64,
        offset: u64,
        prev: &Hash32,
    ) -> io::Result<Result<BlockHeader, BlockFailure>> {
        let avail = file_len.saturating_sub(offset);
        if avail < BLOCK_HEADER_LEN as u64 {
            return Ok(Err(BlockFailure {
                reason: format!("block header truncated ({avail} of {BLOCK_HEADER_LEN} bytes)"),
                incomplete: true,
            }));
        }
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        src.read_exact_at(&mut hb, offset)?;
        let h = match BlockHeader::decode(&hb) {
            Ok(h) => h,
            Err(e) => return Ok(Err(fail(e))),
        };
        // A zstd frame may be slightly larger than its input.
        let max_stored = u64::from(MAX_BLOCK_RAW) + (1 << 16);
        if u64::from(h.stored_len) > max_stored {
            return Ok(Err(fail(format!(
                "stored length {} exceeds the maximum",
                h.stored_len
            ))));
        }
        let payload_end = offset + BLOCK_HEADER_LEN as u64 + u64::from(h.stored_len);
        if payload_end > file_len {
            return Ok(Err(BlockFailure {
                reason: format!(
                    "payload of {} bytes runs {} bytes past the end of the file",
                    h.stored_len,
                    payload_end - file_len
                ),
                incomplete: true,
            }));
        }
        self.stored.resize(h.stored_len as usize, 0);
        src.read_exact_at(&mut self.stored, offset + BLOCK_HEADER_LEN as u64)?;
        if h.compute_chain(prev, &self.stored) != h.chain_hash {
            return Ok(Err(fail(
                "chain hash mismatch (payload or header altered, or block out of place)",
            )));
        }
        match h.codec {
            CODEC_NONE => std::mem::swap(&mut self.raw, &mut self.stored),
            CODEC_ZSTD => {
                self.raw.clear();
                self.raw.reserve(h.raw_len as usize);
                if let Err(e) = self
                    .decompressor
                    .decompress_to_buffer(&self.stored[..], &mut self.raw)
                {
                    return Ok(Err(fail(format!("zstd payload does not decompress: {e}"))));
                }
            }
            c => return Ok(Err(fail(format!("unknown codec {c}")))),
        }
        if self.raw.len() != h.raw_len as usize {
            return Ok(Err(fail(format!(
                "payload decompresses to {} bytes, header says {}",
                self.raw.len(),
                h.raw_len
            ))));
        }
        Ok(Ok(h))
    }
}

/// Is there any section magic in the file after `from`? If not, damage at
/// `from` is a torn tail: nothing that was ever complete follows it.
fn any_magic_after<S: Source + ?Sized>(src: &S, from: u64, file_len: u64) -> io::Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut pos = from + 1;
    let mut buf = Vec::new();
    while pos < file_len {
        let n = (file_len - pos).min(CHUNK + 7);
        buf.resize(n as usize, 0);
        src.read_exact_at(&mut buf, pos)?;
        if buf
            .windows(8)
            .any(|w| w == BLOCK_MAGIC || w == INDEX_MAGIC || w == TRAILER_MAGIC)
        {
            return Ok(true);
        }
        pos += CHUNK;
    }
    Ok(false)
}

/// Walk the whole log, checking everything, and report the first fault.
pub fn scan<S: Source + ?Sized>(src: &S) -> io::Result<Scan> {
    let file_len = src.size()?;
    let mut s = Scan {
        machine: None,
        file_len,
        header_len: 0,
        blocks: Vec::new(),
        records: 0,
        counts: BTreeMap::new(),
        chain_head: [0; 32],
        raw_bytes: 0,
        blocks_end: 0,
        sealed: None,
        fault: None,
    };
    let header_fault = |reason: String, torn_tail: bool| Fault {
        region: Region::Header,
        offset: 0,
        reason,
        torn_tail,
    };

    // The file header.
    if file_len < FILE_HEADER_FIXED as u64 {
        s.fault = Some(header_fault(
            format!("file is {file_len} bytes, shorter than a header"),
            true,
        ));
        return Ok(s);
    }
    let mut fixed = [0u8; FILE_HEADER_FIXED];
    src.read_exact_at(&mut fixed, 0)?;
    let body_len = match format::file_header_body_len(&fixed) {
        Ok(n) => n,
        Err(e) => {
            s.fault = Some(header_fault(e, false));
            return Ok(s);
        }
    };
    let header_len = FILE_HEADER_FIXED as u64 + u64::from(body_len) + 4;
    if header_len > file_len {
        s.fault = Some(header_fault(
            "file header runs past the end of the file".into(),
            true,
        ));
        return Ok(s);
    }
    let mut header = vec![0u8; header_len as usize];
    src.read_exact_at(&mut header, 0)?;
    match format::decode_file_header(&header) {
        Ok(m) => s.machine = Some(m),
        Err(e) => {
            s.fault = Some(header_fault(e, false));
            return Ok(s);
        }
    }
    s.header_len = header_len;
    s.chain_head = format::genesis_hash(&header);

    // Blocks, along the chain.
    let mut loader = BlockLoader::new()?;
    let mut pos = header_len;
    loop {
        s.blocks_end = pos;
        if pos == file_len {
            return Ok(s); // a clean, unsealed end
        }
        let block = s.blocks.len() as u64;
        let mut magic = [0u8; 8];
        let avail = (file_len - pos).min(8) as usize;
        src.read_exact_at(&mut magic[..avail], pos)?;
        if avail == 8 && magic == INDEX_MAGIC {
            break;
        }
        let block_fault = |reason: String, torn_tail: bool| Fault {
            region: Region::Block { block },
            offset: pos,
            reason,
            torn_tail,
        };
        if avail < 8 || magic != BLOCK_MAGIC {
            // Not a block and not the index. If an intact trailer says the
            // index starts here, the index's first bytes are what is damaged.
            if file_len - pos >= TRAILER_LEN as u64 {
                let mut tb = [0u8; TRAILER_LEN];
                src.read_exact_at(&mut tb, file_len - TRAILER_LEN as u64)?;
                if let Ok(t) = Trailer::decode(&tb)
                    && t.index_offset == pos
                {
                    s.fault = Some(Fault {
                        region: Region::Index,
                        offset: pos,
                        reason: "bad index magic".into(),
                        torn_tail: false,
                    });
                    return Ok(s);
                }
            }
            let torn = !any_magic_after(src, pos, file_len)?;
            s.fault = Some(block_fault(
                "neither a block nor the index starts here".into(),
                torn,
            ));
            return Ok(s);
        }
        let h = match loader.load(src, file_len, pos, &s.chain_head)? {
            Ok(h) => h,
            Err(f) => {
                let torn = f.incomplete || !any_magic_after(src, pos, file_len)?;
                s.fault = Some(block_fault(f.reason, torn));
                return Ok(s);
            }
        };
        if h.index != block || h.first_record != s.records {
            s.fault = Some(block_fault(
                format!(
                    "out of sequence: header says block {} from record {}, expected block {block} from record {}",
                    h.index, h.first_record, s.records
                ),
                false,
            ));
            return Ok(s);
        }
        let mut entry = IndexEntry {
            offset: pos,
            first_record: h.first_record,
            record_count: h.record_count,
            raw_len: h.raw_len,
            stored_len: h.stored_len,
            spans: Vec::new(),
        };
        let mut n: u32 = 0;
        let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
        for frame in Frames::new(&loader.raw) {
            let record = h.first_record + u64::from(n);
            let frame_fault = |offset_in_block: usize, reason: String| Fault {
                region: Region::Frame {
                    block,
                    frame: n,
                    record,
                    offset_in_block: offset_in_block as u32,
                },
                offset: pos,
                reason,
                torn_tail: false,
            };
            let frame = match frame {
                Ok(f) => f,
                Err((at, reason)) => {
                    s.fault = Some(frame_fault(at, reason));
                    return Ok(s);
                }
            };
            match Record::decode(frame.type_id, frame.payload) {
                Ok(r) => {
                    if let Some(tp) = r.timepoint() {
                        format::extend_spans(&mut entry.spans, tp);
                    }
                }
                Err(e) => {
                    s.fault = Some(frame_fault(frame.offset, e.to_string()));
                    return Ok(s);
                }
            }
            *counts.entry(frame.type_id).or_default() += 1;
            n = n.saturating_add(1);
        }
        if n != h.record_count {
            s.fault = Some(block_fault(
                format!("header says {} records, frames hold {n}", h.record_count),
                false,
            ));
            return Ok(s);
        }
        for (t, c) in counts {
            *s.counts.entry(t).or_default() += c;
        }
        s.records += u64::from(n);
        s.raw_bytes += u64::from(h.raw_len);
        s.chain_head = h.chain_hash;
        s.blocks.push(BlockInfo {
            entry,
            chain_hash: h.chain_hash,
        });
        pos += BLOCK_HEADER_LEN as u64 + u64::from(h.stored_len);
    }

    // The index (written at seal), then the trailer.
    let index_offset = pos;
    let index_fault = |reason: String, torn_tail: bool| Fault {
        region: Region::Index,
        offset: index_offset,
        reason,
        torn_tail,
    };
    if file_len - pos < INDEX_FIXED as u64 {
        s.fault = Some(index_fault("index header truncated".into(), true));
        return Ok(s);
    }
    let mut ifixed = [0u8; INDEX_FIXED];
    src.read_exact_at(&mut ifixed, pos)?;
    let index_len = match format::index_section_len(&ifixed) {
        Ok(n) => n,
        Err(e) => {
            let torn = !any_magic_after(src, pos, file_len)?;
            s.fault = Some(index_fault(e, torn));
            return Ok(s);
        }
    };
    if index_len > file_len - pos {
        s.fault = Some(index_fault(
            "index runs past the end of the file".into(),
            true,
        ));
        return Ok(s);
    }
    let mut section = vec![0u8; index_len as usize];
    src.read_exact_at(&mut section, pos)?;
    let body = match format::decode_index(&section) {
        Ok(b) => b,
        Err(e) => {
            let torn = !any_magic_after(src, pos, file_len)?;
            s.fault = Some(index_fault(e, torn));
            return Ok(s);
        }
    };
    if body.entries.len() != s.blocks.len() {
        s.fault = Some(index_fault(
            format!(
                "index lists {} blocks, the log has {}",
                body.entries.len(),
                s.blocks.len()
            ),
            false,
        ));
        return Ok(s);
    }
    if let Some(i) = (0..s.blocks.len()).find(|&i| body.entries[i] != s.blocks[i].entry) {
        s.fault = Some(index_fault(
            format!("index entry {i} does not match block {i}"),
            false,
        ));
        return Ok(s);
    }
    let counts: Vec<(u16, u64)> = s.counts.iter().map(|(t, c)| (*t, *c)).collect();
    if body.counts != counts {
        s.fault = Some(index_fault(
            "index record counts do not match the blocks".into(),
            false,
        ));
        return Ok(s);
    }
    pos += index_len;
    let trailer_fault = |reason: String, torn_tail: bool| Fault {
        region: Region::Trailer,
        offset: pos,
        reason,
        torn_tail,
    };
    if file_len - pos < TRAILER_LEN as u64 {
        s.fault = Some(trailer_fault(
            format!(
                "trailer truncated ({} of {TRAILER_LEN} bytes)",
                file_len - pos
            ),
            true,
        ));
        return Ok(s);
    }
    let mut tb = [0u8; TRAILER_LEN];
    src.read_exact_at(&mut tb, pos)?;
    let t = match Trailer::decode(&tb) {
        Ok(t) => t,
        Err(e) => {
            s.fault = Some(trailer_fault(e, false));
            return Ok(s);
        }
    };
    let mismatch = if t.index_offset != index_offset || t.index_len != index_len {
        Some("trailer does not point at the index".to_string())
    } else if t.total_records != s.records || t.block_count != s.blocks.len() as u64 {
        Some(format!(
            "trailer counts ({} records, {} blocks) do not match the log ({} records, {} blocks)",
            t.total_records,
            t.block_count,
            s.records,
            s.blocks.len()
        ))
    } else if t.chain_head != s.chain_head {
        Some("trailer chain head does not match the last block".into())
    } else if t.compute_seal(&section) != t.seal_hash {
        Some("seal hash mismatch".into())
    } else if file_len != pos + TRAILER_LEN as u64 {
        Some(format!(
            "{} bytes follow the trailer",
            file_len - pos - TRAILER_LEN as u64
        ))
    } else {
        None
    };
    if let Some(reason) = mismatch {
        s.fault = Some(trailer_fault(reason, false));
        return Ok(s);
    }
    s.sealed = Some(t);
    Ok(s)
}
