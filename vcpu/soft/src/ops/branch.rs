//! Near branches and the stack.

use crate::cpu::Cpu;
use crate::flags::{self, mask};
use crate::op::{Flow, Op, kind};
use crate::t;

/// Mask a branch target to the operand size (16/32-bit code wraps IP).
#[inline(always)]
fn ip_mask(o: &Op, v: u64) -> u64 {
    if o.sz == 8 { v } else { v & mask(o.sz) }
}

#[inline(always)]
fn check_target(c: &mut Cpu, v: u64) -> bool {
    // A non-canonical target raises #GP at the branch in 64-bit mode.
    c.bitness != 64 || ((v as i64) << 16 >> 16) as u64 == v
}

/// Jcc rel with the condition code fixed at translation (the condition
/// evaluation then specialises on it).
pub fn jcc_cc<const CC: u8>(c: &mut Cpu, o: &Op) -> Flow {
    if c.cond(CC) {
        c.rip = o.target;
        c.link = 0;
    } else {
        c.rip = o.next();
        c.link = 1;
    }
    Flow::End
}

/// The Jcc handler for condition code `cc`.
pub fn jcc_handler(cc: u8) -> crate::op::Handler {
    match cc & 15 {
        0 => jcc_cc::<0>,
        1 => jcc_cc::<1>,
        2 => jcc_cc::<2>,
        3 => jcc_cc::<3>,
        4 => jcc_cc::<4>,
        5 => jcc_cc::<5>,
        6 => jcc_cc::<6>,
        7 => jcc_cc::<7>,
        8 => jcc_cc::<8>,
        9 => jcc_cc::<9>,
        10 => jcc_cc::<10>,
        11 => jcc_cc::<11>,
        12 => jcc_cc::<12>,
        13 => jcc_cc::<13>,
        14 => jcc_cc::<14>,
        _ => jcc_cc::<15>,
    }
}

/// JMP rel.
pub fn jmp(c: &mut Cpu, o: &Op) -> Flow {
    c.rip = o.target;
    c.link = 0;
    Flow::End
}

/// JMP r/m.
pub fn jmp_ind(c: &mut Cpu, o: &Op) -> Flow {
    let v = ip_mask(o, t!(c.src(o, o.sz)));
    if !check_target(c, v) {
        c.gp0();
        return Flow::Stop;
    }
    c.rip = v;
    c.link = 2;
    Flow::End
}

/// CALL rel.
pub fn call(c: &mut Cpu, o: &Op) -> Flow {
    t!(c.push(o.next(), o.sz));
    c.rip = o.target;
    c.link = 0;
    Flow::End
}

/// CALL r/m.
pub fn call_ind(c: &mut Cpu, o: &Op) -> Flow {
    let v = ip_mask(o, t!(c.src(o, o.sz)));
    if !check_target(c, v) {
        c.gp0();
        return Flow::Stop;
    }
    t!(c.push(o.next(), o.sz));
    c.rip = v;
    c.link = 2;
    Flow::End
}

/// RET / RET imm16.
pub fn ret(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.peek(o.sz, 0));
    if !check_target(c, v) {
        c.gp0();
        return Flow::Stop;
    }
    c.sp_add(o.sz as u64 + o.imm);
    c.rip = v;
    c.link = 2;
    Flow::End
}

/// LOOP (cc 0), LOOPE (1), LOOPNE (2), JrCXZ (3); `sz2` is the address (count) size.
pub fn loop_(c: &mut Cpu, o: &Op) -> Flow {
    let asz = o.sz2;
    let take = if o.cc == 3 {
        c.get(1, asz) == 0
    } else {
        let n = c.get(1, asz).wrapping_sub(1) & mask(asz);
        c.set(1, asz, n);
        n != 0
            && match o.cc {
                1 => c.cond(4),
                2 => c.cond(5),
                _ => true,
            }
    };
    if take {
        c.rip = o.target;
        c.link = 0;
    } else {
        c.rip = o.next();
        c.link = 1;
    }
    Flow::End
}

/// PUSH r/m/imm.
pub fn push(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.src(o, o.sz));
    t!(c.push(v, o.sz));
    Flow::Next
}

/// PUSH reg specialised for 64-bit mode.
pub fn push_r64(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.gpr[o.src as usize & 15];
    let sp = c.gpr[4].wrapping_sub(8);
    t!(c.wr::<8>(sp.wrapping_add(c.seg_base[crate::cpu::SS]), v));
    c.gpr[4] = sp;
    Flow::Next
}

/// POP reg specialised for 64-bit mode.
pub fn pop_r64(c: &mut Cpu, o: &Op) -> Flow {
    let sp = c.gpr[4];
    let v = t!(c.rd::<8>(sp.wrapping_add(c.seg_base[crate::cpu::SS])));
    c.gpr[4] = sp.wrapping_add(8);
    c.gpr[o.dst as usize & 15] = v;
    Flow::Next
}

/// POP r/m. The stack pointer is incremented before a memory destination's
/// address is computed (SDM: POP with an RSP-based address).
pub fn pop(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.peek(o.sz, 0));
    if o.dk == kind::MEM {
        let old = c.gpr[4];
        c.sp_add(o.sz as u64);
        let a = c.lin(o);
        if c.wr_sz(a, o.sz, v).is_err() {
            c.gpr[4] = old;
            return Flow::Stop;
        }
    } else {
        c.sp_add(o.sz as u64);
        c.set(o.dst, o.sz, v);
    }
    Flow::Next
}

/// PUSHF.
pub fn pushf(c: &mut Cpu, o: &Op) -> Flow {
    // RF and VM read as 0 in the pushed image.
    let v = c.rflags() & !(flags::RF | flags::VM);
    t!(c.push(v, o.sz));
    Flow::Next
}

/// POPF: which bits change depends on CPL and IOPL. Ends the block (TF/IF may change).
pub fn popf(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.peek(o.sz, 0));
    c.sp_add(o.sz as u64);
    let old = c.rflags();
    let mut changeable = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if c.cpl == 0 {
        changeable |= flags::IOPL | flags::IF;
    } else if (c.cpl as u64) <= (old & flags::IOPL) >> 12 {
        changeable |= flags::IF;
    }
    if o.sz == 2 {
        changeable &= 0xffff;
    }
    let new = (old & !changeable) | (v & changeable);
    c.set_rflags(new);
    c.rip = o.next();
    c.link = 1;
    Flow::End
}

/// ENTER imm16, imm8.
pub fn enter(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let level = o.target & 31;
    let ssz = c.stack_sz();
    let old_sp = c.gpr[4];
    let bp = c.get(5, ssz);
    if c.push(c.get(5, sz), sz).is_err() {
        return Flow::Stop;
    }
    let frame = c.get(4, ssz);
    let mut tbp = bp;
    for _ in 1..level.max(1) {
        if level <= 1 {
            break;
        }
        tbp = tbp.wrapping_sub(sz as u64) & mask(ssz);
        let a = c.lin_of(crate::cpu::SS, tbp);
        let v = match c.rd_sz(a, sz) {
            Ok(v) => v,
            Err(_) => {
                c.gpr[4] = old_sp;
                return Flow::Stop;
            }
        };
        if c.push(v, sz).is_err() {
            c.gpr[4] = old_sp;
            return Flow::Stop;
        }
    }
    if level > 0 && c.push(frame, sz).is_err() {
        c.gpr[4] = old_sp;
        return Flow::Stop;
    }
    // Touch the lowest byte of the new frame so a fault is raised now, as hardware does.
    let new_sp = c.get(4, ssz).wrapping_sub(o.imm) & mask(ssz);
    if o.imm > 0 {
        let a = c.lin_of(crate::cpu::SS, new_sp);
        if c.translate(a, crate::mem::Access::Write, c.cpl == 3)
            .is_err()
        {
            c.gpr[4] = old_sp;
            return Flow::Stop;
        }
    }
    c.set(5, ssz, frame);
    c.set(4, ssz, new_sp);
    Flow::Next
}

/// LEAVE.
pub fn leave(c: &mut Cpu, o: &Op) -> Flow {
    let ssz = c.stack_sz();
    let bp = c.get(5, ssz);
    let a = c.lin_of(crate::cpu::SS, bp);
    let v = t!(c.rd_sz(a, o.sz));
    c.set(4, ssz, bp.wrapping_add(o.sz as u64));
    c.set(5, o.sz, v);
    Flow::Next
}
