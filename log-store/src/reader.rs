//! Reading a log: iterate records, seek by record number or timepoint.
//!
//! Opening a sealed log trusts nothing it has not checked: the trailer's CRC,
//! the index's CRC and seal hash, and the last block's link to the chain
//! head; each block is then checked against its chain link as it is read.
//! An unsealed or damaged log is walked in full on open, and reads stop at
//! the first fault with that fault as the iterator's last item.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use motion_records::{Hash32, MachineInfo, Record};
use vcpu::Timepoint;

use crate::error::{Fault, LogError, Region};
use crate::format::{
    self, BLOCK_HEADER_LEN, BlockHeader, FILE_HEADER_FIXED, Frames, IndexEntry, TRAILER_LEN,
    Trailer,
};
use crate::scan::{self, BlockLoader};
use crate::source::Source;

/// A log opened for reading.
#[derive(Debug)]
pub struct LogReader<S: Source = File> {
    src: S,
    machine: MachineInfo,
    file_len: u64,
    genesis: Hash32,
    blocks: Vec<IndexEntry>,
    records: u64,
    counts: BTreeMap<u16, u64>,
    raw_bytes: u64,
    sealed: Option<Trailer>,
    damage: Option<Fault>,
}

/// What the sealed fast path established.
struct SealedParts {
    machine: MachineInfo,
    file_len: u64,
    genesis: Hash32,
    blocks: Vec<IndexEntry>,
    records: u64,
    counts: BTreeMap<u16, u64>,
    raw_bytes: u64,
    trailer: Trailer,
}

fn io_err(e: std::io::Error) -> LogError {
    LogError::io("read", Path::new("<log>"), e)
}

impl LogReader<File> {
    /// Open a log file.
    pub fn open(path: impl AsRef<Path>) -> Result<LogReader<File>, LogError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| LogError::io("open", path, e))?;
        LogReader::from_source(file).map_err(|e| match e {
            LogError::Io { op, source, .. } => LogError::io(op, path, source),
            e => e,
        })
    }
}

impl<S: Source> LogReader<S> {
    /// Open a log from any byte source. Fails only if the file header is
    /// unusable; other damage shortens what can be read (see [`LogReader::damage`]).
    pub fn from_source(src: S) -> Result<LogReader<S>, LogError> {
        if let Some(p) = Self::open_sealed(&src).map_err(io_err)? {
            return Ok(LogReader {
                src,
                machine: p.machine,
                file_len: p.file_len,
                genesis: p.genesis,
                blocks: p.blocks,
                records: p.records,
                counts: p.counts,
                raw_bytes: p.raw_bytes,
                sealed: Some(p.trailer),
                damage: None,
            });
        }
        let s = scan::scan(&src).map_err(io_err)?;
        let Some(machine) = s.machine else {
            let fault = s.fault.unwrap_or(Fault {
                region: Region::Header,
                offset: 0,
                reason: "unreadable header".into(),
                torn_tail: false,
            });
            return Err(LogError::Corrupt(fault));
        };
        let mut header = vec![0u8; s.header_len as usize];
        src.read_exact_at(&mut header, 0).map_err(io_err)?;
        Ok(LogReader {
            src,
            machine,
            file_len: s.file_len,
            genesis: format::genesis_hash(&header),
            blocks: s.blocks.into_iter().map(|b| b.entry).collect(),
            records: s.records,
            counts: s.counts,
            raw_bytes: s.raw_bytes,
            sealed: s.sealed,
            damage: s.fault,
        })
    }

    /// The fast path for a sealed log: header, trailer, index, and the last
    /// block's header. `None` when anything does not check out (the caller
    /// then walks the whole file and finds out what).
    fn open_sealed(src: &S) -> std::io::Result<Option<SealedParts>> {
        let file_len = src.size()?;
        if file_len < (FILE_HEADER_FIXED + TRAILER_LEN) as u64 {
            return Ok(None);
        }
        let mut fixed = [0u8; FILE_HEADER_FIXED];
        src.read_exact_at(&mut fixed, 0)?;
        let Ok(body_len) = format::file_header_body_len(&fixed) else {
            return Ok(None);
        };
        let header_len = FILE_HEADER_FIXED as u64 + u64::from(body_len) + 4;
        if header_len + TRAILER_LEN as u64 > file_len {
            return Ok(None);
        }
        let mut header = vec![0u8; header_len as usize];
        src.read_exact_at(&mut header, 0)?;
        let Ok(machine) = format::decode_file_header(&header) else {
            return Ok(None);
        };
        let mut tb = [0u8; TRAILER_LEN];
        src.read_exact_at(&mut tb, file_len - TRAILER_LEN as u64)?;
        let Ok(t) = Trailer::decode(&tb) else {
            return Ok(None);
        };
        let index_end = t.index_offset.checked_add(t.index_len);
        if t.index_offset < header_len || index_end != Some(file_len - TRAILER_LEN as u64) {
            return Ok(None);
        }
        let mut section = vec![0u8; t.index_len as usize];
        src.read_exact_at(&mut section, t.index_offset)?;
        let Ok(body) = format::decode_index(&section) else {
            return Ok(None);
        };
        if t.compute_seal(&section) != t.seal_hash || body.entries.len() as u64 != t.block_count {
            return Ok(None);
        }
        // The entries must tile the space between header and index.
        let mut pos = header_len;
        let mut rec = 0u64;
        let mut raw_bytes = 0u64;
        for e in &body.entries {
            if e.offset != pos || e.first_record != rec {
                return Ok(None);
            }
            pos += BLOCK_HEADER_LEN as u64 + u64::from(e.stored_len);
            rec += u64::from(e.record_count);
            raw_bytes += u64::from(e.raw_len);
        }
        let counted: u64 = body.counts.iter().map(|(_, c)| *c).sum();
        if pos != t.index_offset || rec != t.total_records || counted != rec {
            return Ok(None);
        }
        let genesis = format::genesis_hash(&header);
        let head = match body.entries.last() {
            None => genesis,
            Some(e) => {
                let mut hb = [0u8; BLOCK_HEADER_LEN];
                src.read_exact_at(&mut hb, e.offset)?;
                match BlockHeader::decode(&hb) {
                    Ok(h) => h.chain_hash,
                    Err(_) => return Ok(None),
                }
            }
        };
        if head != t.chain_head {
            return Ok(None);
        }
        Ok(Some(SealedParts {
            machine,
            file_len,
            genesis,
            blocks: body.entries,
            records: rec,
            counts: body.counts.into_iter().collect(),
            raw_bytes,
            trailer: t,
        }))
    }

    /// The recorded machine.
    pub fn machine(&self) -> &MachineInfo {
        &self.machine
    }

    /// Records readable (before any damage).
    pub fn record_count(&self) -> u64 {
        self.records
    }

    /// Records per type id.
    pub fn counts(&self) -> &BTreeMap<u16, u64> {
        &self.counts
    }

    /// The blocks (what the index holds).
    pub fn blocks(&self) -> &[IndexEntry] {
        &self.blocks
    }

    /// Frame bytes before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// File length.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The trailer, when the log is sealed.
    pub fn sealed(&self) -> Option<&Trailer> {
        self.sealed.as_ref()
    }

    /// Where the readable part ends early, if it does (a torn tail or damage).
    pub fn damage(&self) -> Option<&Fault> {
        self.damage.as_ref()
    }

    /// Check the whole log (see [`crate::verify`]).
    pub fn verify(&self) -> Result<scan::Scan, LogError> {
        scan::scan(&self.src).map_err(io_err)
    }

    /// Every record from the first.
    pub fn records(&self) -> Records<'_, S> {
        Records::new(self, 0, 0)
    }

    /// Records from record number `n` on.
    pub fn records_from(&self, n: u64) -> Result<Records<'_, S>, LogError> {
        if n > self.records {
            return Err(LogError::OutOfRange {
                requested: n,
                total: self.records,
            });
        }
        let block = self
            .blocks
            .partition_point(|e| e.first_record + u64::from(e.record_count) <= n);
        let skip = self.blocks.get(block).map_or(0, |e| n - e.first_record);
        Ok(Records::new(self, block, skip))
    }

    /// Record number `n`.
    pub fn record(&self, n: u64) -> Result<Record, LogError> {
        match self.records_from(n)?.next() {
            Some(r) => r.map(|(_, r)| r),
            None => Err(LogError::OutOfRange {
                requested: n,
                total: self.records,
            }),
        }
    }

    /// The number of the first record of `at.vcpu` whose timepoint is at or
    /// after `at`, if any. The index's per-block spans pick the block; only
    /// that block is read.
    pub fn find_timepoint(&self, at: &Timepoint) -> Result<Option<u64>, LogError> {
        let not_before = |tp: &Timepoint| {
            tp.cmp_same_vcpu(at)
                .is_some_and(|o| o != std::cmp::Ordering::Less)
        };
        for (i, e) in self.blocks.iter().enumerate() {
            if !e.spans.iter().any(|s| not_before(&s.last)) {
                continue;
            }
            for r in Records::new(self, i, 0).take(e.record_count as usize) {
                let (n, r) = r?;
                if r.timepoint().is_some_and(not_before) {
                    return Ok(Some(n));
                }
            }
        }
        Ok(None)
    }

    /// Records from the first at or after timepoint `at` on its vCPU.
    pub fn seek_timepoint(&self, at: &Timepoint) -> Result<Records<'_, S>, LogError> {
        let n = self.find_timepoint(at)?.unwrap_or(self.records);
        self.records_from(n)
    }
}

/// Iterator over `(record number, record)`. A block that fails its checks,
/// or the damage that ends an unsealed log early, is returned as the last item.
pub struct Records<'r, S: Source> {
    reader: &'r LogReader<S>,
    loader: Option<BlockLoader>,
    block: usize,
    skip: u64,
    loaded: bool,
    pos: usize,
    next_record: u64,
    frames_seen: u32,
    prev: Option<Hash32>,
    done: bool,
}

impl<'r, S: Source> Records<'r, S> {
    fn new(reader: &'r LogReader<S>, block: usize, skip: u64) -> Self {
        Records {
            reader,
            loader: None,
            block,
            skip,
            loaded: false,
            pos: 0,
            next_record: 0,
            frames_seen: 0,
            prev: None,
            done: false,
        }
    }

    fn block_fault(&self, reason: String) -> LogError {
        let e = &self.reader.blocks[self.block];
        LogError::Corrupt(Fault {
            region: Region::Block {
                block: self.block as u64,
            },
            offset: e.offset,
            reason,
            torn_tail: false,
        })
    }

    fn load(&mut self) -> Result<(), LogError> {
        let r = self.reader;
        let e = &r.blocks[self.block];
        let prev = match self.prev {
            Some(p) => p,
            None if self.block == 0 => r.genesis,
            None => {
                let before = &r.blocks[self.block - 1];
                let mut hb = [0u8; BLOCK_HEADER_LEN];
                r.src
                    .read_exact_at(&mut hb, before.offset)
                    .map_err(io_err)?;
                match BlockHeader::decode(&hb) {
                    Ok(h) => h.chain_hash,
                    Err(reason) => {
                        return Err(LogError::Corrupt(Fault {
                            region: Region::Block {
                                block: self.block as u64 - 1,
                            },
                            offset: before.offset,
                            reason,
                            torn_tail: false,
                        }));
                    }
                }
            }
        };
        if self.loader.is_none() {
            self.loader = Some(BlockLoader::new().map_err(io_err)?);
        }
        let loader = self.loader.as_mut().ok_or(LogError::Poisoned)?;
        let h = match loader
            .load(&r.src, r.file_len, e.offset, &prev)
            .map_err(io_err)?
        {
            Ok(h) => h,
            Err(f) => return Err(self.block_fault(f.reason)),
        };
        if h.index != self.block as u64
            || h.first_record != e.first_record
            || h.record_count != e.record_count
            || h.raw_len != e.raw_len
        {
            return Err(self.block_fault("block header does not match the index".into()));
        }
        self.prev = Some(h.chain_hash);
        self.loaded = true;
        self.pos = 0;
        self.frames_seen = 0;
        self.next_record = e.first_record;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(u64, Record)>, LogError> {
        loop {
            if self.block >= self.reader.blocks.len() {
                return match &self.reader.damage {
                    Some(f) => Err(LogError::Corrupt(f.clone())),
                    None => Ok(None),
                };
            }
            if !self.loaded {
                self.load()?;
            }
            let entry_count = self.reader.blocks[self.block].record_count;
            let raw = self.loader.as_ref().map_or(&[][..], |l| &l.raw[..]);
            match Frames::new(&raw[self.pos..]).next() {
                None => {
                    if self.frames_seen != entry_count {
                        return Err(self.block_fault(format!(
                            "frames hold {} records, header says {entry_count}",
                            self.frames_seen
                        )));
                    }
                    self.block += 1;
                    self.loaded = false;
                }
                Some(Err((at, reason))) => {
                    let e = &self.reader.blocks[self.block];
                    return Err(LogError::Corrupt(Fault {
                        region: Region::Frame {
                            block: self.block as u64,
                            frame: self.frames_seen,
                            record: self.next_record,
                            offset_in_block: (self.pos + at) as u32,
                        },
                        offset: e.offset,
                        reason,
                        torn_tail: false,
                    }));
                }
                Some(Ok(f)) => {
                    let len = format::FRAME_OVERHEAD + f.payload.len();
                    let n = self.next_record;
                    let frame_at = self.pos;
                    let type_id = f.type_id;
                    let decoded = if self.skip > 0 {
                        None
                    } else {
                        Some(Record::decode(type_id, f.payload))
                    };
                    self.pos += len;
                    self.next_record += 1;
                    self.frames_seen += 1;
                    match decoded {
                        None => self.skip -= 1,
                        Some(Ok(r)) => return Ok(Some((n, r))),
                        Some(Err(e)) => {
                            let b = &self.reader.blocks[self.block];
                            return Err(LogError::Corrupt(Fault {
                                region: Region::Frame {
                                    block: self.block as u64,
                                    frame: self.frames_seen - 1,
                                    record: n,
                                    offset_in_block: frame_at as u32,
                                },
                                offset: b.offset,
                                reason: e.to_string(),
                                torn_tail: false,
                            }));
                        }
                    }
                }
            }
        }
    }
}

impl<S: Source> Iterator for Records<'_, S> {
    type Item = Result<(u64, Record), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(x)) => Some(Ok(x)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
