//! virtio-blk, legacy (virtio 0.9.5) PCI interface, one virtqueue, backed by
//! an image file with a copy-on-write overlay (guest writes never reach the
//! file, so an image can be hashed and replayed against).
//!
//! A request goes through three steps, split so that the slow one can run
//! on another thread while the guest keeps running, as on real hardware:
//!
//! 1. [`VirtioBlk::take_requests`], on the vCPU's thread when the guest
//!    notifies the queue: walk and validate each available descriptor chain
//!    and turn it into a [`Request`] (addresses, sector, and for writes the
//!    bytes, copied out of guest memory now).
//! 2. [`DiskImage::execute`], anywhere (the live environment runs it on a
//!    host worker thread, `live/disk_worker.rs`): the real disk I/O. It
//!    never touches guest memory; it returns a [`Done`] with the bytes to
//!    write back.
//! 3. [`VirtioBlk::complete`], on the vCPU's thread when the environment
//!    delivers the completion: the [`DmaOp`]s in the order a device makes
//!    them visible — data, status byte, used-ring element, used index, then
//!    the interrupt — which the environment hands to the machine as
//!    asynchronous inputs. The used index is never visible before the data.
//!
//! Guest-controlled rings are hostile input: every address, length, index and
//! chain is checked; a malformed ring marks the device broken (as QEMU's
//! `virtio_error` does) until the driver resets it. A request that is well
//! formed but cannot be served (out of range, too long, a write to a
//! read-only disk, an unknown type) completes with an error status instead.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Sector size.
pub const SECTOR: u64 = 512;
/// The queue size the device offers (QEMU's default for virtio-blk).
pub const QUEUE_SIZE: u16 = 256;
/// Size of the legacy register block (BAR 0).
pub const REGS_SIZE: u16 = 0x40;
/// Largest transfer of one request; longer requests fail with IOERR.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const F_RO: u32 = 1 << 5;
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
/// The serial number GET_ID returns.
pub const DEVICE_ID: &[u8; 20] = b"cas-motion-disk\0\0\0\0\0";

/// Failure opening a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image could not be opened or sized.
    #[error("cannot open disk image {path}: {reason}")]
    Open {
        /// The image path.
        path: String,
        /// Why.
        reason: std::io::Error,
    },
}

/// What the guest can see of a disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Capacity in sectors.
    pub sectors: u64,
    /// Whether writes fail (and the device offers VIRTIO_BLK_F_RO).
    pub read_only: bool,
}

/// The disk contents: an image file plus an in-memory overlay of written sectors.
#[derive(Debug)]
pub struct DiskImage {
    file: Option<File>,
    sectors: u64,
    overlay: HashMap<u64, [u8; SECTOR as usize]>,
    read_only: bool,
}

impl DiskImage {
    /// Open an image file (read-only; guest writes go to the overlay unless
    /// `read_only`, in which case they fail).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let err = |reason| DiskError::Open {
            path: path.display().to_string(),
            reason,
        };
        let file = File::open(path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        Ok(DiskImage {
            file: Some(file),
            sectors: len / SECTOR,
            overlay: HashMap::new(),
            read_only,
        })
    }

    /// An all-zero disk of `sectors` sectors, for tests and fuzzing.
    pub fn zeroed(sectors: u64) -> Self {
        DiskImage {
            file: None,
            sectors,
            overlay: HashMap::new(),
            read_only: false,
        }
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Capacity and write permission, for the device's registers.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            sectors: self.sectors,
            read_only: self.read_only,
        }
    }

    fn read_sector(&self, n: u64, buf: &mut [u8; SECTOR as usize]) -> std::io::Result<()> {
        if let Some(s) = self.overlay.get(&n) {
            buf.copy_from_slice(s);
            return Ok(());
        }
        match &self.file {
            Some(f) => f.read_exact_at(buf, n * SECTOR),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// Carry out a validated request: the real I/O. Requests must be
    /// executed in the order they were taken, so a read sees the writes
    /// queued before it.
    pub fn execute(&mut self, req: Request) -> Done {
        let mut writes = Vec::new();
        let mut written = 0u32;
        let status = match req.op {
            BlkOp::Read { sector, bufs } => {
                let total: u64 = bufs.iter().map(|&(_, len)| len as u64).sum();
                let mut bytes = Vec::with_capacity(total as usize);
                let mut buf = [0u8; SECTOR as usize];
                let mut ok = true;
                for s in 0..total / SECTOR {
                    if self.read_sector(sector + s, &mut buf).is_err() {
                        ok = false;
                        break;
                    }
                    bytes.extend_from_slice(&buf);
                }
                if ok {
                    let mut off = 0usize;
                    for (gpa, len) in bufs {
                        let n = len as usize;
                        writes.push((gpa, bytes[off..off + n].to_vec()));
                        off += n;
                    }
                    written = total as u32;
                    S_OK
                } else {
                    S_IOERR
                }
            }
            BlkOp::Write { sector, data } => {
                for (k, chunk) in data.chunks_exact(SECTOR as usize).enumerate() {
                    let mut s = [0u8; SECTOR as usize];
                    s.copy_from_slice(chunk);
                    self.overlay.insert(sector + k as u64, s);
                }
                S_OK
            }
            BlkOp::GetId { gpa, len } => {
                let n = (len as usize).min(DEVICE_ID.len());
                writes.push((gpa, DEVICE_ID[..n].to_vec()));
                written = n as u32;
                S_OK
            }
            BlkOp::Flush => S_OK,
            BlkOp::Fail(status) => status,
        };
        Done {
            generation: req.generation,
            head: req.head,
            status_gpa: req.status_gpa,
            status,
            writes,
            written,
        }
    }
}

/// What a validated request asks the disk to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkOp {
    /// Read whole sectors from `sector` into the guest buffers, in order.
    Read {
        /// First sector.
        sector: u64,
        /// Guest buffers (address, length), device-writable, lengths summing
        /// to whole sectors.
        bufs: Vec<(u64, u32)>,
    },
    /// Write these bytes (whole sectors, copied from the guest at notify
    /// time) from `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Write the device's serial number into a guest buffer.
    GetId {
        /// Guest address.
        gpa: u64,
        /// Buffer length.
        len: u32,
    },
    /// Make writes durable (a no-op: writes live in memory).
    Flush,
    /// Complete with this error status without touching the disk.
    Fail(u8),
}

/// A request taken from the ring, validated, ready for [`DiskImage::execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The device's generation when the request was taken; a completion
    /// from before a reset or queue change is dropped.
    pub generation: u64,
    /// Head descriptor index (the used-ring element's id).
    pub head: u16,
    /// Where the status byte goes.
    pub status_gpa: u64,
    /// What to do.
    pub op: BlkOp,
}

/// A carried-out request: what [`VirtioBlk::complete`] makes visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// As in the [`Request`].
    pub generation: u64,
    /// As in the [`Request`].
    pub head: u16,
    /// As in the [`Request`].
    pub status_gpa: u64,
    /// The virtio status byte.
    pub status: u8,
    /// Bytes for guest memory (address, data), in order.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Bytes written into guest buffers (the used element's length, less
    /// the status byte).
    pub written: u32,
}

/// What the device does to the machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmaOp {
    /// Write bytes into guest memory.
    Write {
        /// Guest-physical address.
        gpa: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Set the ISR's queue bit and assert the interrupt line.
    Interrupt,
}

/// The virtio-blk function (registers and queue state).
#[derive(Debug)]
pub struct VirtioBlk {
    geometry: Geometry,
    guest_features: u32,
    queue_pfn: u32,
    queue_sel: u16,
    status: u8,
    isr: u8,
    last_avail: u16,
    used_idx: u16,
    kicked: bool,
    broken: Option<String>,
    generation: u64,
}

fn rd<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, gpa: u64) -> Result<T, String> {
    mem.read_obj(GuestAddress(gpa))
        .map_err(|e| format!("reading guest memory at {gpa:#x}: {e}"))
}

struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl VirtioBlk {
    /// A device in reset state for a disk of `geometry`.
    pub fn new(geometry: Geometry) -> Self {
        VirtioBlk {
            geometry,
            guest_features: 0,
            queue_pfn: 0,
            queue_sel: 0,
            status: 0,
            isr: 0,
            last_avail: 0,
            used_idx: 0,
            kicked: false,
            broken: None,
            generation: 0,
        }
    }

    fn reset(&mut self) {
        *self = VirtioBlk {
            generation: self.generation.wrapping_add(1),
            ..VirtioBlk::new(self.geometry)
        };
    }

    /// Why the device stopped processing, if a malformed ring broke it.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The INTx line level.
    pub fn line(&self) -> bool {
        self.isr & 1 != 0
    }

    fn host_features(&self) -> u32 {
        if self.geometry.read_only { F_RO } else { 0 }
    }

    fn reg_bytes(&self) -> [u8; REGS_SIZE as usize] {
        let mut r = [0u8; REGS_SIZE as usize];
        r[0..4].copy_from_slice(&self.host_features().to_le_bytes());
        r[4..8].copy_from_slice(&self.guest_features.to_le_bytes());
        let pfn = if self.queue_sel == 0 {
            self.queue_pfn
        } else {
            0
        };
        r[8..12].copy_from_slice(&pfn.to_le_bytes());
        let qs = if self.queue_sel == 0 { QUEUE_SIZE } else { 0 };
        r[12..14].copy_from_slice(&qs.to_le_bytes());
        r[14..16].copy_from_slice(&self.queue_sel.to_le_bytes());
        r[0x12] = self.status;
        r[0x13] = self.isr;
        r[0x14..0x1c].copy_from_slice(&self.geometry.sectors.to_le_bytes());
        r[0x28..0x2c].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        r
    }

    /// A register read at `offset` in the BAR; reading the ISR clears it.
    pub fn read(&mut self, offset: u16, size: u8) -> u32 {
        let r = self.reg_bytes();
        let mut v = 0u32;
        for i in 0..size.min(4) as u16 {
            let b = r.get((offset + i) as usize).copied().unwrap_or(0);
            v |= (b as u32) << (8 * i);
        }
        if (offset..offset + size as u16).contains(&0x13) {
            self.isr = 0;
        }
        v
    }

    /// A register write. Only naturally sized accesses to the writable
    /// registers take effect.
    pub fn write(&mut self, offset: u16, size: u8, val: u32) {
        match (offset, size) {
            (0x04, 4) => self.guest_features = val & self.host_features(),
            (0x08, 4) if self.queue_sel == 0 => {
                if val != self.queue_pfn {
                    // Requests in flight belong to the old ring.
                    self.generation = self.generation.wrapping_add(1);
                }
                self.queue_pfn = val;
                if val == 0 {
                    self.last_avail = 0;
                    self.used_idx = 0;
                }
            }
            (0x0e, 2) => self.queue_sel = val as u16,
            (0x10, 2) if val == 0 => self.kicked = true,
            (0x12, 1) => {
                if val == 0 {
                    self.reset();
                } else {
                    self.status = val as u8;
                }
            }
            _ => {}
        }
    }

    /// Whether a notified queue may have requests to take.
    pub fn has_work(&self) -> bool {
        self.kicked && self.queue_pfn != 0 && self.broken.is_none()
    }

    fn ring(&self) -> (u64, u64, u64) {
        let desc = (self.queue_pfn as u64) << 12;
        let n = QUEUE_SIZE as u64;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4096);
        (desc, avail, used)
    }

    /// Take up to `max` available requests (fewer if the ring runs dry or
    /// turns out malformed, which breaks the device). `dma_allowed` is the
    /// PCI bus-master bit. While requests remain beyond `max`, the queue
    /// stays notified ([`VirtioBlk::has_work`]).
    pub fn take_requests(
        &mut self,
        mem: &GuestMemoryMmap,
        dma_allowed: bool,
        max: usize,
    ) -> Vec<Request> {
        let mut out = Vec::new();
        if !dma_allowed {
            return out;
        }
        while self.has_work() && out.len() < max {
            match self.try_take(mem) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => self.kicked = false,
                Err(why) => {
                    tracing::warn!("virtio-blk: {why}; device broken until reset");
                    self.broken = Some(why);
                }
            }
        }
        out
    }

    fn desc(&self, mem: &GuestMemoryMmap, table: u64, i: u16) -> Result<Desc, String> {
        if i >= QUEUE_SIZE {
            return Err(format!("descriptor index {i} out of range"));
        }
        let a = table + 16 * i as u64;
        Ok(Desc {
            addr: rd(mem, a)?,
            len: rd(mem, a + 8)?,
            flags: rd(mem, a + 12)?,
            next: rd(mem, a + 14)?,
        })
    }

    fn try_take(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Request>, String> {
        let (table, avail, _) = self.ring();
        let avail_idx: u16 = rd(mem, avail + 2)?;
        if avail_idx == self.last_avail {
            return Ok(None);
        }
        if avail_idx.wrapping_sub(self.last_avail) > QUEUE_SIZE {
            return Err(format!(
                "avail index {avail_idx} is more than a queue ahead of {}",
                self.last_avail
            ));
        }
        let slot = avail + 4 + 2 * (self.last_avail % QUEUE_SIZE) as u64;
        let head: u16 = rd(mem, slot)?;
        self.last_avail = self.last_avail.wrapping_add(1);

        // Walk the chain.
        let mut chain = Vec::new();
        let mut i = head;
        loop {
            if chain.len() >= QUEUE_SIZE as usize {
                return Err(format!("descriptor chain from {head} loops"));
            }
            let d = self.desc(mem, table, i)?;
            let more = d.flags & DESC_NEXT != 0;
            let next = d.next;
            chain.push(d);
            if !more {
                break;
            }
            i = next;
        }
        let [hdr, data @ .., status] = chain.as_slice() else {
            return Err(format!("request {head} has {} descriptor(s)", chain.len()));
        };
        if hdr.flags & DESC_WRITE != 0 || hdr.len < 16 {
            return Err(format!("request {head}: bad header descriptor"));
        }
        if status.flags & DESC_WRITE == 0 || status.len < 1 {
            return Err(format!("request {head}: bad status descriptor"));
        }
        let kind: u32 = rd(mem, hdr.addr)?;
        let sector: u64 = rd(mem, hdr.addr + 8)?;
        let total: u64 = data.iter().map(|d| d.len as u64).sum();
        let geometry = self.geometry;
        let op = match kind {
            T_IN | T_OUT if total > MAX_REQUEST_BYTES || total % SECTOR != 0 => {
                BlkOp::Fail(S_IOERR)
            }
            T_IN | T_OUT
                if sector
                    .checked_add(total / SECTOR)
                    .is_none_or(|end| end > geometry.sectors) =>
            {
                BlkOp::Fail(S_IOERR)
            }
            T_IN => {
                if data.iter().any(|d| d.flags & DESC_WRITE == 0) {
                    return Err(format!("request {head}: read into a read-only buffer"));
                }
                BlkOp::Read {
                    sector,
                    bufs: data.iter().map(|d| (d.addr, d.len)).collect(),
                }
            }
            T_OUT if geometry.read_only => BlkOp::Fail(S_IOERR),
            T_OUT => {
                // Copied now: the guest may reuse its buffers once the
                // request completes, and the disk runs elsewhere.
                let mut bytes = Vec::with_capacity(total as usize);
                for d in data {
                    let mut b = vec![0u8; d.len as usize];
                    mem.read_slice(&mut b, GuestAddress(d.addr))
                        .map_err(|e| format!("request {head}: reading {:#x}: {e}", d.addr))?;
                    bytes.extend_from_slice(&b);
                }
                BlkOp::Write {
                    sector,
                    data: bytes,
                }
            }
            T_FLUSH => BlkOp::Flush,
            T_GET_ID => match data.first().filter(|d| d.flags & DESC_WRITE != 0) {
                Some(d) => BlkOp::GetId {
                    gpa: d.addr,
                    len: d.len,
                },
                None => BlkOp::Fail(S_IOERR),
            },
            _ => BlkOp::Fail(S_UNSUPP),
        };
        Ok(Some(Request {
            generation: self.generation,
            head,
            status_gpa: status.addr,
            op,
        }))
    }

    /// Make a carried-out request visible: its data, the status byte, the
    /// used-ring element and index (in that order, so the driver never sees
    /// the index before the data), then the interrupt. `None` for a
    /// completion the driver no longer expects (the device was reset, the
    /// queue moved, or a malformed ring broke it).
    pub fn complete(&mut self, done: Done) -> Option<Vec<DmaOp>> {
        if done.generation != self.generation || self.queue_pfn == 0 || self.broken.is_some() {
            return None;
        }
        let (_, _, used) = self.ring();
        let mut ops: Vec<DmaOp> = done
            .writes
            .into_iter()
            .map(|(gpa, data)| DmaOp::Write { gpa, data })
            .collect();
        ops.push(DmaOp::Write {
            gpa: done.status_gpa,
            data: vec![done.status],
        });
        let elem = used + 4 + 8 * (self.used_idx % QUEUE_SIZE) as u64;
        let mut e = Vec::with_capacity(8);
        e.extend_from_slice(&(done.head as u32).to_le_bytes());
        e.extend_from_slice(&done.written.wrapping_add(1).to_le_bytes());
        ops.push(DmaOp::Write { gpa: elem, data: e });
        self.used_idx = self.used_idx.wrapping_add(1);
        ops.push(DmaOp::Write {
            gpa: used + 2,
            data: self.used_idx.to_le_bytes().to_vec(),
        });
        ops.push(DmaOp::Interrupt);
        Some(ops)
    }

    /// Called when the device's [`DmaOp::Interrupt`] is carried out.
    pub fn raise_interrupt(&mut self) {
        self.isr |= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PFN: u32 = 0x10; // ring at 64 KiB

    fn setup() -> (GuestMemoryMmap, VirtioBlk, DiskImage) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..8 * 512u32)
            .map(|i| (i / 512) as u8 ^ (i as u8))
            .collect();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let disk = DiskImage::open(f.path(), false).unwrap();
        let mut dev = VirtioBlk::new(disk.geometry());
        dev.write(0x12, 1, 7);
        dev.write(0x0e, 2, 0);
        assert_eq!(dev.read(0x0c, 2), QUEUE_SIZE as u32);
        dev.write(0x08, 4, PFN);
        (mem, dev, disk)
    }

    /// Take, execute and complete one request, as the live environment does
    /// (there across two threads).
    fn process_one(
        dev: &mut VirtioBlk,
        disk: &mut DiskImage,
        mem: &GuestMemoryMmap,
        dma: bool,
    ) -> Option<Vec<DmaOp>> {
        let req = dev.take_requests(mem, dma, 1).pop()?;
        dev.complete(disk.execute(req))
    }

    fn desc(mem: &GuestMemoryMmap, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let d = ((PFN as u64) << 12) + 16 * i;
        mem.write_obj(addr, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        mem.write_obj(next, GuestAddress(d + 14)).unwrap();
    }

    fn publish(mem: &GuestMemoryMmap, head: u16, idx: u16) {
        let avail = ((PFN as u64) << 12) + 16 * QUEUE_SIZE as u64;
        mem.write_obj(head, GuestAddress(avail + 4 + 2 * (idx as u64 - 1)))
            .unwrap();
        mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    }

    fn request(mem: &GuestMemoryMmap, kind: u32, sector: u64, len: u32) {
        mem.write_obj(kind, GuestAddress(0x1000)).unwrap();
        mem.write_obj(sector, GuestAddress(0x1008)).unwrap();
        desc(mem, 0, 0x1000, 16, DESC_NEXT, 1);
        desc(mem, 1, 0x2000, len, DESC_NEXT | DESC_WRITE, 2);
        desc(mem, 2, 0x3000, 1, DESC_WRITE, 0);
    }

    #[test]
    fn reads_sectors_by_dma_then_interrupts() {
        let (mem, mut dev, mut disk) = setup();
        request(&mem, T_IN, 2, 1024);
        publish(&mem, 0, 1);
        assert!(
            process_one(&mut dev, &mut disk, &mem, true).is_none(),
            "not notified yet"
        );
        dev.write(0x10, 2, 0);
        assert!(
            process_one(&mut dev, &mut disk, &mem, false).is_none(),
            "bus master off"
        );
        let ops = process_one(&mut dev, &mut disk, &mem, true).unwrap();
        let DmaOp::Write { gpa, data } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(*gpa, 0x2000);
        assert_eq!(data.len(), 1024);
        assert_eq!(data[0], 2);
        assert_eq!(data[513], 3 ^ 1);
        assert_eq!(
            ops[1],
            DmaOp::Write {
                gpa: 0x3000,
                data: vec![S_OK]
            }
        );
        assert_eq!(ops.last(), Some(&DmaOp::Interrupt));
        assert!(
            process_one(&mut dev, &mut disk, &mem, true).is_none(),
            "queue drained"
        );
        assert!(!dev.line());
        dev.raise_interrupt();
        assert!(dev.line());
        assert_eq!(dev.read(0x13, 1), 1);
        assert!(!dev.line(), "reading the ISR lowers the line");
    }

    #[test]
    fn the_used_index_follows_the_data_and_status() {
        let (mem, mut dev, mut disk) = setup();
        request(&mem, T_IN, 0, 512);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        let ops = process_one(&mut dev, &mut disk, &mem, true).unwrap();
        let used = ((PFN as u64) << 12) + 16 * QUEUE_SIZE as u64 + 6 + 2 * QUEUE_SIZE as u64;
        let used = used.next_multiple_of(4096);
        let gpas: Vec<u64> = ops
            .iter()
            .filter_map(|o| match o {
                DmaOp::Write { gpa, .. } => Some(*gpa),
                DmaOp::Interrupt => None,
            })
            .collect();
        assert_eq!(gpas, [0x2000, 0x3000, used + 4, used + 2]);
        assert_eq!(
            ops[2],
            DmaOp::Write {
                gpa: used + 4,
                data: [0u32.to_le_bytes(), 513u32.to_le_bytes()].concat()
            }
        );
        assert_eq!(ops.len(), 5);
    }

    #[test]
    fn out_of_range_read_fails_with_ioerr() {
        let (mem, mut dev, mut disk) = setup();
        request(&mem, T_IN, 7, 1024);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        let ops = process_one(&mut dev, &mut disk, &mem, true).unwrap();
        assert_eq!(
            ops[0],
            DmaOp::Write {
                gpa: 0x3000,
                data: vec![S_IOERR]
            }
        );
    }

    #[test]
    fn writes_go_to_the_overlay() {
        let (mem, mut dev, mut disk) = setup();
        mem.write_slice(&[0x5a; 512], GuestAddress(0x2000)).unwrap();
        request(&mem, T_OUT, 1, 512);
        desc(&mem, 1, 0x2000, 512, DESC_NEXT, 2);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        let req = dev.take_requests(&mem, true, 1).pop().unwrap();
        // The bytes were copied when the request was taken: the guest
        // changing its buffer afterwards does not change what is written.
        mem.write_slice(&[0x11; 512], GuestAddress(0x2000)).unwrap();
        dev.complete(disk.execute(req)).unwrap();
        request(&mem, T_IN, 1, 512);
        publish(&mem, 0, 2);
        dev.write(0x10, 2, 0);
        let ops = process_one(&mut dev, &mut disk, &mem, true).unwrap();
        assert!(matches!(&ops[0], DmaOp::Write { data, .. } if data.iter().all(|&b| b == 0x5a)));
    }

    #[test]
    fn takes_at_most_max_requests_and_stays_notified() {
        let (mem, mut dev, mut disk) = setup();
        request(&mem, T_IN, 0, 512);
        for idx in 1..=3 {
            publish(&mem, 0, idx);
        }
        dev.write(0x10, 2, 0);
        let first = dev.take_requests(&mem, true, 2);
        assert_eq!(first.len(), 2);
        assert!(dev.has_work(), "a third request waits");
        let rest = dev.take_requests(&mem, true, 8);
        assert_eq!(rest.len(), 1);
        assert!(!dev.has_work());
        for r in first.into_iter().chain(rest) {
            assert!(dev.complete(disk.execute(r)).is_some());
        }
    }

    #[test]
    fn completions_from_before_a_reset_are_dropped() {
        let (mem, mut dev, mut disk) = setup();
        request(&mem, T_IN, 0, 512);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        let req = dev.take_requests(&mem, true, 1).pop().unwrap();
        let done = disk.execute(req);
        dev.write(0x12, 1, 0);
        dev.write(0x12, 1, 7);
        dev.write(0x08, 4, PFN);
        assert!(dev.complete(done.clone()).is_none(), "reset since");
        // Moving the queue also orphans requests in flight.
        let (mem, mut dev, mut disk) = setup();
        request(&mem, T_IN, 0, 512);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        let req = dev.take_requests(&mem, true, 1).pop().unwrap();
        let done = disk.execute(req);
        dev.write(0x08, 4, PFN + 4);
        assert!(dev.complete(done).is_none(), "queue moved since");
    }

    #[test]
    fn looping_chain_breaks_the_device_until_reset() {
        let (mem, mut dev, mut disk) = setup();
        desc(&mem, 0, 0x1000, 16, DESC_NEXT, 1);
        desc(&mem, 1, 0x2000, 16, DESC_NEXT, 0);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        assert!(process_one(&mut dev, &mut disk, &mem, true).is_none());
        assert!(dev.broken().unwrap().contains("loops"));
        dev.write(0x12, 1, 0);
        assert!(dev.broken().is_none());
    }

    #[test]
    fn descriptor_outside_memory_breaks_the_device() {
        let (mem, mut dev, mut disk) = setup();
        mem.write_obj(0u32, GuestAddress(0x1000)).unwrap();
        desc(&mem, 0, 0xffff_0000_0000, 16, DESC_NEXT, 1);
        desc(&mem, 1, 0x3000, 1, DESC_WRITE, 0);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        assert!(process_one(&mut dev, &mut disk, &mem, true).is_none());
        assert!(dev.broken().unwrap().contains("reading guest memory"));
    }

    #[test]
    fn a_single_descriptor_request_breaks_the_device() {
        let (mem, mut dev, mut disk) = setup();
        desc(&mem, 0, 0x1000, 16, 0, 0);
        publish(&mem, 0, 1);
        dev.write(0x10, 2, 0);
        assert!(process_one(&mut dev, &mut disk, &mem, true).is_none());
        assert!(dev.broken().unwrap().contains("1 descriptor(s)"));
    }
}
