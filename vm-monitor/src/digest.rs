//! State digests: what a recording writes at deterministic points so that a
//! replay can prove it is in the same state, and name what differs when not.
//!
//! * The **memory hash** is BLAKE3 over the guest's memory described page by
//!   page: the RAM size (u64 LE), then for every 4 KiB page that is not all
//!   zero, in address order, its page number (u64 LE) and its own BLAKE3.
//!   Zero pages contribute nothing, so never-touched memory costs only a scan
//!   (which with transparent huge pages reads the one huge zero page), and a
//!   changed byte anywhere changes the hash.
//! * The **page table** keeps the first 8 bytes of each page's BLAKE3 (0 for
//!   a zero page). Each digest reports the pages whose entry changed since
//!   the previous one (the `page-hashes` record), so a replay keeps the
//!   recording's table as well as its own and names the first differing page.
//! * The **state check** is a 64-bit hash of the registers and retired
//!   counts, cheap enough to write after every exit that consumed inputs.

use vcpu::{Regs, RetiredCounts, Timepoint, Vcpu, VcpuError};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use motion_records::{Digest, PageHashes};

/// Guest page size the digest works in.
pub const PAGE: usize = 4096;

/// Per-page hashes of guest memory, kept between digests.
#[derive(Debug, Clone)]
pub struct MemoryHasher {
    /// Page number → first 8 bytes of the page's BLAKE3 (LE), 0 = zero page.
    table: Vec<u64>,
    ram: u64,
}

/// What hashing memory found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDigest {
    /// The memory hash (see the module docs).
    pub hash: [u8; 32],
    /// Pages whose table entry changed since the previous digest.
    pub changed: Vec<(u64, u64)>,
}

/// A page whose hash differs between the recording and the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageDifference {
    /// Page number (guest-physical address / 4096).
    pub page: u64,
    /// The recording's page hash (0 = zero page).
    pub expected: u64,
    /// The replay's page hash (0 = zero page).
    pub actual: u64,
}

static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

fn is_zero(page: &[u8]) -> bool {
    // Slice equality is libc's vectorised `bcmp`, fast whatever this
    // crate's optimisation level.
    page == &ZERO_PAGE[..page.len()]
}

impl MemoryHasher {
    /// A table for `ram` bytes of memory, every page zero.
    pub fn new(ram: u64) -> Self {
        MemoryHasher {
            table: vec![0; ram.div_ceil(PAGE as u64) as usize],
            ram,
        }
    }

    /// The current page table.
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// Apply recorded changes to the table (a replay keeping the recording's
    /// table). Pages outside the memory are ignored.
    pub fn apply(&mut self, changes: &[(u64, u64)]) {
        for &(page, hash) in changes {
            if let Some(slot) = self.table.get_mut(page as usize) {
                *slot = hash;
            }
        }
    }

    /// Hash `mem` now. The caller guarantees nothing writes guest memory
    /// meanwhile (the vCPU is stopped: this runs on its thread between runs).
    pub fn digest(&mut self, mem: &GuestMemoryMmap) -> MemoryDigest {
        let mut h = blake3::Hasher::new();
        h.update(&self.ram.to_le_bytes());
        let mut changed = Vec::new();
        for region in mem.iter() {
            let base = region.start_addr().0;
            let len = region.len() as usize;
            // SAFETY: the region's mapping is `len` bytes long and lives as
            // long as `mem`; the vCPU is not running and devices never write
            // guest memory themselves (their writes go through the machine
            // as DMA on this thread), so nothing changes the bytes while
            // this shared view exists.
            let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr().cast_const(), len) };
            for (i, page) in bytes.chunks(PAGE).enumerate() {
                let number = base / PAGE as u64 + i as u64;
                let entry = if is_zero(page) {
                    0
                } else {
                    let ph = blake3::hash(page);
                    h.update(&number.to_le_bytes());
                    h.update(ph.as_bytes());
                    let mut first = [0u8; 8];
                    first.copy_from_slice(&ph.as_bytes()[..8]);
                    // 0 means "zero page": a real hash starting with eight
                    // zero bytes is stored as 1.
                    u64::from_le_bytes(first).max(1)
                };
                if let Some(slot) = self.table.get_mut(number as usize) {
                    if *slot != entry {
                        *slot = entry;
                        changed.push((number, entry));
                    }
                }
            }
        }
        MemoryDigest {
            hash: *h.finalize().as_bytes(),
            changed,
        }
    }

    /// The first page where `expected` and `actual` tables differ.
    pub fn first_difference(expected: &[u64], actual: &[u64]) -> Option<PageDifference> {
        let n = expected.len().max(actual.len());
        (0..n).find_map(|i| {
            let e = expected.get(i).copied().unwrap_or(0);
            let a = actual.get(i).copied().unwrap_or(0);
            (e != a).then_some(PageDifference {
                page: i as u64,
                expected: e,
                actual: a,
            })
        })
    }
}

/// The vCPU's timepoint now, where its counts are exact.
pub fn timepoint(vcpu: &dyn Vcpu, index: u32) -> Result<Option<Timepoint>, VcpuError> {
    let Some(counts) = vcpu.retired() else {
        return Ok(None);
    };
    let regs = vcpu.regs()?;
    Ok(Some(Timepoint {
        vcpu: index,
        branches: counts.branches,
        rip: regs.rip,
        rcx: regs.rcx,
    }))
}

/// The point of a vCPU in either counter mode: its exact timepoint, or on a
/// backend without exact counters `(vcpu, deterministic exits, rip, rcx)`
/// (see `MachineInfo::counter_mode`).
pub fn point(vcpu: &dyn Vcpu, index: u32) -> Result<Timepoint, VcpuError> {
    if let Some(tp) = timepoint(vcpu, index)? {
        return Ok(tp);
    }
    let regs = vcpu.regs()?;
    Ok(Timepoint {
        vcpu: index,
        branches: vcpu.deterministic_exits().unwrap_or(0),
        rip: regs.rip,
        rcx: regs.rcx,
    })
}

/// Pages written by DMA since the last state check: the check covers their
/// contents as well as the registers, so a wrong DMA record is noticed at
/// the next check even when the guest only looks at the data later (or
/// the next DMA write covers it up).
#[derive(Debug, Clone, Default)]
pub struct DmaPages(Vec<u64>);

impl DmaPages {
    /// Note a DMA write of `len` bytes at `gpa`.
    pub fn note(&mut self, gpa: u64, len: usize) {
        if len == 0 {
            return;
        }
        let first = gpa / PAGE as u64;
        let last = gpa.saturating_add(len as u64 - 1) / PAGE as u64;
        self.0.extend(first..=last);
    }

    /// The pages noted since the last call, ascending, each once.
    pub fn take(&mut self) -> Vec<u64> {
        let mut v = std::mem::take(&mut self.0);
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The state-check hash (see `motion_records::StateCheck`): the first 8
/// bytes (LE) of BLAKE3 over the registers (the [`Regs`] fields in
/// declaration order, u64 LE each), the retired instruction and branch
/// counts (u64 LE, 0 where not counted), then for each page in `dma_pages`
/// (ascending) its number (u64 LE) and its 4 KiB of contents now.
pub fn state_hash(
    regs: &Regs,
    retired: Option<RetiredCounts>,
    mem: &GuestMemoryMmap,
    dma_pages: &[u64],
) -> u64 {
    let r = retired.unwrap_or_default();
    let fields = [
        regs.rax,
        regs.rbx,
        regs.rcx,
        regs.rdx,
        regs.rsi,
        regs.rdi,
        regs.rsp,
        regs.rbp,
        regs.r8,
        regs.r9,
        regs.r10,
        regs.r11,
        regs.r12,
        regs.r13,
        regs.r14,
        regs.r15,
        regs.rip,
        regs.rflags,
        r.instructions,
        r.branches,
    ];
    let mut bytes = [0u8; 20 * 8];
    for (chunk, v) in bytes.chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    let mut h = blake3::Hasher::new();
    h.update(&bytes);
    let mut page = [0u8; PAGE];
    for &p in dma_pages {
        // Pages outside RAM hold nothing (the machine dropped such writes).
        if mem
            .read_slice(&mut page, vm_memory::GuestAddress(p * PAGE as u64))
            .is_ok()
        {
            h.update(&p.to_le_bytes());
            h.update(&page);
        }
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Take a full digest of the vCPU and memory: the `digest` record and the
/// `page-hashes` record that follows it.
pub fn take(
    vcpu: &dyn Vcpu,
    index: u32,
    mem: &GuestMemoryMmap,
    hasher: &mut MemoryHasher,
) -> Result<(Digest, PageHashes), VcpuError> {
    let regs = vcpu.regs()?;
    let at = point(vcpu, index)?;
    let m = hasher.digest(mem);
    Ok((
        Digest {
            at,
            regs,
            memory_hash: m.hash,
            retired: vcpu.retired().unwrap_or_default(),
        },
        PageHashes { pages: m.changed },
    ))
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    fn mem(pages: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), pages * PAGE)]).unwrap()
    }

    #[test]
    fn zero_memory_hashes_as_its_size_alone_and_changes_are_reported_once() {
        let m = mem(16);
        let mut h = MemoryHasher::new(16 * PAGE as u64);
        let d0 = h.digest(&m);
        assert_eq!(
            d0.hash,
            *blake3::hash(&(16u64 * PAGE as u64).to_le_bytes()).as_bytes()
        );
        assert!(d0.changed.is_empty());
        m.write_obj(0xabu8, GuestAddress(5 * PAGE as u64 + 17))
            .unwrap();
        let d1 = h.digest(&m);
        assert_ne!(d1.hash, d0.hash);
        assert_eq!(d1.changed.len(), 1);
        assert_eq!(d1.changed[0].0, 5);
        assert_ne!(d1.changed[0].1, 0);
        let d2 = h.digest(&m);
        assert_eq!(d2.hash, d1.hash);
        assert!(d2.changed.is_empty(), "nothing changed since");
        m.write_obj(0u8, GuestAddress(5 * PAGE as u64 + 17))
            .unwrap();
        let d3 = h.digest(&m);
        assert_eq!(d3.hash, d0.hash);
        assert_eq!(d3.changed, vec![(5, 0)]);
    }

    #[test]
    fn a_replayed_table_names_the_first_differing_page() {
        let rec = mem(8);
        let rep = mem(8);
        for m in [&rec, &rep] {
            m.write_obj(1u32, GuestAddress(0x1000)).unwrap();
            m.write_obj(2u32, GuestAddress(0x6000)).unwrap();
        }
        rep.write_obj(3u32, GuestAddress(0x3004)).unwrap();
        rep.write_obj(9u32, GuestAddress(0x6000)).unwrap();
        let mut hr = MemoryHasher::new(8 * PAGE as u64);
        let mut expected = MemoryHasher::new(8 * PAGE as u64);
        expected.apply(&hr.digest(&rec).changed);
        let mut hp = MemoryHasher::new(8 * PAGE as u64);
        hp.digest(&rep);
        let d = MemoryHasher::first_difference(expected.table(), hp.table()).unwrap();
        assert_eq!(d.page, 3);
        assert_eq!(d.expected, 0);
        assert_ne!(d.actual, 0);
    }

    #[test]
    fn the_state_hash_covers_every_register_both_counts_and_dma_pages() {
        let m = mem(4);
        let hash = |r: &Regs, c| state_hash(r, c, &m, &[]);
        let base = Regs::default();
        let h0 = hash(&base, None);
        let mut seen = std::collections::HashSet::from([h0]);
        for i in 0..18 {
            let mut r = base;
            let mut g = [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
            ];
            g[i] = 1;
            [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
            ] = g;
            assert!(seen.insert(hash(&r, None)), "field {i}");
        }
        let c = |i, b| {
            Some(RetiredCounts {
                instructions: i,
                branches: b,
            })
        };
        assert!(seen.insert(hash(&base, c(1, 0))));
        assert!(seen.insert(hash(&base, c(0, 1))));
        let with_page = state_hash(&base, None, &m, &[2]);
        assert!(seen.insert(with_page), "a zero page still counts");
        m.write_obj(1u8, GuestAddress(2 * PAGE as u64 + 9)).unwrap();
        assert!(seen.insert(state_hash(&base, None, &m, &[2])));
        assert_eq!(
            state_hash(&base, None, &m, &[1]),
            state_hash(&base, None, &m, &[1]),
            "deterministic"
        );
        let mut d = DmaPages::default();
        d.note(0x1ff0, 0x20);
        d.note(0x1000, 1);
        d.note(0x5000, 0);
        assert_eq!(d.take(), vec![1, 2]);
        assert!(d.take().is_empty());
    }
}
