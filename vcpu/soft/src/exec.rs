//! The block cache and the execution loop.
//!
//! A block is a run of translated ops starting at one linear RIP, ending at a
//! branch or another block-ending instruction, at a page boundary, or after
//! [`MAX_BLOCK`] instructions. Blocks are keyed by (linear RIP, code size) and
//! validated against the guest-physical page they were translated from; they
//! are invalidated when a store hits one of their pages (including stores by
//! the block itself: the store completes, the instruction retires, and the
//! block is left at once). Direct successors are linked (block id + the
//! translation epoch at link time), so a loop runs without hash lookups.
//!
//! Counting: a block adds the number of ops that retired to the instruction
//! counter and, if its last op (always the only branch in a block) retired,
//! one to the branch counter. Exits, kicks, interrupt windows, the preemption
//! budget and counter overflows are handled between blocks; budgets that
//! must land on an exact instruction cut the block short.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use crate::cpu::{Cpu, Stop};
use crate::op::{Flow, Op};
use crate::t;

/// Most instructions in one block.
pub const MAX_BLOCK: usize = 64;
/// Jump-cache size (direct-mapped RIP → block).
const JC_SIZE: usize = 4096;
/// Blocks kept before the whole cache is flushed.
const MAX_BLOCKS: usize = 1 << 16;

/// The kick flag with a way to wake a halted vCPU.
#[derive(Debug, Default)]
pub struct Kick {
    /// Set by `kick`, cleared when `run` reports it.
    pub flag: AtomicBool,
    m: Mutex<()>,
    cv: Condvar,
}

impl Kick {
    /// Request an exit.
    pub fn kick(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _g = self.m.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    /// Block until kicked.
    pub fn wait(&self) {
        let mut g = self.m.lock().unwrap_or_else(|e| e.into_inner());
        while !self.flag.load(Ordering::SeqCst) {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A translated block.
pub struct Block {
    lin: u64,
    bitness: u32,
    gpage: u64,
    gpage2: Option<u64>,
    /// The ops.
    pub ops: Box<[Op]>,
    /// The last two ops fused into one (a register flag setter and the
    /// closing Jcc), used when the whole block runs: `ops[..len-2]` then this.
    fused: Option<Op>,
    /// Successor links for slot 0 (taken) and 1 (fall-through): (block id, epoch).
    links: [(u32, u32); 2],
    valid: bool,
    /// Raw bytes, for internal-error reports.
    bytes: Box<[u8]>,
}

/// All translated blocks of one vCPU.
pub struct Cache {
    blocks: Vec<Block>,
    map: HashMap<(u64, u32), u32>,
    jc: Box<[(u64, u32, u32)]>,
    by_page: HashMap<u64, Vec<u32>>,
    scratch: Vec<Op>,
    /// Blocks translated (statistics).
    pub translated: u64,
    /// Bumped by every full flush (block ids are reused after one).
    generation: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the block loop stopped.
#[derive(Debug)]
pub enum Outcome {
    /// Reached the instruction budget or a boundary check wants attention.
    Boundary,
    /// An op stopped (details in `cpu.stop`).
    Stopped,
}

impl Cache {
    /// Empty.
    pub fn new() -> Self {
        Cache {
            blocks: Vec::new(),
            map: HashMap::new(),
            jc: vec![(u64::MAX, 0, 0); JC_SIZE].into_boxed_slice(),
            by_page: HashMap::new(),
            scratch: Vec::with_capacity(MAX_BLOCK),
            translated: 0,
            generation: 0,
        }
    }

    /// Drop every block (also done when the cache is full).
    pub fn flush(&mut self, c: &mut Cpu) {
        self.generation += 1;
        self.blocks.clear();
        self.map.clear();
        self.by_page.clear();
        for e in self.jc.iter_mut() {
            e.0 = u64::MAX;
        }
        c.tlb.code_pages.clear();
        c.epoch = c.epoch.wrapping_add(1);
    }

    /// Invalidate every block translated from guest page `gpage`.
    pub fn invalidate_page(&mut self, gpage: u64) {
        if let Some(ids) = self.by_page.remove(&gpage) {
            for id in ids {
                let b = &mut self.blocks[id as usize];
                if b.valid {
                    b.valid = false;
                    b.ops = Box::new([]);
                    b.fused = None;
                    if self.map.get(&(b.lin, b.bitness)) == Some(&id) {
                        self.map.remove(&(b.lin, b.bitness));
                    }
                }
            }
        }
    }

    /// Process pages written while holding code.
    pub fn handle_smc(&mut self, c: &mut Cpu) {
        if c.smc {
            c.smc = false;
            let pages = std::mem::take(&mut c.smc_pages);
            for p in &pages {
                self.invalidate_page(*p);
            }
            c.smc_pages = pages;
            c.smc_pages.clear();
            c.epoch = c.epoch.wrapping_add(1);
        }
    }

    /// The block at `c.rip`, translating it if needed.
    fn lookup(&mut self, c: &mut Cpu) -> Result<u32, ()> {
        let rip = c.rip;
        let slot = ((rip ^ (rip >> 12)) as usize) & (JC_SIZE - 1);
        let (l, id, ep) = self.jc[slot];
        if l == rip && ep == c.epoch {
            let b = &self.blocks[id as usize];
            if b.valid && b.bitness == c.bitness {
                return Ok(id);
            }
        }
        let lin = rip.wrapping_add(c.seg_base[crate::cpu::CS]) & c.lin_mask;
        let (gpage, host) = c.fetch_page(lin).map_err(|_| ())?;
        if let Some(&id) = self.map.get(&(rip, c.bitness)) {
            let b = &self.blocks[id as usize];
            let ok2 = match b.gpage2 {
                None => true,
                Some(g2) => {
                    let next = (lin | 0xfff).wrapping_add(1) & c.lin_mask;
                    matches!(c.fetch_page(next), Ok((g, _)) if g == g2)
                }
            };
            if b.valid && b.gpage == gpage && ok2 {
                self.jc[slot] = (rip, id, c.epoch);
                return Ok(id);
            }
        }
        let id = self.translate(c, rip, lin, gpage, host)?;
        self.jc[slot] = (rip, id, c.epoch);
        Ok(id)
    }

    fn translate(
        &mut self,
        c: &mut Cpu,
        rip: u64,
        lin: u64,
        gpage: u64,
        host: *mut u8,
    ) -> Result<u32, ()> {
        if self.blocks.len() >= MAX_BLOCKS {
            self.flush(c);
            // The flush changed the epoch; re-fetch to re-mark the page.
        }
        if host.is_null() {
            // Instruction fetch from non-RAM: EPT violation (fetch).
            let mut d = [0u8; 16];
            let _ = c.mmio(gpage | (lin & 0xfff), Some(lin), 1, &mut d, false, true);
            return Err(());
        }
        let off = (lin & 0xfff) as usize;
        let in_page = 4096 - off;
        let mut buf = [0u8; 4096 + 16];
        // SAFETY: `host` is a 4096-byte RAM page (TLB fill checked it) and
        // off + in_page == 4096.
        unsafe { std::ptr::copy_nonoverlapping(host.add(off), buf.as_mut_ptr(), in_page) };
        let mut avail = in_page;
        let mut gpage2 = None;
        if in_page < 15 {
            let next = (lin | 0xfff).wrapping_add(1) & c.lin_mask;
            let saved = std::mem::replace(&mut c.stop, Stop::None);
            match c.fetch_page(next) {
                Ok((g2, h2)) if !h2.is_null() => {
                    // SAFETY: h2 is a 4096-byte RAM page; 15 bytes fit.
                    unsafe { std::ptr::copy_nonoverlapping(h2, buf.as_mut_ptr().add(in_page), 15) };
                    avail += 15;
                    gpage2 = Some(g2);
                }
                _ => c.stop = saved,
            }
        }
        let mut ops = std::mem::take(&mut self.scratch);
        ops.clear();
        crate::translate::translate_block(
            &buf[..avail],
            rip,
            c.bitness,
            in_page,
            MAX_BLOCK,
            &mut ops,
        );
        if ops.is_empty() {
            // The first instruction needs bytes from a page we cannot fetch: raise that fault now.
            let next = (lin | 0xfff).wrapping_add(1) & c.lin_mask;
            c.stop = Stop::None;
            match c.fetch_page(next) {
                Err(_) => {}
                Ok((g, h)) if h.is_null() => {
                    let mut d = [0u8; 16];
                    let _ = c.mmio(g, Some(next), 1, &mut d, false, true);
                }
                Ok(_) => {
                    let _ = c.internal(format!("could not decode at {rip:#x}"));
                }
            }
            self.scratch = ops;
            return Err(());
        }
        let used: usize = ops.iter().map(|o| o.len as usize).sum();
        if used <= in_page {
            gpage2 = None;
        }
        let id = self.blocks.len() as u32;
        c.mark_code_page(gpage);
        self.by_page.entry(gpage).or_default().push(id);
        if let Some(g2) = gpage2 {
            c.mark_code_page(g2);
            self.by_page.entry(g2).or_default().push(id);
        }
        let fused = match ops.as_slice() {
            [.., first, last] => crate::ops::alu::fuse(first, last),
            _ => None,
        };
        self.blocks.push(Block {
            lin: rip,
            bitness: c.bitness,
            gpage,
            gpage2,
            fused,
            ops: ops.as_slice().into(),
            links: [(u32::MAX, 0); 2],
            valid: true,
            bytes: buf[..used.min(avail)].into(),
        });
        self.scratch = ops;
        self.map.insert((rip, c.bitness), id);
        self.translated += 1;
        Ok(id)
    }

    /// Bytes of the instruction at `rip` in the block that holds it, for error reports.
    pub fn bytes_at(&self, rip: u64) -> Vec<u8> {
        for b in self.blocks.iter().rev() {
            let mut off = 0usize;
            for o in b.ops.iter() {
                if o.rip == rip {
                    return b
                        .bytes
                        .get(off..off + o.len as usize)
                        .map(|s| s.to_vec())
                        .unwrap_or_default();
                }
                off += o.len as usize;
            }
        }
        Vec::new()
    }

    /// Run blocks until `stop_at` instructions have retired, a boundary
    /// condition needs the caller (`attention` returns true), or an op stops.
    pub fn run(&mut self, c: &mut Cpu, stop_at: u64, br_deadline: u64) -> Outcome {
        let mut prev: Option<(u32, u8)> = None;
        loop {
            // Find the block: follow the link if it is still good.
            let id = match prev {
                Some((pid, slot)) if slot < 2 => {
                    let (lid, lep) = self.blocks[pid as usize].links[slot as usize];
                    if lep == c.epoch && lid != u32::MAX && self.blocks[lid as usize].valid {
                        lid
                    } else {
                        let generation = self.generation;
                        match self.lookup(c) {
                            Ok(id) => {
                                // A full flush during the lookup renumbers blocks: `pid` is gone.
                                if generation == self.generation && self.blocks[pid as usize].valid
                                {
                                    self.blocks[pid as usize].links[slot as usize] = (id, c.epoch);
                                }
                                id
                            }
                            Err(()) => {
                                c.last_len = 0;
                                return Outcome::Stopped;
                            }
                        }
                    }
                }
                _ => match self.lookup(c) {
                    Ok(id) => id,
                    Err(()) => {
                        c.last_len = 0;
                        return Outcome::Stopped;
                    }
                },
            };
            let b = &self.blocks[id as usize];
            let left = stop_at.saturating_sub(c.insns);
            let whole = b.ops.len() as u64 <= left;
            let n = (b.ops.len() as u64).min(left) as usize;
            // With a fused tail and the whole block in budget, run the head
            // ops here and the fused pair below.
            let fused = if whole { b.fused.as_ref() } else { None };
            let ops = if fused.is_some() {
                &b.ops[..n - 2]
            } else {
                &b.ops[..n]
            };
            let mut done = 0usize;
            let mut flow = Flow::Next;
            for o in ops {
                flow = (o.h)(c, o);
                match flow {
                    Flow::Next => {
                        done += 1;
                        if c.smc {
                            c.rip = o.next();
                            break;
                        }
                    }
                    Flow::End => {
                        done += 1;
                        c.branches += o.br as u64;
                        break;
                    }
                    Flow::Stop => {
                        c.rip = o.rip;
                        c.last_len = o.len;
                        break;
                    }
                }
            }
            if let Some(f) = fused {
                if flow == Flow::Next && !c.smc {
                    // Register-only: it cannot stop, and it ends the block.
                    flow = (f.h)(c, f);
                    done += 2;
                    c.branches += 1;
                }
            }
            c.insns += done as u64;
            match flow {
                Flow::Stop => {
                    return Outcome::Stopped;
                }
                Flow::Next => {
                    if !c.smc {
                        if let Some(last) = ops.last() {
                            c.rip = last.next();
                        }
                        c.link = if n == b.ops.len() { 1 } else { 2 };
                    } else {
                        c.link = 2;
                    }
                }
                Flow::End => {}
            }
            if c.smc {
                self.handle_smc(c);
                return Outcome::Boundary;
            }
            if c.insns >= stop_at
                || c.branches >= br_deadline
                || c.attention()
                || c.kick.flag.load(Ordering::Relaxed)
            {
                return Outcome::Boundary;
            }
            prev = Some((id, c.link));
        }
    }
}

impl Cpu {
    /// Whether a block boundary needs the slow path (CPL change, shadow, halt, TF).
    #[inline(always)]
    pub fn attention(&self) -> bool {
        self.cpl_changed || self.shadow_req || self.halted || self.rf & crate::flags::TF != 0
    }
}

/// RDPMC: ECX selects a guest general-purpose counter.
pub fn rdpmc(c: &mut Cpu, _o: &Op) -> Flow {
    if c.cpl != 0 && c.cr4 & (1 << 8) == 0 {
        c.gp0();
        return Flow::Stop;
    }
    let idx = c.gpr[1] as u32;
    if idx as usize >= crate::pmu::COUNTERS {
        c.gp0();
        return Flow::Stop;
    }
    let v =
        t!(crate::pmu::guest_rdmsr(c, vcpu::pmu::msr::IA32_PMC0 + idx).ok_or(crate::cpu::Stopped));
    c.set(0, 4, v & 0xffff_ffff);
    c.set(2, 4, v >> 32);
    Flow::Next
}
