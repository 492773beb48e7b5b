//! The append-only writer: frames records into blocks, compresses, chains,
//! writes, and makes them durable by policy. It never seeks back: the only
//! writes are appends at the end, and the only truncation is recovery's
//! removal of a torn tail that no acknowledgement ever covered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use motion_records::{Hash32, MachineInfo, Record, RecordType};

use crate::error::{Fault, LogError};
use crate::format::{
    self, BLOCK_HEADER_LEN, BlockHeader, CODEC_NONE, CODEC_ZSTD, IndexBody, IndexEntry,
    MAX_BLOCK_RAW, MAX_RECORD_PAYLOAD, Trailer, VcpuSpan,
};
use crate::scan;

/// When appended records become durable (fsynced), and so acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every `append` ends its block and fsyncs before returning: each batch
    /// is acknowledged by its own append call.
    EveryBatch,
    /// Blocks are written as they fill; an fsync happens at the first append
    /// or [`LogWriter::poll`] at least this long after the oldest unsynced
    /// record, or sooner when [`WriterConfig::max_unsynced_bytes`] is reached.
    Interval(Duration),
    /// Nothing is fsynced until [`LogWriter::flush`] or [`LogWriter::seal`].
    AtSeal,
}

/// Tuning of a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// The durability policy.
    pub durability: Durability,
    /// A block is closed once its frames reach this many bytes.
    pub block_bytes: usize,
    /// zstd level (1 is fastest; blocks that do not shrink are stored raw).
    pub zstd_level: i32,
    /// Under [`Durability::Interval`], written but unsynced bytes that force
    /// an fsync early: the bound on what a crash can cost, and the
    /// backpressure on a producer that outruns the disk.
    pub max_unsynced_bytes: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            durability: Durability::Interval(Duration::from_millis(10)),
            block_bytes: 64 << 10,
            zstd_level: 1,
            max_unsynced_bytes: 64 << 20,
        }
    }
}

impl WriterConfig {
    /// The default configuration with another durability policy.
    pub fn with_durability(durability: Durability) -> Self {
        WriterConfig {
            durability,
            ..WriterConfig::default()
        }
    }

    fn check(&self) -> Result<(), LogError> {
        if self.block_bytes == 0 || self.block_bytes > MAX_BLOCK_RAW as usize / 2 {
            return Err(LogError::Config(format!(
                "block_bytes must be 1..={}",
                MAX_BLOCK_RAW / 2
            )));
        }
        if !zstd::compression_level_range().contains(&self.zstd_level) {
            return Err(LogError::Config(format!(
                "zstd level {} out of range",
                self.zstd_level
            )));
        }
        Ok(())
    }
}

/// What an append, flush or poll achieved: records `0..durable` are on disk
/// and fsynced (they survive a crash of the writer or of the machine); records
/// `durable..appended` are accepted but not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    /// Records accepted so far (the next record's number).
    pub appended: u64,
    /// Records durable so far.
    pub durable: u64,
}

/// What sealing produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealSummary {
    /// Records in the log.
    pub records: u64,
    /// Blocks in the log.
    pub blocks: u64,
    /// The last block's chain hash: keep a copy elsewhere to detect a
    /// wholesale rewrite of the file.
    pub chain_head: Hash32,
    /// The trailer's seal hash.
    pub seal_hash: Hash32,
    /// File length.
    pub file_bytes: u64,
}

/// What recovery found and did when reopening a log whose writer died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records kept (every one of them checked).
    pub kept_records: u64,
    /// Blocks kept.
    pub kept_blocks: u64,
    /// Bytes cut from the end (a torn, never-acknowledged tail).
    pub truncated_bytes: u64,
    /// The torn tail that was cut, if any.
    pub torn: Option<Fault>,
}

/// A record encoded by its producer: its type id and postcard payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedRecord<'a> {
    /// The record type id.
    pub type_id: u16,
    /// The payload.
    pub payload: &'a [u8],
    /// The timepoint the producer says the record has; it must be the one
    /// the payload holds (the index is built from it).
    pub timepoint: Option<vcpu::Timepoint>,
}

/// Appends records to a log file.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    config: WriterConfig,
    compressor: zstd::bulk::Compressor<'static>,
    /// Frames of the open (not yet written) block.
    frames: Vec<u8>,
    frames_records: u32,
    /// End of the last completed frame in `frames`.
    frames_end: usize,
    frames_spans: Vec<VcpuSpan>,
    /// Timepoints of a validated encoded batch (reused).
    scratch_tps: Vec<Option<vcpu::Timepoint>>,
    /// Scratch for a block as written: header then payload.
    out: Vec<u8>,
    chain: Hash32,
    entries: Vec<IndexEntry>,
    counts: [u64; RecordType::MAX_ID as usize + 1],
    file_len: u64,
    appended: u64,
    written: u64,
    durable: u64,
    unsynced_bytes: u64,
    oldest_unsynced: Option<Instant>,
    poisoned: bool,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .field("appended", &self.appended)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// Rename `from` to `to` unless `to` exists (never replacing a log), with
/// `renameat2(RENAME_NOREPLACE)`; where the filesystem lacks it, hard-link
/// then unlink, which is equally no-clobber. (The log domain's seccomp
/// filter allows `renameat2` and `unlinkat`.)
fn move_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (cfrom, cto) = (c(from)?, c(to)?);
    // SAFETY: both pointers are NUL-terminated strings that outlive the call;
    // renameat2 reads them and touches no other memory of ours.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(e),
    }
}

fn sync_dir(path: &Path) -> Result<(), LogError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory of", path, e))
}

impl LogWriter {
    fn with_file(
        file: File,
        path: &Path,
        config: WriterConfig,
        chain: Hash32,
        file_len: u64,
    ) -> Result<LogWriter, LogError> {
        config.check()?;
        let compressor = zstd::bulk::Compressor::new(config.zstd_level)
            .map_err(|e| LogError::io("create zstd context for", path, e))?;
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            config,
            compressor,
            frames: Vec::with_capacity(config.block_bytes + 4096),
            frames_records: 0,
            frames_end: 0,
            frames_spans: Vec::new(),
            scratch_tps: Vec::new(),
            out: Vec::new(),
            chain,
            entries: Vec::new(),
            counts: [0; RecordType::MAX_ID as usize + 1],
            file_len,
            appended: 0,
            written: 0,
            durable: 0,
            unsynced_bytes: 0,
            oldest_unsynced: None,
            poisoned: false,
        })
    }

    /// Create a new log. The header is written to a temporary name, fsynced
    /// and then renamed into place (no-clobber), so `path` either does not exist or holds a
    /// complete header; an existing `path` is never replaced.
    pub fn create(
        path: impl AsRef<Path>,
        machine: &MachineInfo,
        config: WriterConfig,
    ) -> Result<LogWriter, LogError> {
        let path = path.as_ref();
        config.check()?;
        if path.exists() {
            return Err(LogError::Exists(path.to_path_buf()));
        }
        let header = format::encode_file_header(machine);
        if header.len() > format::FILE_HEADER_FIXED + format::MAX_MACHINE_LEN as usize + 4 {
            return Err(LogError::Config(format!(
                "machine description of {} bytes exceeds the {}-byte maximum",
                header.len() - format::FILE_HEADER_FIXED - 4,
                format::MAX_MACHINE_LEN
            )));
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".creating-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| LogError::io("create", &tmp, e))?;
        let linked = file
            .write_all(&header)
            .and_then(|_| file.sync_all())
            .map_err(|e| LogError::io("write header to", &tmp, e))
            .and_then(|_| {
                move_into_place(&tmp, path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        LogError::Exists(path.to_path_buf())
                    } else {
                        LogError::io("move into place", path, e)
                    }
                })
            });
        if linked.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        linked?;
        sync_dir(path)?;
        let chain = format::genesis_hash(&header);
        Self::with_file(file, path, config, chain, header.len() as u64)
    }

    /// Reopen a log whose writer stopped without sealing, to append more.
    /// A torn tail (the end of a write that never completed, so never
    /// acknowledged) is truncated to the last complete, checked block; any
    /// other damage is refused untouched. A sealed log is refused.
    pub fn recover(
        path: impl AsRef<Path>,
        config: WriterConfig,
    ) -> Result<(LogWriter, Recovery), LogError> {
        let path = path.as_ref();
        // O_APPEND: every write lands at the end, whatever else happens.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| LogError::io("open", path, e))?;
        let s = scan::scan(&file).map_err(|e| LogError::io("read", path, e))?;
        if s.sealed.is_some() {
            return Err(LogError::Sealed);
        }
        let mut torn = None;
        if let Some(f) = s.fault {
            if !f.torn_tail || s.machine.is_none() {
                return Err(LogError::NotATornTail(f));
            }
            file.set_len(s.blocks_end)
                .and_then(|_| file.sync_all())
                .map_err(|e| LogError::io("truncate torn tail of", path, e))?;
            torn = Some(f);
        }
        let mut w = Self::with_file(file, path, config, s.chain_head, s.blocks_end)?;
        for (t, c) in &s.counts {
            if let Some(slot) = w.counts.get_mut(usize::from(*t)) {
                *slot = *c;
            }
        }
        w.entries = s.blocks.iter().map(|b| b.entry.clone()).collect();
        w.appended = s.records;
        w.written = s.records;
        w.durable = s.records;
        let recovery = Recovery {
            kept_records: s.records,
            kept_blocks: s.blocks.len() as u64,
            truncated_bytes: s.file_len - s.blocks_end,
            torn,
        };
        Ok((w, recovery))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current acknowledgement state.
    pub fn ack(&self) -> Ack {
        Ack {
            appended: self.appended,
            durable: self.durable,
        }
    }

    /// Blocks written so far.
    pub fn blocks_written(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The chain hash of the last block written.
    pub fn chain_head(&self) -> Hash32 {
        self.chain
    }

    /// Append records. Returns once they are accepted; the [`Ack`] says how
    /// many records (of all appended so far) are durable under the policy.
    /// Blocks are written as they fill, so memory use stays bounded by one
    /// block: a producer faster than the disk waits here.
    pub fn append(&mut self, records: &[Record]) -> Result<Ack, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        for r in records {
            self.push(r)?;
            if self.frames.len() >= self.config.block_bytes {
                self.write_block()?;
            }
        }
        self.after_batch()
    }

    /// Make everything appended so far durable now.
    pub fn flush(&mut self) -> Result<Ack, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        self.sync_all_pending()?;
        Ok(self.ack())
    }

    /// Under [`Durability::Interval`], fsync if the interval has passed
    /// (call it when idle: see [`LogWriter::next_deadline`]).
    pub fn poll(&mut self) -> Result<Ack, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        self.sync_if_due()?;
        Ok(self.ack())
    }

    /// When [`LogWriter::poll`] next has work to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.config.durability {
            Durability::Interval(d) => self.oldest_unsynced.map(|t| t + d),
            _ => None,
        }
    }

    /// Write the index and trailer and fsync: the log is final.
    pub fn seal(mut self) -> Result<SealSummary, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        self.write_pending_block()?;
        let counts = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(t, c)| (t as u16, *c))
            .collect();
        let body = IndexBody {
            entries: std::mem::take(&mut self.entries),
            counts,
        };
        let index = format::encode_index(&body);
        let mut t = Trailer {
            index_offset: self.file_len,
            index_len: index.len() as u64,
            total_records: self.written,
            block_count: body.entries.len() as u64,
            chain_head: self.chain,
            seal_hash: [0; 32],
        };
        t.seal_hash = t.compute_seal(&index);
        let mut tail = index;
        tail.extend_from_slice(&t.encode());
        self.write_raw(&tail)?;
        self.sync()?;
        Ok(SealSummary {
            records: self.written,
            blocks: t.block_count,
            chain_head: self.chain,
            seal_hash: t.seal_hash,
            file_bytes: self.file_len,
        })
    }

    /// Append records that arrive already encoded (type id and postcard
    /// payload, as over the `LogAppend` channel). The producer is not
    /// trusted: every payload must decode as its type, or the whole batch is
    /// refused ([`LogError::InvalidRecord`]) and nothing of it is taken.
    pub fn append_encoded(&mut self, records: &[EncodedRecord<'_>]) -> Result<Ack, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        self.scratch_tps.clear();
        for (index, r) in records.iter().enumerate() {
            let invalid = |reason: String| LogError::InvalidRecord { index, reason };
            if r.payload.len() > MAX_RECORD_PAYLOAD {
                return Err(invalid(format!(
                    "payload of {} bytes exceeds the {MAX_RECORD_PAYLOAD}-byte maximum",
                    r.payload.len()
                )));
            }
            let decoded =
                Record::decode(r.type_id, r.payload).map_err(|e| invalid(e.to_string()))?;
            let tp = decoded.timepoint().copied();
            if tp != r.timepoint {
                return Err(invalid(format!(
                    "timepoint {:?} disagrees with the payload's {tp:?}",
                    r.timepoint
                )));
            }
            self.scratch_tps.push(tp);
        }
        for (i, r) in records.iter().enumerate() {
            let start = format::begin_frame(&mut self.frames);
            self.frames.extend_from_slice(r.payload);
            let tp = self.scratch_tps[i];
            self.place_frame(start, r.payload.len())?;
            self.finish_frame_at(r.type_id, tp.as_ref());
            if self.frames.len() >= self.config.block_bytes {
                self.write_block()?;
            }
        }
        self.after_batch()
    }

    fn after_batch(&mut self) -> Result<Ack, LogError> {
        match self.config.durability {
            Durability::EveryBatch => self.sync_all_pending()?,
            Durability::Interval(_) => self.sync_if_due()?,
            Durability::AtSeal => {}
        }
        Ok(self.ack())
    }

    /// The frame begun at `start` with a payload of `len` bytes is in
    /// `self.frames`; if the open block cannot take it, close the block and
    /// move the frame into the next one. Returns where the frame now starts.
    #[inline]
    fn place_frame(&mut self, start: usize, len: usize) -> Result<usize, LogError> {
        if len > MAX_RECORD_PAYLOAD {
            self.frames.truncate(start);
            return Err(LogError::RecordTooLarge {
                size: len,
                max: MAX_RECORD_PAYLOAD,
            });
        }
        // The frame's CRC is still to come: 4 more bytes.
        if start > 0 && self.frames.len() + 4 > MAX_BLOCK_RAW as usize {
            let frame: Vec<u8> = self.frames.split_off(start);
            self.write_block()?;
            self.frames.extend_from_slice(&frame);
            return Ok(0);
        }
        Ok(start)
    }

    #[inline]
    fn push(&mut self, r: &Record) -> Result<(), LogError> {
        let start = format::begin_frame(&mut self.frames);
        if let Err(e) = r.encode_into(&mut self.frames) {
            self.frames.truncate(start);
            return Err(e.into());
        }
        let len = self.frames.len() - start - 6;
        self.place_frame(start, len)?;
        self.finish_frame_at(r.record_type().id(), r.timepoint());
        Ok(())
    }

    /// Complete the last frame in `self.frames` (it starts at the frame
    /// boundary recorded by `frame_start`) and account for it.
    #[inline]
    fn finish_frame_at(&mut self, type_id: u16, tp: Option<&vcpu::Timepoint>) {
        let start = self.frame_start();
        format::finish_frame(&mut self.frames, start, type_id);
        if let Some(c) = self.counts.get_mut(usize::from(type_id)) {
            *c += 1;
        }
        if let Some(tp) = tp {
            format::extend_spans(&mut self.frames_spans, tp);
        }
        self.frames_records += 1;
        self.frames_end = self.frames.len();
        self.appended += 1;
        if self.oldest_unsynced.is_none() {
            self.oldest_unsynced = Some(Instant::now());
        }
    }

    /// Where the frame being completed starts: just after the last completed one.
    #[inline]
    fn frame_start(&self) -> usize {
        self.frames_end
    }

    fn sync_if_due(&mut self) -> Result<(), LogError> {
        if let Durability::Interval(d) = self.config.durability {
            let due = self.oldest_unsynced.is_some_and(|t| t.elapsed() >= d);
            if due || self.unsynced_bytes >= self.config.max_unsynced_bytes {
                self.sync_all_pending()?;
            }
        }
        Ok(())
    }

    fn sync_all_pending(&mut self) -> Result<(), LogError> {
        self.write_pending_block()?;
        if self.durable < self.written {
            self.sync()?;
        }
        Ok(())
    }

    fn write_pending_block(&mut self) -> Result<(), LogError> {
        if self.frames_records > 0 {
            self.write_block()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(LogError::io("fsync", &self.path, e));
        }
        self.durable = self.written;
        self.unsynced_bytes = 0;
        self.oldest_unsynced = (self.appended > self.durable).then(Instant::now);
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if let Err(e) = self.file.write_all(bytes) {
            self.poisoned = true;
            return Err(LogError::io("append to", &self.path, e));
        }
        self.file_len += bytes.len() as u64;
        self.unsynced_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Close the open block: compress (or store), chain, write in one call.
    fn write_block(&mut self) -> Result<(), LogError> {
        let raw_len = self.frames.len();
        let bound = zstd::zstd_safe::compress_bound(raw_len);
        if self.out.len() < BLOCK_HEADER_LEN + bound.max(raw_len) {
            self.out.resize(BLOCK_HEADER_LEN + bound.max(raw_len), 0);
        }
        let compressed = self
            .compressor
            .compress_to_buffer(&self.frames[..], &mut self.out[BLOCK_HEADER_LEN..])
            .ok()
            .filter(|n| *n < raw_len);
        let (codec, stored_len) = match compressed {
            Some(n) => (CODEC_ZSTD, n),
            None => {
                self.out[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + raw_len]
                    .copy_from_slice(&self.frames);
                (CODEC_NONE, raw_len)
            }
        };
        let mut h = BlockHeader {
            index: self.entries.len() as u64,
            first_record: self.written,
            record_count: self.frames_records,
            raw_len: raw_len as u32,
            stored_len: stored_len as u32,
            codec,
            chain_hash: [0; 32],
        };
        let end = BLOCK_HEADER_LEN + stored_len;
        h.chain_hash = h.compute_chain(&self.chain, &self.out[BLOCK_HEADER_LEN..end]);
        h.encode(&mut self.out[..BLOCK_HEADER_LEN]);
        let offset = self.file_len;
        let out = std::mem::take(&mut self.out);
        let written = self.write_raw(&out[..end]);
        self.out = out;
        written?;
        self.chain = h.chain_hash;
        self.entries.push(IndexEntry {
            offset,
            first_record: h.first_record,
            record_count: h.record_count,
            raw_len: h.raw_len,
            stored_len: h.stored_len,
            spans: std::mem::take(&mut self.frames_spans),
        });
        self.written += u64::from(self.frames_records);
        self.frames.clear();
        self.frames_end = 0;
        self.frames_records = 0;
        Ok(())
    }
}
