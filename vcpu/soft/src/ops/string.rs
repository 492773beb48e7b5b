//! String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with REP/REPE/REPNE.
//!
//! Each iteration commits (RSI/RDI/RCX updated) before the next starts, so a
//! REP instruction can stop between iterations: on a fault (RIP stays at the
//! instruction, RCX holds the remaining count, as on hardware), on an exit for
//! an I/O element, when kicked (checked every `rep_chunk` iterations), and
//! after every iteration while single-stepping (MTF or RFLAGS.TF). It retires
//! — counts as one instruction — only when the last iteration completes (or
//! at once when RCX is 0 on entry).

use crate::cpu::{Cpu, ES, Stop};
use crate::flags::{self, mask, op as fop};
use crate::op::{Flow, Op};

/// String operation selectors (`cc`).
pub mod sop {
    /// MOVS.
    pub const MOVS: u8 = 0;
    /// STOS.
    pub const STOS: u8 = 1;
    /// LODS.
    pub const LODS: u8 = 2;
    /// CMPS.
    pub const CMPS: u8 = 3;
    /// SCAS.
    pub const SCAS: u8 = 4;
    /// INS.
    pub const INS: u8 = 5;
    /// OUTS.
    pub const OUTS: u8 = 6;
}

/// One iteration; Err = stopped (fault or exit) before committing.
#[inline(always)]
fn step(c: &mut Cpu, o: &Op, delta: u64, asz: u8) -> Result<(), ()> {
    let sz = o.sz;
    let am = mask(asz);
    let si = c.gpr[6] & am;
    let di = c.gpr[7] & am;
    let src = c.lin_of(o.seg as usize, si);
    let dst = c.lin_of(ES, di);
    match o.cc {
        sop::MOVS => {
            let v = c.rd_sz(src, sz).map_err(|_| ())?;
            c.wr_sz(dst, sz, v).map_err(|_| ())?;
            c.set(6, asz, si.wrapping_add(delta));
            c.set(7, asz, di.wrapping_add(delta));
        }
        sop::STOS => {
            let v = c.get(0, sz);
            c.wr_sz(dst, sz, v).map_err(|_| ())?;
            c.set(7, asz, di.wrapping_add(delta));
        }
        sop::LODS => {
            let v = c.rd_sz(src, sz).map_err(|_| ())?;
            c.set(0, sz, v);
            c.set(6, asz, si.wrapping_add(delta));
        }
        sop::CMPS => {
            let a = c.rd_sz(src, sz).map_err(|_| ())?;
            let b = c.rd_sz(dst, sz).map_err(|_| ())?;
            c.set_lazy(fop::SUB, sz, a, b, a.wrapping_sub(b));
            c.set(6, asz, si.wrapping_add(delta));
            c.set(7, asz, di.wrapping_add(delta));
        }
        sop::SCAS => {
            let a = c.get(0, sz);
            let b = c.rd_sz(dst, sz).map_err(|_| ())?;
            c.set_lazy(fop::SUB, sz, a, b, a.wrapping_sub(b));
            c.set(7, asz, di.wrapping_add(delta));
        }
        sop::INS => {
            // Probe the destination first so a #PF comes before the device read.
            c.translate(dst, crate::mem::Access::Write, c.cpl == 3)
                .map_err(|_| ())?;
            let port = c.gpr[2] as u16;
            let v = crate::ops::sys::port_in(c, o, port, sz, true).map_err(|_| ())?;
            c.wr_sz(dst, sz, v).map_err(|_| ())?;
            c.set(7, asz, di.wrapping_add(delta));
        }
        _ => {
            let v = c.rd_sz(src, sz).map_err(|_| ())?;
            let port = c.gpr[2] as u16;
            crate::ops::sys::port_out(c, o, port, sz, v, true).map_err(|_| ())?;
            c.set(6, asz, si.wrapping_add(delta));
        }
    }
    Ok(())
}

/// A string instruction, with or without a repeat prefix.
pub fn string(c: &mut Cpu, o: &Op) -> Flow {
    if o.cc >= sop::INS {
        let port = c.gpr[2] as u16;
        match crate::ops::sys::io_allowed(c, port, o.sz) {
            Ok(true) => {}
            Ok(false) => {
                c.gp0();
                return Flow::Stop;
            }
            Err(_) => return Flow::Stop,
        }
    }
    let asz = o.sz2;
    let delta = if c.rf & flags::DF != 0 {
        (o.sz as u64).wrapping_neg()
    } else {
        o.sz as u64
    };
    if o.rep == 0 {
        if step(c, o, delta, asz).is_err() {
            return Flow::Stop;
        }
        return Flow::Next;
    }
    let mut iters = 0u64;
    loop {
        if c.get(1, asz) == 0 {
            return Flow::Next;
        }
        if step(c, o, delta, asz).is_err() {
            return Flow::Stop;
        }
        let n = c.get(1, asz).wrapping_sub(1) & mask(asz);
        c.set(1, asz, n);
        if !c.answers.is_empty() {
            c.answers.clear();
        }
        if o.cc == sop::CMPS || o.cc == sop::SCAS {
            let zf = c.cond(4);
            if (o.rep == 1 && !zf) || (o.rep == 2 && zf) {
                return Flow::Next;
            }
        }
        if n == 0 {
            return Flow::Next;
        }
        iters += 1;
        if iters >= c.rep_chunk {
            if c.rep_chunk == 1 || c.kick.flag.load(std::sync::atomic::Ordering::Relaxed) {
                c.stop = Stop::Yield;
                return Flow::Stop;
            }
            iters = 0;
        }
    }
}
