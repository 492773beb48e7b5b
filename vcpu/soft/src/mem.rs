//! Guest memory: host pointers into guest RAM, the software TLB, page walks,
//! and the fast/slow access paths every op uses.
//!
//! Fast path: a direct-mapped TLB entry holds the host address of a guest
//! page and a permission byte per (privilege, access kind). A load or store
//! that hits, has the permission and does not cross the page is one tag
//! compare, one bit test and one host memory access. Everything else (miss,
//! A/D bit updates, page crossing, MMIO, stores into pages holding translated
//! code) takes the slow path.
//!
//! Write permission is withheld from the TLB while the leaf's dirty bit is
//! clear (so the first store sets it) and while the page holds translated
//! code (so the store invalidates those blocks).

use std::collections::HashSet;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::cpu::{Cpu, R, Stop, Stopped, cr0, cr4, efer};
use crate::exits::Answer;

/// One contiguous guest RAM region.
#[derive(Debug, Clone, Copy)]
struct Region {
    gpa: u64,
    len: u64,
    host: *mut u8,
}

/// Guest RAM as host pointers.
pub struct Ram {
    regions: Vec<Region>,
    /// Keeps the mappings alive for as long as the raw pointers are used.
    _mem: GuestMemoryMmap,
}

// SAFETY: the raw pointers point into mmap'd regions owned (through Arcs) by
// `_mem`, which is itself Send; the pointers are only dereferenced by the
// thread that owns this `Ram`, and concurrent modification of guest memory by
// other threads (device models) is the same shared-memory situation as a real
// CPU's, using unaligned raw accesses that never create Rust references.
unsafe impl Send for Ram {}

impl Ram {
    /// Take the host address of every region of `mem` once.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mut regions: Vec<Region> = mem
            .iter()
            .map(|r| Region {
                gpa: r.start_addr().0,
                len: r.len(),
                host: r.as_ptr(),
            })
            .collect();
        regions.sort_by_key(|r| r.gpa);
        Ram { regions, _mem: mem }
    }

    /// Host pointer of guest-physical `gpa` if it is RAM, and the bytes left in its region.
    #[inline]
    pub fn host(&self, gpa: u64) -> Option<(*mut u8, u64)> {
        for r in &self.regions {
            if gpa >= r.gpa && gpa - r.gpa < r.len {
                let off = gpa - r.gpa;
                // SAFETY: off < r.len, so the result stays inside the mapping.
                return Some((unsafe { r.host.add(off as usize) }, r.len - off));
            }
        }
        None
    }

    /// Read `buf.len()` bytes of RAM at `gpa`; false if any byte is not RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let Some((p, left)) = self.host(gpa.wrapping_add(done as u64)) else {
                return false;
            };
            let n = (buf.len() - done).min(left as usize);
            // SAFETY: `p` is valid for `left >= n` bytes of the mapping; `buf`
            // is a distinct Rust buffer.
            unsafe { std::ptr::copy_nonoverlapping(p, buf[done..].as_mut_ptr(), n) };
            done += n;
        }
        true
    }

    /// Write `buf` into RAM at `gpa`; false (nothing written past the first
    /// non-RAM byte) if any byte is not RAM.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let Some((p, left)) = self.host(gpa.wrapping_add(done as u64)) else {
                return false;
            };
            let n = (buf.len() - done).min(left as usize);
            // SAFETY: as in `read`.
            unsafe { std::ptr::copy_nonoverlapping(buf[done..].as_ptr(), p, n) };
            done += n;
        }
        true
    }

    /// Read a little-endian u64 of RAM (page-table entries).
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// Permission bits in a TLB entry: supervisor read/write/execute, then the same for user.
pub mod perm {
    /// Read.
    pub const R: u8 = 1;
    /// Write.
    pub const W: u8 = 2;
    /// Execute.
    pub const X: u8 = 4;
}

const TLB_SIZE: usize = 1024;

/// A TLB entry: one 4 KiB linear page.
#[derive(Clone, Copy)]
pub struct TlbEntry {
    /// Linear page address; `u64::MAX` when empty.
    pub vpage: u64,
    /// Host address of the page's first byte (null for non-RAM).
    pub host: *mut u8,
    /// Guest-physical page address.
    pub gpage: u64,
    /// [`perm`] bits for supervisor (bits 0..2) and user (bits 3..5).
    pub perm: u8,
}

/// The software TLB and the set of physical pages holding translated code.
pub struct Tlb {
    /// Direct-mapped entries.
    pub e: Box<[TlbEntry; TLB_SIZE]>,
    /// Guest-physical pages with translated code.
    pub code_pages: HashSet<u64>,
}

// SAFETY: the host pointers in the entries point into guest RAM owned by the
// same vCPU's `Ram` (see its Send impl); they are plain addresses to whichever
// thread runs the vCPU.
unsafe impl Send for Tlb {}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

impl Tlb {
    /// Empty.
    pub fn new() -> Self {
        Tlb {
            e: Box::new(
                [TlbEntry {
                    vpage: u64::MAX,
                    host: std::ptr::null_mut(),
                    gpage: 0,
                    perm: 0,
                }; TLB_SIZE],
            ),
            code_pages: HashSet::new(),
        }
    }

    /// Drop all entries.
    pub fn flush(&mut self) {
        for e in self.e.iter_mut() {
            e.vpage = u64::MAX;
        }
    }

    /// Withdraw write permission from entries mapping guest page `gpage`.
    pub fn protect(&mut self, gpage: u64) {
        for e in self.e.iter_mut() {
            if e.gpage == gpage {
                e.perm &= !(perm::W | (perm::W << 3));
            }
        }
    }

    #[inline(always)]
    fn slot(lin: u64) -> usize {
        (lin >> 12) as usize & (TLB_SIZE - 1)
    }
}

/// Access kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

impl Access {
    fn bit(self) -> u8 {
        match self {
            Access::Read => perm::R,
            Access::Write => perm::W,
            Access::Fetch => perm::X,
        }
    }
}

/// Result of a page walk.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    /// Guest-physical address of the byte.
    pub gpa: u64,
    /// TLB permission bits for the page (before dirty/code/RAM adjustments).
    pub perm: u8,
    /// The leaf's dirty bit is set (or paging is off).
    pub dirty: bool,
}

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

impl Cpu {
    /// Translate a linear address, setting accessed/dirty bits and raising #PF.
    /// `user` is the privilege of the access (false for implicit supervisor accesses).
    pub fn walk(&mut self, lin: u64, acc: Access, user: bool) -> R<Walk> {
        if self.cr0 & cr0::PG == 0 {
            return Ok(Walk {
                gpa: lin & self.lin_mask,
                perm: 0x3f,
                dirty: true,
            });
        }
        let write = acc == Access::Write;
        let pf = |c: &mut Cpu, present: bool, rsvd: bool| -> Stopped {
            let err = (present as u32)
                | ((write as u32) << 1)
                | ((user as u32) << 2)
                | ((rsvd as u32) << 3)
                | (((acc == Access::Fetch && (c.efer & efer::NXE != 0 || c.cr4 & cr4::PAE != 0))
                    as u32)
                    << 4);
            c.cr2 = lin;
            c.fault(14, Some(err))
        };
        let nxe = self.efer & efer::NXE != 0;
        // Walk state: (entry address list for A/D updates, rw, us, nx)
        let mut entries: [(u64, u64); 5] = [(0, 0); 5];
        let mut n = 0usize;
        let (mut rw, mut us, mut nx) = (true, true, false);
        let leaf_base: u64;
        let page_mask: u64;
        if self.long_mode() {
            // Non-canonical addresses fault with #GP before any walk.
            if ((lin as i64) << 16 >> 16) as u64 != lin {
                return Err(self.gp0());
            }
            let mut table = self.cr3 & ADDR_MASK;
            let mut level = 4;
            loop {
                let idx = (lin >> (12 + 9 * (level - 1))) & 0x1ff;
                let ea = table + idx * 8;
                let Some(e) = self.read_pte(ea)? else {
                    return Err(Stopped);
                };
                if e & 1 == 0 {
                    return Err(pf(self, false, false));
                }
                let rsvd = (e >> 63 != 0 && !nxe) || (level == 4 && e & 0x80 != 0);
                if rsvd {
                    return Err(pf(self, true, true));
                }
                entries[n] = (ea, e);
                n += 1;
                rw &= e & 2 != 0;
                us &= e & 4 != 0;
                nx |= nxe && e >> 63 != 0;
                if level == 1 || e & 0x80 != 0 {
                    let shift = 12 + 9 * (level - 1);
                    page_mask = (1u64 << shift) - 1;
                    leaf_base = e & ADDR_MASK & !page_mask;
                    break;
                }
                table = e & ADDR_MASK;
                level -= 1;
            }
        } else if self.cr4 & cr4::PAE != 0 {
            let lin = lin & 0xffff_ffff;
            let pdpte_addr = (self.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
            let Some(pdpte) = self.read_pte(pdpte_addr)? else {
                return Err(Stopped);
            };
            if pdpte & 1 == 0 {
                return Err(pf(self, false, false));
            }
            let mut table = pdpte & ADDR_MASK;
            let mut level = 2;
            loop {
                let idx = (lin >> (12 + 9 * (level - 1))) & 0x1ff;
                let ea = table + idx * 8;
                let Some(e) = self.read_pte(ea)? else {
                    return Err(Stopped);
                };
                if e & 1 == 0 {
                    return Err(pf(self, false, false));
                }
                if e >> 63 != 0 && !nxe {
                    return Err(pf(self, true, true));
                }
                entries[n] = (ea, e);
                n += 1;
                rw &= e & 2 != 0;
                us &= e & 4 != 0;
                nx |= nxe && e >> 63 != 0;
                if level == 1 || e & 0x80 != 0 {
                    page_mask = (1u64 << (12 + 9 * (level - 1))) - 1;
                    leaf_base = e & ADDR_MASK & !page_mask;
                    break;
                }
                table = e & ADDR_MASK;
                level -= 1;
            }
        } else {
            // 32-bit paging, 4 KiB and (with CR4.PSE) 4 MiB pages.
            let lin = lin & 0xffff_ffff;
            let pde_addr = (self.cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4;
            let Some(pde) = self.read_pte32(pde_addr)? else {
                return Err(Stopped);
            };
            if pde & 1 == 0 {
                return Err(pf(self, false, false));
            }
            entries[n] = (pde_addr | 1 << 63, pde);
            n += 1;
            rw &= pde & 2 != 0;
            us &= pde & 4 != 0;
            if pde & 0x80 != 0 && self.cr4 & cr4::PSE != 0 {
                page_mask = (1 << 22) - 1;
                leaf_base = pde & 0xffc0_0000;
            } else {
                let pte_addr = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
                let Some(pte) = self.read_pte32(pte_addr)? else {
                    return Err(Stopped);
                };
                if pte & 1 == 0 {
                    return Err(pf(self, false, false));
                }
                entries[n] = (pte_addr | 1 << 63, pte);
                n += 1;
                rw &= pte & 2 != 0;
                us &= pte & 4 != 0;
                page_mask = 0xfff;
                leaf_base = pte & 0xffff_f000;
            }
        }
        // Permission check for this access.
        let wp = self.cr0 & cr0::WP != 0;
        let ok = match acc {
            Access::Read => !user || us,
            Access::Write => (user && us && rw) || (!user && (rw || !wp)),
            Access::Fetch => (!user || us) && !nx,
        };
        if !ok {
            return Err(pf(self, true, false));
        }
        // Accessed bits on every level; dirty on the leaf for writes.
        let leaf_dirty = entries[n - 1].1 & 0x40 != 0;
        for (i, &(ea, e)) in entries[..n].iter().enumerate() {
            let mut ne = e | 0x20;
            if write && i == n - 1 {
                ne |= 0x40;
            }
            if ne != e {
                self.write_pte(ea, ne)?;
            }
        }
        let sup = perm::R | if rw || !wp { perm::W } else { 0 } | if nx { 0 } else { perm::X };
        let usr = if us {
            perm::R | if rw { perm::W } else { 0 } | if nx { 0 } else { perm::X }
        } else {
            0
        };
        Ok(Walk {
            gpa: leaf_base | (lin & page_mask),
            perm: sup | (usr << 3),
            dirty: leaf_dirty || write,
        })
    }

    /// Read a 64-bit paging-structure entry; non-RAM becomes an EPT exit
    /// (or the monitor's answer on re-execution).
    fn read_pte(&mut self, gpa: u64) -> R<Option<u64>> {
        if let Some(v) = self.ram.read_u64(gpa) {
            return Ok(Some(v));
        }
        let mut b = [0u8; 16];
        self.mmio(gpa, None, 8, &mut b, false, false)?;
        Ok(Some(u64::from_le_bytes(
            b[..8].try_into().unwrap_or([0; 8]),
        )))
    }

    fn read_pte32(&mut self, gpa: u64) -> R<Option<u64>> {
        let mut b = [0u8; 4];
        if self.ram.read(gpa, &mut b) {
            return Ok(Some(u32::from_le_bytes(b) as u64));
        }
        let mut b = [0u8; 16];
        self.mmio(gpa, None, 4, &mut b, false, false)?;
        Ok(Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64))
    }

    /// Write back a paging entry (bit 63 of `ea` marks a 32-bit entry).
    fn write_pte(&mut self, ea: u64, e: u64) -> R<()> {
        let (gpa, bytes, n) = if ea >> 63 != 0 {
            (ea & !(1 << 63), e.to_le_bytes(), 4)
        } else {
            (ea, e.to_le_bytes(), 8)
        };
        if self.tlb.code_pages.contains(&(gpa & !0xfff)) {
            self.note_smc(gpa & !0xfff);
        }
        if self.ram.write(gpa, &bytes[..n]) {
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[..n].copy_from_slice(&bytes[..n]);
        self.mmio(gpa, None, n as u8, &mut b, true, false)
    }

    /// A store hit a page with translated code.
    pub fn note_smc(&mut self, gpage: u64) {
        if self.tlb.code_pages.remove(&gpage) {
            self.smc_pages.push(gpage);
            self.smc = true;
        }
    }

    /// Fill the TLB for `lin` and return the entry's slot.
    fn fill(&mut self, lin: u64, acc: Access, user: bool) -> R<usize> {
        let w = self.walk(lin, acc, user)?;
        let gpage = w.gpa & !0xfff;
        let host = match self.ram.host(gpage) {
            Some((p, left)) if left >= 4096 => p,
            _ => std::ptr::null_mut(),
        };
        let mut p = w.perm;
        if host.is_null() {
            p = 0;
        } else if !w.dirty || self.tlb.code_pages.contains(&gpage) {
            p &= !(perm::W | (perm::W << 3));
        }
        let slot = Tlb::slot(lin);
        self.tlb.e[slot] = TlbEntry {
            vpage: lin & !0xfff,
            host,
            gpage,
            perm: p,
        };
        Ok(slot)
    }

    /// Guest-physical address of `lin` for `acc`, faulting as the access would.
    pub fn translate(&mut self, lin: u64, acc: Access, user: bool) -> R<u64> {
        let slot = Tlb::slot(lin);
        let e = &self.tlb.e[slot];
        let need = acc.bit() << if user { 3 } else { 0 };
        if e.vpage == lin & !0xfff && e.perm & need != 0 {
            return Ok(e.gpage | (lin & 0xfff));
        }
        Ok(self.walk(lin, acc, user)?.gpa)
    }

    // ---- data access ----

    /// Load `N` (1, 2, 4, 8) bytes at linear `lin` with the current privilege.
    #[inline(always)]
    pub fn rd<const N: usize>(&mut self, lin: u64) -> R<u64> {
        let e = &self.tlb.e[Tlb::slot(lin)];
        let off = (lin & 0xfff) as usize;
        if e.vpage == lin & !0xfff && e.perm & (perm::R << self.pshift) != 0 && off <= 4096 - N {
            // SAFETY: the entry's host page is 4096 bytes of mapped guest RAM
            // (checked at fill) and off + N <= 4096.
            unsafe {
                let p = e.host.add(off);
                return Ok(match N {
                    1 => *p as u64,
                    2 => (p as *const u16).read_unaligned() as u64,
                    4 => (p as *const u32).read_unaligned() as u64,
                    _ => (p as *const u64).read_unaligned(),
                });
            }
        }
        let mut b = [0u8; 16];
        self.read_slow(lin, N, &mut b, self.cpl == 3)?;
        Ok(u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) & crate::flags::mask(N as u8))
    }

    /// Store `N` bytes at linear `lin` with the current privilege.
    #[inline(always)]
    pub fn wr<const N: usize>(&mut self, lin: u64, v: u64) -> R<()> {
        let e = &self.tlb.e[Tlb::slot(lin)];
        let off = (lin & 0xfff) as usize;
        if e.vpage == lin & !0xfff && e.perm & (perm::W << self.pshift) != 0 && off <= 4096 - N {
            // SAFETY: as in `rd`; write permission in the entry means the page
            // is RAM, dirty and holds no translated code.
            unsafe {
                let p = e.host.add(off);
                match N {
                    1 => *p = v as u8,
                    2 => (p as *mut u16).write_unaligned(v as u16),
                    4 => (p as *mut u32).write_unaligned(v as u32),
                    _ => (p as *mut u64).write_unaligned(v),
                }
            }
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&v.to_le_bytes());
        self.write_slow(lin, N, &b, self.cpl == 3)
    }

    /// Load with a runtime size.
    #[inline(always)]
    pub fn rd_sz(&mut self, lin: u64, sz: u8) -> R<u64> {
        match sz {
            1 => self.rd::<1>(lin),
            2 => self.rd::<2>(lin),
            4 => self.rd::<4>(lin),
            _ => self.rd::<8>(lin),
        }
    }

    /// Store with a runtime size.
    #[inline(always)]
    pub fn wr_sz(&mut self, lin: u64, sz: u8, v: u64) -> R<()> {
        match sz {
            1 => self.wr::<1>(lin, v),
            2 => self.wr::<2>(lin, v),
            4 => self.wr::<4>(lin, v),
            _ => self.wr::<8>(lin, v),
        }
    }

    /// 16-byte load.
    pub fn rd128(&mut self, lin: u64) -> R<[u64; 2]> {
        let mut b = [0u8; 16];
        self.read_slow(lin, 16, &mut b, self.cpl == 3)?;
        Ok([
            u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8])),
        ])
    }

    /// 16-byte store.
    pub fn wr128(&mut self, lin: u64, v: [u64; 2]) -> R<()> {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&v[0].to_le_bytes());
        b[8..].copy_from_slice(&v[1].to_le_bytes());
        self.write_slow(lin, 16, &b, self.cpl == 3)
    }

    /// Translate the 1–2 pages an access touches; returns (gpa, len) pieces.
    fn pieces(
        &mut self,
        lin: u64,
        n: usize,
        acc: Access,
        user: bool,
    ) -> R<[(u64, usize, *mut u8); 2]> {
        let lin = lin & self.lin_mask;
        let first = (4096 - (lin & 0xfff) as usize).min(n);
        let mut out = [(0u64, 0usize, std::ptr::null_mut()); 2];
        let slot = self.fill(lin, acc, user)?;
        let e = self.tlb.e[slot];
        out[0] = (
            e.gpage | (lin & 0xfff),
            first,
            entry_ptr(&e, lin, acc, user),
        );
        if first < n {
            let lin2 = lin.wrapping_add(first as u64) & self.lin_mask;
            let slot2 = self.fill(lin2, acc, user)?;
            let e2 = self.tlb.e[slot2];
            out[1] = (e2.gpage, n - first, entry_ptr(&e2, lin2, acc, user));
        }
        Ok(out)
    }

    /// Slow load of `n` <= 16 bytes into `out`.
    pub fn read_slow(&mut self, lin: u64, n: usize, out: &mut [u8; 16], user: bool) -> R<()> {
        let ps = self.pieces(lin, n, Access::Read, user)?;
        let mut done = 0;
        for &(gpa, len, host) in ps.iter().filter(|p| p.1 > 0) {
            if !host.is_null() {
                // SAFETY: `host` points at `gpa` inside a RAM page and `len`
                // does not cross that page.
                unsafe { std::ptr::copy_nonoverlapping(host, out[done..].as_mut_ptr(), len) };
            } else if !self.ram.read(gpa, &mut out[done..done + len]) {
                let mut b = [0u8; 16];
                self.mmio(
                    gpa,
                    Some(lin.wrapping_add(done as u64)),
                    len as u8,
                    &mut b,
                    false,
                    false,
                )?;
                out[done..done + len].copy_from_slice(&b[..len]);
            }
            done += len;
        }
        Ok(())
    }

    /// Slow store of `n` <= 16 bytes.
    pub fn write_slow(&mut self, lin: u64, n: usize, data: &[u8; 16], user: bool) -> R<()> {
        let ps = self.pieces(lin, n, Access::Write, user)?;
        let mut done = 0;
        for &(gpa, len, _) in ps.iter().filter(|p| p.1 > 0) {
            if self.tlb.code_pages.contains(&(gpa & !0xfff)) {
                self.note_smc(gpa & !0xfff);
            }
            if !self.ram.write(gpa, &data[done..done + len]) {
                let mut b = [0u8; 16];
                b[..len].copy_from_slice(&data[done..done + len]);
                self.mmio(
                    gpa,
                    Some(lin.wrapping_add(done as u64)),
                    len as u8,
                    &mut b,
                    true,
                    false,
                )?;
            }
            done += len;
        }
        Ok(())
    }

    /// Supervisor-privilege load (descriptor tables, TSS, IDT).
    pub fn rd_sys(&mut self, lin: u64, n: usize) -> R<u64> {
        let mut b = [0u8; 16];
        self.read_slow(lin, n, &mut b, false)?;
        Ok(u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])))
    }

    /// Store with explicit privilege (event delivery pushes at the new CPL).
    pub fn wr_priv(&mut self, lin: u64, n: usize, v: u64, user: bool) -> R<()> {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&v.to_le_bytes());
        self.write_slow(lin, n, &b, user)
    }

    /// An access to non-RAM guest-physical memory: consume the monitor's
    /// answer if this instruction already exited for it, else exit.
    pub fn mmio(
        &mut self,
        gpa: u64,
        linear: Option<u64>,
        size: u8,
        data: &mut [u8; 16],
        write: bool,
        fetch: bool,
    ) -> R<()> {
        match self.answers.take() {
            Some(Answer::Mmio(bytes)) => {
                if !write {
                    *data = bytes;
                }
                return Ok(());
            }
            Some(other) => {
                return Err(self.internal(format!(
                    "re-executed instruction met an MMIO access at {gpa:#x} where it expected {other:?}"
                )));
            }
            None => {}
        }
        let q = vcpu::EptQualification {
            read: !write && !fetch,
            write,
            fetch,
            linear_valid: linear.is_some(),
            // Paging-structure accesses carry no linear address.
            translated_access: linear.is_some(),
        };
        self.stop = Stop::Exit(vcpu::VmExit {
            reason: vcpu::ExitReason::EptViolation,
            qualification: q.encode(),
            instruction_len: 0,
            rip: 0,
            info: vcpu::ExitInfo::Mmio {
                gpa,
                linear,
                size,
                write_data: write.then_some(*data),
                fetch,
            },
        });
        Err(Stopped)
    }

    /// Make `gpage` a code page: later stores to it take the slow path.
    pub fn mark_code_page(&mut self, gpage: u64) {
        if self.tlb.code_pages.insert(gpage) {
            self.tlb.protect(gpage);
        }
    }

    /// Fetch-translate `lin` for block translation: guest-physical address and host pointer.
    pub fn fetch_page(&mut self, lin: u64) -> R<(u64, *mut u8)> {
        let user = self.cpl == 3;
        let lin = lin & self.lin_mask;
        let slot = self.fill(lin, Access::Fetch, user)?;
        let e = self.tlb.e[slot];
        Ok((e.gpage, e.host))
    }
}

fn entry_ptr(e: &TlbEntry, lin: u64, acc: Access, _user: bool) -> *mut u8 {
    if e.host.is_null() || acc == Access::Write {
        return std::ptr::null_mut();
    }
    // SAFETY: host is a 4096-byte RAM page; the offset is < 4096.
    unsafe { e.host.add((lin & 0xfff) as usize) }
}
