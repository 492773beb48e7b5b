//! Exception and interrupt delivery through the IDT (64-bit and 32-bit
//! gates), privilege change through the TSS, IST stacks, error codes, and the
//! double-fault / triple-fault rules.

use vcpu::Segment;

use crate::cpu::{CS, Cpu, R, SS, Stop};
use crate::flags;

/// What is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A hardware exception (fault or trap): pushes `return_rip`.
    Exception,
    /// An external interrupt or NMI.
    External,
    /// INT n / INT3 / INTO: gate DPL is checked against CPL.
    Software,
}

/// Outcome of delivering an event with the double-fault rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The handler is about to run.
    Ok,
    /// A fault during #DF delivery: the vCPU is shut down.
    TripleFault,
    /// The interpreter could not continue.
    Internal(String),
}

fn class(v: u8) -> u8 {
    match v {
        0 | 10..=13 => 1, // contributory
        14 => 2,          // page fault
        8 => 3,           // double fault
        _ => 0,           // benign
    }
}

/// Deliver `vector` with the double-fault rules (SDM Vol. 3A, 6.15, Table 6-5).
pub fn deliver(
    c: &mut Cpu,
    vector: u8,
    err: Option<u32>,
    kind: EventKind,
    return_rip: u64,
) -> Delivered {
    let (mut v, mut e, mut k) = (vector, err, kind);
    loop {
        match deliver_once(c, v, e, k, return_rip) {
            Ok(()) => return Delivered::Ok,
            Err(_) => {
                let (nv, ne) = match std::mem::replace(&mut c.stop, Stop::None) {
                    Stop::Exception(nv, ne) => (nv, ne),
                    Stop::Internal(s) => return Delivered::Internal(s),
                    Stop::Exit(x) => {
                        return Delivered::Internal(format!(
                            "event delivery touched non-RAM memory ({:?})",
                            x.info
                        ));
                    }
                    other => {
                        return Delivered::Internal(format!(
                            "unexpected stop {other:?} in delivery"
                        ));
                    }
                };
                let (first, second) = (class(v), class(nv));
                if first == 3 {
                    return Delivered::TripleFault;
                }
                if (first == 1 && second == 1) || (first == 2 && second != 0) {
                    v = 8;
                    e = Some(0);
                } else {
                    v = nv;
                    e = ne;
                }
                // A fault while delivering is delivered as an exception at the
                // same instruction boundary.
                k = EventKind::Exception;
            }
        }
    }
}

/// Parse a code/data descriptor (low 8 bytes).
pub fn seg_from_desc(sel: u16, lo: u64) -> Segment {
    let limit = ((lo & 0xffff) | ((lo >> 32) & 0xf_0000)) as u32;
    let g = lo & (1 << 55) != 0;
    Segment {
        base: ((lo >> 16) & 0xff_ffff) | ((lo >> 32) & 0xff00_0000),
        limit: if g { (limit << 12) | 0xfff } else { limit },
        selector: sel,
        type_: ((lo >> 40) & 0xf) as u8,
        present: lo & (1 << 47) != 0,
        dpl: ((lo >> 45) & 3) as u8,
        db: lo & (1 << 54) != 0,
        s: lo & (1 << 44) != 0,
        l: lo & (1 << 53) != 0,
        g,
        avl: lo & (1 << 52) != 0,
        unusable: false,
    }
}

/// Read the 8-byte descriptor for `sel` from the GDT (or LDT); #GP(sel) past the limit.
pub fn read_desc(c: &mut Cpu, sel: u16) -> R<u64> {
    let (base, limit) = if sel & 4 != 0 {
        if c.ldt.unusable {
            return Err(c.fault(13, Some(sel as u32 & 0xfffc)));
        }
        (c.ldt.base, c.ldt.limit as u64)
    } else {
        (c.gdt.base, c.gdt.limit as u64)
    };
    let off = (sel & !7) as u64;
    if off + 7 > limit {
        return Err(c.fault(13, Some(sel as u32 & 0xfffc)));
    }
    c.rd_sys(base.wrapping_add(off) & c.lin_mask, 8)
}

/// Set the accessed bit (type bit 0) of the code or data descriptor `lo`
/// that selector `sel` names, in the descriptor table, if it is clear: the
/// processor does so whenever it loads such a segment (SDM 3.4.5.1), and
/// the guest can see it in memory. Hardware virtualization does it too,
/// so a replay on another backend would find memory differing otherwise.
pub fn mark_accessed(c: &mut Cpu, sel: u16, lo: u64) -> R<()> {
    const S: u64 = 1 << 44;
    const ACCESSED: u64 = 1 << 40;
    if lo & S == 0 || lo & ACCESSED != 0 {
        return Ok(());
    }
    let base = if sel & 4 != 0 { c.ldt.base } else { c.gdt.base };
    let a = base.wrapping_add((sel & !7) as u64) & c.lin_mask;
    c.wr_priv(a, 8, lo | ACCESSED, false)
}

/// Load CS for a control transfer to `cpl` (checks type, presence, L/D).
pub fn load_cs(c: &mut Cpu, sel: u16, new_cpl: u8) -> R<Segment> {
    if sel & !3 == 0 {
        return Err(c.gp0());
    }
    let lo = read_desc(c, sel)?;
    let mut s = seg_from_desc((sel & !3) | new_cpl as u16, lo);
    if !s.s || s.type_ & 8 == 0 {
        return Err(c.fault(13, Some(sel as u32 & 0xfffc)));
    }
    if !s.present {
        return Err(c.fault(11, Some(sel as u32 & 0xfffc)));
    }
    mark_accessed(c, sel, lo)?;
    s.type_ |= 1;
    Ok(s)
}

/// Install a new CS (and CPL) and recompute the mode.
pub fn set_cs(c: &mut Cpu, s: Segment, cpl: u8) {
    c.seg[CS] = s;
    c.set_cpl(cpl);
    c.mode_changed();
}

/// A null SS for 64-bit mode at `cpl`.
pub fn null_ss(cpl: u8) -> Segment {
    Segment {
        selector: cpl as u16,
        unusable: true,
        dpl: cpl,
        db: true,
        s: true,
        type_: 3,
        present: true,
        limit: 0xffff_ffff,
        g: true,
        ..Segment::default()
    }
}

/// One delivery attempt; a nested fault is left in `c.stop`. Registers are
/// only changed once nothing can fault any more.
pub fn deliver_once(
    c: &mut Cpu,
    vector: u8,
    err: Option<u32>,
    kind: EventKind,
    return_rip: u64,
) -> R<()> {
    let ext = (kind != EventKind::Software) as u32;
    let idt_err = (vector as u32) * 8 + 2 + ext;
    let long = c.long_mode();
    let gate_sz = if long { 16 } else { 8 };
    if (vector as u64) * gate_sz + gate_sz - 1 > c.idt.limit as u64 {
        return Err(c.fault(13, Some(idt_err)));
    }
    let gaddr = c.idt.base.wrapping_add(vector as u64 * gate_sz) & c.lin_mask;
    let lo = c.rd_sys(gaddr, 8)?;
    let hi = if long { c.rd_sys(gaddr + 8, 8)? } else { 0 };
    let gtype = ((lo >> 40) & 0xf) as u8;
    let gdpl = ((lo >> 45) & 3) as u8;
    let present = lo & (1 << 47) != 0;
    let trap = match (long, gtype) {
        (true, 0xe) | (false, 0xe) => false,
        (true, 0xf) | (false, 0xf) => true,
        _ => return Err(c.fault(13, Some(idt_err))),
    };
    if kind == EventKind::Software && gdpl < c.cpl {
        return Err(c.fault(13, Some(idt_err)));
    }
    if !present {
        return Err(c.fault(11, Some(idt_err)));
    }
    let sel = ((lo >> 16) & 0xffff) as u16;
    let offset = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32);
    if sel & !3 == 0 {
        return Err(c.fault(13, Some(ext)));
    }
    let cs_lo = read_desc(c, sel)?;
    let mut cs = seg_from_desc(sel, cs_lo);
    if !cs.s || cs.type_ & 8 == 0 || cs.dpl > c.cpl {
        return Err(c.fault(13, Some((sel as u32 & 0xfffc) + ext)));
    }
    if !cs.present {
        return Err(c.fault(11, Some((sel as u32 & 0xfffc) + ext)));
    }
    mark_accessed(c, sel, cs_lo)?;
    cs.type_ |= 1;
    if long && !cs.l {
        return Err(c.fault(13, Some((sel as u32 & 0xfffc) + ext)));
    }
    let conforming = cs.type_ & 4 != 0;
    let new_cpl = if conforming { c.cpl } else { cs.dpl };
    cs.selector = (sel & !3) | new_cpl as u16;
    // Faults push RF = 1 (SDM 6.12.1.x): the restarted instruction must not
    // re-trigger an instruction breakpoint.
    let is_fault = kind == EventKind::Exception
        && matches!(vector, 0 | 5 | 6 | 7 | 10..=14 | 16 | 17 | 19 | 20 | 21);
    let old_rflags = c.rflags() | if is_fault { flags::RF } else { 0 };
    let old_cs = c.seg[CS].selector as u64;
    let old_ss = c.seg[SS].selector as u64;
    let old_rsp = c.gpr[4];
    let ist = if long { (lo >> 32) & 7 } else { 0 };

    if long {
        let mut rsp = old_rsp;
        if new_cpl < c.cpl || ist != 0 {
            let off = if ist != 0 {
                0x24 + (ist - 1) * 8
            } else {
                4 + new_cpl as u64 * 8
            };
            if off + 7 > c.tr.limit as u64 {
                return Err(c.fault(10, Some(c.tr.selector as u32 & 0xfffc)));
            }
            rsp = c.rd_sys(c.tr.base.wrapping_add(off), 8)?;
        }
        if new_cpl < c.cpl && ist == 0 && rsp == 0 {
            // A zero RSP0 is legal but almost always a setup bug; deliver as the CPU would.
        }
        rsp &= !15;
        let frame: [u64; 6] = [
            err.unwrap_or(0) as u64,
            return_rip,
            old_cs,
            old_rflags,
            old_rsp,
            old_ss,
        ];
        let has_err = err.is_some() as usize;
        let n = 5 + has_err;
        let base = rsp.wrapping_sub(8 * n as u64);
        // Write the frame top-down from lowest address: [err?] rip cs rflags rsp ss.
        let items = &frame[1 - has_err..];
        for (i, v) in items.iter().enumerate() {
            c.wr_priv(base.wrapping_add(8 * i as u64), 8, *v, false)?;
        }
        if new_cpl != c.cpl {
            c.seg[SS] = null_ss(new_cpl);
        }
        c.gpr[4] = base;
    } else {
        let mut esp = old_rsp & 0xffff_ffff;
        let outer = new_cpl < c.cpl;
        let mut new_ss = c.seg[SS];
        if outer {
            let off = 4 + new_cpl as u64 * 8;
            if off + 5 > c.tr.limit as u64 {
                return Err(c.fault(10, Some(c.tr.selector as u32 & 0xfffc)));
            }
            let v = c.rd_sys(c.tr.base.wrapping_add(off) & 0xffff_ffff, 8)?;
            esp = v & 0xffff_ffff;
            let ss_sel = (v >> 32) as u16;
            let d = read_desc(c, ss_sel)?;
            new_ss = seg_from_desc(ss_sel, d);
            if !new_ss.present {
                return Err(c.fault(12, Some(ss_sel as u32 & 0xfffc)));
            }
            mark_accessed(c, ss_sel, d)?;
            if new_ss.s {
                new_ss.type_ |= 1;
            }
        }
        let mut items: heapless::Vec<u64, 6> = heapless::Vec::new();
        if let Some(e) = err {
            let _ = items.push(e as u64);
        }
        let _ = items.push(return_rip & 0xffff_ffff);
        let _ = items.push(old_cs);
        let _ = items.push(old_rflags & 0xffff_ffff);
        if outer {
            let _ = items.push(old_rsp & 0xffff_ffff);
            let _ = items.push(old_ss);
        }
        let base = esp.wrapping_sub(4 * items.len() as u64) & 0xffff_ffff;
        let ss_base = new_ss.base;
        for (i, v) in items.iter().enumerate() {
            let a = ss_base.wrapping_add(base + 4 * i as u64) & 0xffff_ffff;
            c.wr_priv(a, 4, *v, false)?;
        }
        if outer {
            c.seg[SS] = new_ss;
        }
        c.gpr[4] = base;
    }
    let mut rf = c.rflags() & !(flags::TF | flags::NT | flags::RF | flags::VM);
    if !trap {
        rf &= !flags::IF;
    }
    c.set_rflags(rf);
    set_cs(c, cs, new_cpl);
    c.rip = if long { offset } else { offset & 0xffff_ffff };
    c.shadow = false;
    c.halted = false;
    Ok(())
}
