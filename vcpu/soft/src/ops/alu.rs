//! Integer data movement and arithmetic.

use crate::cpu::Cpu;
use crate::flags::{self, AF, CF, OF, PF, SF, ZF, mask, op as fop, sign, szp};
use crate::op::{Flow, Handler, Op, kind};
use crate::t;

/// ALU operation numbers for [`alu`].
pub mod aluop {
    /// ADD.
    pub const ADD: u8 = 0;
    /// OR.
    pub const OR: u8 = 1;
    /// ADC.
    pub const ADC: u8 = 2;
    /// SBB.
    pub const SBB: u8 = 3;
    /// AND.
    pub const AND: u8 = 4;
    /// SUB.
    pub const SUB: u8 = 5;
    /// XOR.
    pub const XOR: u8 = 6;
    /// CMP.
    pub const CMP: u8 = 7;
    /// TEST.
    pub const TEST: u8 = 8;
}

/// Operand forms for const-generic handlers.
pub mod form {
    /// reg, reg.
    pub const RR: u8 = 0;
    /// reg, imm.
    pub const RI: u8 = 1;
    /// reg, mem.
    pub const RM: u8 = 2;
    /// mem, reg.
    pub const MR: u8 = 3;
    /// mem, imm.
    pub const MI: u8 = 4;
}

#[inline(always)]
fn compute<const OP: u8, const SZ: u8>(c: &mut Cpu, a: u64, b: u64) -> u64 {
    match OP {
        aluop::ADD => {
            let r = a.wrapping_add(b);
            c.set_lazy(fop::ADD, SZ, a, b, r);
            r
        }
        aluop::ADC => {
            if c.cf() {
                let r = a.wrapping_add(b).wrapping_add(1);
                c.set_lazy(fop::ADC1, SZ, a, b, r);
                r
            } else {
                let r = a.wrapping_add(b);
                c.set_lazy(fop::ADD, SZ, a, b, r);
                r
            }
        }
        aluop::SBB => {
            if c.cf() {
                let r = a.wrapping_sub(b).wrapping_sub(1);
                c.set_lazy(fop::SBB1, SZ, a, b, r);
                r
            } else {
                let r = a.wrapping_sub(b);
                c.set_lazy(fop::SUB, SZ, a, b, r);
                r
            }
        }
        aluop::SUB | aluop::CMP => {
            let r = a.wrapping_sub(b);
            c.set_lazy(fop::SUB, SZ, a, b, r);
            r
        }
        aluop::OR => {
            let r = a | b;
            c.set_lazy(fop::LOGIC, SZ, a, b, r);
            r
        }
        aluop::XOR => {
            let r = a ^ b;
            c.set_lazy(fop::LOGIC, SZ, a, b, r);
            r
        }
        _ => {
            let r = a & b;
            c.set_lazy(fop::LOGIC, SZ, a, b, r);
            r
        }
    }
}

/// ADD/OR/ADC/SBB/AND/SUB/XOR/CMP/TEST in one operand form and size.
pub fn alu<const OP: u8, const F: u8, const SZ: u8>(c: &mut Cpu, o: &Op) -> Flow {
    let writes = OP != aluop::CMP && OP != aluop::TEST;
    let m = mask(SZ);
    match F {
        form::RR => {
            let a = c.get(o.dst, SZ);
            let b = c.get(o.src, SZ);
            let r = compute::<OP, SZ>(c, a, b);
            if writes {
                c.set(o.dst, SZ, r);
            }
        }
        form::RI => {
            let a = c.get(o.dst, SZ);
            let r = compute::<OP, SZ>(c, a, o.imm & m);
            if writes {
                c.set(o.dst, SZ, r);
            }
        }
        form::RM => {
            let addr = c.lin(o);
            let b = t!(c.rd_sz(addr, SZ));
            let a = c.get(o.dst, SZ);
            let r = compute::<OP, SZ>(c, a, b);
            if writes {
                c.set(o.dst, SZ, r);
            }
        }
        _ => {
            let addr = c.lin(o);
            let a = t!(c.rd_sz(addr, SZ));
            let b = if F == form::MR {
                c.get(o.src, SZ)
            } else {
                o.imm & m
            };
            let saved = c.lf;
            let r = compute::<OP, SZ>(c, a, b);
            if writes && c.wr_sz(addr, SZ, r).is_err() {
                c.lf = saved;
                return Flow::Stop;
            }
        }
    }
    Flow::Next
}

macro_rules! sized {
    ($f:ident, $sz:expr $(, $c:expr)*) => {
        match $sz {
            1 => $f::<$($c,)* 1> as Handler,
            2 => $f::<$($c,)* 2> as Handler,
            4 => $f::<$($c,)* 4> as Handler,
            _ => $f::<$($c,)* 8> as Handler,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use sized;

/// The ALU handler for an operation, form and size.
pub fn alu_handler(op: u8, f: u8, sz: u8) -> Handler {
    macro_rules! forms {
        ($o:expr) => {
            match f {
                form::RR => sized!(alu, sz, $o, 0),
                form::RI => sized!(alu, sz, $o, 1),
                form::RM => sized!(alu, sz, $o, 2),
                form::MR => sized!(alu, sz, $o, 3),
                _ => sized!(alu, sz, $o, 4),
            }
        };
    }
    match op {
        0 => forms!(0),
        1 => forms!(1),
        2 => forms!(2),
        3 => forms!(3),
        4 => forms!(4),
        5 => forms!(5),
        6 => forms!(6),
        7 => forms!(7),
        _ => forms!(8),
    }
}

/// An ALU op on registers (`F` RR or RI) fused with the Jcc after it: the
/// op carries the ALU operands and the Jcc's condition, target, RIP and length.
pub fn fused_alu_jcc<const OP: u8, const F: u8, const SZ: u8>(c: &mut Cpu, o: &Op) -> Flow {
    let writes = OP != aluop::CMP && OP != aluop::TEST;
    let a = c.get(o.dst, SZ);
    let b = if F == form::RR {
        c.get(o.src, SZ)
    } else {
        o.imm & mask(SZ)
    };
    let r = compute::<OP, SZ>(c, a, b);
    if writes {
        c.set(o.dst, SZ, r);
    }
    if c.cond(o.cc) {
        c.rip = o.target;
        c.link = 0;
    } else {
        c.rip = o.next();
        c.link = 1;
    }
    Flow::End
}

/// INC/DEC reg fused with the Jcc after it.
pub fn fused_incdec_jcc<const DEC: bool, const SZ: u8>(c: &mut Cpu, o: &Op) -> Flow {
    let a = c.get(o.dst, SZ);
    let cf = c.cf() as u64;
    let r = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    };
    c.set_lazy(if DEC { fop::DEC } else { fop::INC }, SZ, a, cf, r);
    c.set(o.dst, SZ, r);
    if c.cond(o.cc) {
        c.rip = o.target;
        c.link = 0;
    } else {
        c.rip = o.next();
        c.link = 1;
    }
    Flow::End
}

/// The fused op for `first` (a fusible flag setter) and `jcc`, if they fuse.
pub fn fuse(first: &Op, jcc: &Op) -> Option<Op> {
    use crate::op::fusion;
    if jcc.fuse != fusion::JCC {
        return None;
    }
    let h: Handler = match first.fuse & 15 {
        fusion::ALU_RR | fusion::ALU_RI => {
            let rr = first.fuse & 15 == fusion::ALU_RR;
            macro_rules! forms {
                ($o:expr) => {
                    if rr {
                        sized!(fused_alu_jcc, first.sz, $o, 0)
                    } else {
                        sized!(fused_alu_jcc, first.sz, $o, 1)
                    }
                };
            }
            match first.fuse >> 4 {
                0 => forms!(0),
                1 => forms!(1),
                2 => forms!(2),
                3 => forms!(3),
                4 => forms!(4),
                5 => forms!(5),
                6 => forms!(6),
                7 => forms!(7),
                _ => forms!(8),
            }
        }
        fusion::INC => sized!(fused_incdec_jcc, first.sz, false),
        fusion::DEC => sized!(fused_incdec_jcc, first.sz, true),
        _ => return None,
    };
    let mut f = *first;
    f.h = h;
    f.cc = jcc.cc;
    f.target = jcc.target;
    f.rip = jcc.rip;
    f.len = jcc.len;
    f.br = true;
    f.fuse = fusion::NONE;
    Some(f)
}

/// MOV in one form and size.
pub fn mov<const F: u8, const SZ: u8>(c: &mut Cpu, o: &Op) -> Flow {
    match F {
        form::RR => {
            let v = c.get(o.src, SZ);
            c.set(o.dst, SZ, v);
        }
        form::RI => c.set(o.dst, SZ, o.imm),
        form::RM => {
            let a = c.lin(o);
            let v = t!(c.rd_sz(a, SZ));
            c.set(o.dst, SZ, v);
        }
        form::MR => {
            let a = c.lin(o);
            let v = c.get(o.src, SZ);
            t!(c.wr_sz(a, SZ, v));
        }
        _ => {
            let a = c.lin(o);
            t!(c.wr_sz(a, SZ, o.imm));
        }
    }
    Flow::Next
}

/// The MOV handler for a form and size.
pub fn mov_handler(f: u8, sz: u8) -> Handler {
    match f {
        form::RR => sized!(mov, sz, 0),
        form::RI => sized!(mov, sz, 1),
        form::RM => sized!(mov, sz, 2),
        form::MR => sized!(mov, sz, 3),
        _ => sized!(mov, sz, 4),
    }
}

/// LEA.
pub fn lea(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.ea(o);
    c.set(o.dst, o.sz, v);
    Flow::Next
}

/// MOVZX / MOVSX / MOVSXD (`cc` = 1 sign-extends); `sz2` is the source size.
pub fn movx(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.src(o, o.sz2));
    let v = if o.cc == 1 {
        let s = sign(o.sz2);
        (v ^ s).wrapping_sub(s)
    } else {
        v
    };
    c.set(o.dst, o.sz, v);
    Flow::Next
}

/// INC/DEC/NEG/NOT (`cc` 0..=3) on reg or mem.
pub fn unary(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let (a, addr) = t!(c.dst(o, sz));
    let saved = c.lf;
    let saved_rf = c.rf;
    let r = match o.cc {
        0 => {
            let cf = c.cf() as u64;
            let r = a.wrapping_add(1);
            c.set_lazy(fop::INC, sz, a, cf, r);
            r
        }
        1 => {
            let cf = c.cf() as u64;
            let r = a.wrapping_sub(1);
            c.set_lazy(fop::DEC, sz, a, cf, r);
            r
        }
        2 => {
            let r = 0u64.wrapping_sub(a);
            c.set_lazy(fop::SUB, sz, 0, a, r);
            r
        }
        _ => !a,
    };
    if c.put(o, sz, addr, r).is_err() {
        c.lf = saved;
        c.rf = saved_rf;
        return Flow::Stop;
    }
    Flow::Next
}

/// Register-only INC/DEC specialised by size (hot in loops).
pub fn incdec_r<const DEC: bool, const SZ: u8>(c: &mut Cpu, o: &Op) -> Flow {
    let a = c.get(o.dst, SZ);
    let cf = c.cf() as u64;
    let r = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    };
    c.set_lazy(if DEC { fop::DEC } else { fop::INC }, SZ, a, cf, r);
    c.set(o.dst, SZ, r);
    Flow::Next
}

/// SHL (`K` 0), SHR (1), SAR (2) by an immediate count `0 < imm < bits`, lazy flags.
pub fn shift_imm<const K: u8, const SZ: u8>(c: &mut Cpu, o: &Op) -> Flow {
    let (a, addr) = t!(c.dst(o, SZ));
    let n = o.imm & 63;
    let m = mask(SZ);
    let (r, lop, la) = match K {
        0 => ((a << n) & m, fop::SHL, a),
        1 => (a >> n, fop::SHR, a),
        _ => {
            let s = sign(SZ);
            let sa = (a ^ s).wrapping_sub(s);
            (((sa as i64) >> n) as u64 & m, fop::SAR, sa)
        }
    };
    t!(c.put(o, SZ, addr, r));
    c.set_lazy(lop, SZ, la, n, r);
    Flow::Next
}

/// The immediate-count shift handler (`k` 0 SHL, 1 SHR, 2 SAR).
pub fn shift_imm_handler(k: u8, sz: u8) -> Handler {
    match k {
        0 => sized!(shift_imm, sz, 0),
        1 => sized!(shift_imm, sz, 1),
        _ => sized!(shift_imm, sz, 2),
    }
}

/// The register INC/DEC handler for a size.
pub fn incdec_handler(dec: bool, sz: u8) -> Handler {
    if dec {
        sized!(incdec_r, sz, true)
    } else {
        sized!(incdec_r, sz, false)
    }
}

/// Shifts and rotates: `cc` = 0 ROL, 1 ROR, 2 RCL, 3 RCR, 4 SHL, 5 SHR, 6 SAL, 7 SAR.
/// Count from `imm` (sk = IMM) or CL.
pub fn shift(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let bits = sz as u32 * 8;
    let cnt_raw = if o.sk == kind::IMM {
        o.imm
    } else {
        c.gpr[1] & 0xff
    };
    let cnt = (cnt_raw & if sz == 8 { 63 } else { 31 }) as u32;
    let (a, addr) = t!(c.dst(o, sz));
    if cnt == 0 {
        // Flags are untouched, but a 32-bit register destination is still
        // written (zero-extended to 64 bits), as on hardware.
        if sz == 4 && o.dk != kind::MEM {
            c.set(o.dst, 4, a);
        }
        return Flow::Next;
    }
    let m = mask(sz);
    let s = sign(sz);
    let f0 = c.rflags();
    let cf_in = f0 & CF != 0;
    let (r, newf, fmask) = match o.cc {
        0 | 1 => {
            let n = cnt % bits;
            let r = if o.cc == 0 {
                ((a << n) | if n == 0 { 0 } else { a >> (bits - n) }) & m
            } else {
                ((a >> n) | if n == 0 { 0 } else { a << (bits - n) }) & m
            };
            let (cf, of) = if o.cc == 0 {
                let cf = r & 1 != 0;
                (cf, (r & s != 0) != cf)
            } else {
                (r & s != 0, (r & s != 0) != (r & (s >> 1) != 0))
            };
            (r, (cf as u64) | if of { OF } else { 0 }, CF | OF)
        }
        2 | 3 => {
            let n = match sz {
                1 => cnt % 9,
                2 => cnt % 17,
                _ => cnt,
            };
            let mut r = a;
            let mut cf = cf_in;
            for _ in 0..n {
                if o.cc == 2 {
                    let out = r & s != 0;
                    r = ((r << 1) | cf as u64) & m;
                    cf = out;
                } else {
                    let out = r & 1 != 0;
                    r = (r >> 1) | if cf { s } else { 0 };
                    cf = out;
                }
            }
            let of = if o.cc == 2 {
                (r & s != 0) != cf
            } else {
                (r & s != 0) != (r & (s >> 1) != 0)
            };
            (r, (cf as u64) | if of { OF } else { 0 }, CF | OF)
        }
        4 | 6 => {
            let r = if cnt >= 64 { 0 } else { (a << cnt) & m };
            let cf = if cnt > bits {
                false
            } else {
                (a >> (bits - cnt)) & 1 != 0
            };
            let of = (r & s != 0) != cf;
            (
                r,
                szp(r, sz) | cf as u64 | if of { OF } else { 0 },
                CF | OF | SF | ZF | PF | AF,
            )
        }
        5 => {
            let r = if cnt >= 64 { 0 } else { a >> cnt };
            let cf = (a >> (cnt - 1)) & 1 != 0;
            let of = a & s != 0;
            (
                r,
                szp(r, sz) | cf as u64 | if of { OF } else { 0 },
                CF | OF | SF | ZF | PF | AF,
            )
        }
        _ => {
            let sa = ((a ^ s).wrapping_sub(s)) as i64;
            let r = (sa >> cnt.min(63)) as u64 & m;
            let cf = (sa >> (cnt - 1).min(63)) & 1 != 0;
            (r, szp(r, sz) | cf as u64, CF | OF | SF | ZF | PF | AF)
        }
    };
    t!(c.put(o, sz, addr, r));
    c.rf = (f0 & !fmask) | (newf & fmask);
    c.lf.op = fop::NONE;
    Flow::Next
}

/// SHLD (`cc` 0) / SHRD (`cc` 1): dst, src reg, count imm or CL.
pub fn shxd(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let bits = sz as u32 * 8;
    let cnt_raw = if o.sk == kind::IMM {
        o.imm
    } else {
        c.gpr[1] & 0xff
    };
    let cnt = (cnt_raw & if sz == 8 { 63 } else { 31 }) as u32;
    let (a, addr) = t!(c.dst(o, sz));
    if cnt == 0 {
        if sz == 4 && o.dk != kind::MEM {
            c.set(o.dst, 4, a);
        }
        return Flow::Next;
    }
    let b = c.get(o.src, sz);
    let m = mask(sz);
    let s = sign(sz);
    // Combine into a 128-bit value for uniform handling (16-bit counts > 16 are undefined).
    let (r, cf) = if o.cc == 0 {
        let wide = ((a as u128) << bits) | b as u128;
        let shifted = wide << cnt;
        let r = ((shifted >> bits) as u64) & m;
        let cf = (wide >> (2 * bits - cnt)) & 1 != 0;
        (r, cf)
    } else {
        let wide = ((b as u128) << bits) | a as u128;
        let r = ((wide >> cnt) as u64) & m;
        let cf = (wide >> (cnt - 1)) & 1 != 0;
        (r, cf)
    };
    let of = (r & s != 0) != (a & s != 0);
    t!(c.put(o, sz, addr, r));
    let f0 = c.rflags();
    let newf = szp(r, sz) | cf as u64 | if of { OF } else { 0 };
    c.rf = (f0 & !(CF | OF | SF | ZF | PF | AF)) | newf;
    c.lf.op = fop::NONE;
    Flow::Next
}

/// MUL/IMUL one-operand (`cc` 0 MUL, 1 IMUL): RDX:RAX = RAX * src.
pub fn mul1(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let b = t!(c.src(o, sz));
    let a = c.get(0, sz);
    let bits = sz as u32 * 8;
    let (lo, hi, over) = if o.cc == 0 {
        let p = (a as u128) * (b as u128);
        let lo = p as u64 & mask(sz);
        let hi = (p >> bits) as u64 & mask(sz);
        (lo, hi, hi != 0)
    } else {
        let s = sign(sz);
        let sa = ((a ^ s).wrapping_sub(s)) as i64 as i128;
        let sb = ((b ^ s).wrapping_sub(s)) as i64 as i128;
        let p = sa.wrapping_mul(sb);
        let lo = p as u64 & mask(sz);
        let hi = (p >> bits) as u64 & mask(sz);
        let fits = ((lo ^ s).wrapping_sub(s)) as i64 as i128 == p;
        (lo, hi, !fits)
    };
    if sz == 1 {
        c.set(0, 2, lo | (hi << 8));
    } else {
        c.set(0, sz, lo);
        c.set(2, sz, hi);
    }
    let f = if over { CF | OF } else { 0 } | szp(lo, sz);
    c.set_arith(flags::ARITH, f);
    Flow::Next
}

/// IMUL two/three-operand: dst = src * (imm or dst).
pub fn imul2(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let b = t!(c.src(o, sz));
    let a = if o.cc == 1 {
        o.imm & mask(sz)
    } else {
        c.get(o.dst, sz)
    };
    let s = sign(sz);
    let sa = ((a ^ s).wrapping_sub(s)) as i64 as i128;
    let sb = ((b ^ s).wrapping_sub(s)) as i64 as i128;
    let p = sa.wrapping_mul(sb);
    let lo = p as u64 & mask(sz);
    let fits = ((lo ^ s).wrapping_sub(s)) as i64 as i128 == p;
    c.set(o.dst, sz, lo);
    let f = if fits { 0 } else { CF | OF } | szp(lo, sz);
    c.set_arith(flags::ARITH, f);
    Flow::Next
}

/// DIV/IDIV (`cc` 0 DIV, 1 IDIV).
pub fn div(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let b = t!(c.src(o, sz));
    if b == 0 {
        c.fault(0, None);
        return Flow::Stop;
    }
    let bits = sz as u32 * 8;
    let (lo, hi) = if sz == 1 {
        (c.get(0, 1), c.get(16, 1))
    } else {
        (c.get(0, sz), c.get(2, sz))
    };
    let n = ((hi as u128) << bits) | lo as u128;
    let (q, r) = if o.cc == 0 {
        let q = n / b as u128;
        if q > mask(sz) as u128 {
            c.fault(0, None);
            return Flow::Stop;
        }
        (q as u64, (n % b as u128) as u64)
    } else {
        // Sign-extend the 2*bits dividend.
        let sn = if bits == 64 {
            n as i128
        } else {
            let sh = 128 - 2 * bits;
            ((n << sh) as i128) >> sh
        };
        let s = sign(sz);
        let sb = ((b ^ s).wrapping_sub(s)) as i64 as i128;
        if sn == i128::MIN && sb == -1 {
            c.fault(0, None);
            return Flow::Stop;
        }
        let q = sn / sb;
        let r = sn % sb;
        let max = (s - 1) as i128;
        if q > max || q < -(max + 1) {
            c.fault(0, None);
            return Flow::Stop;
        }
        (q as u64 & mask(sz), r as u64 & mask(sz))
    };
    if sz == 1 {
        c.set(0, 2, q | (r << 8));
    } else {
        c.set(0, sz, q);
        c.set(2, sz, r);
    }
    Flow::Next
}

/// BT/BTS/BTR/BTC (`cc` 0..=3); a register bit offset addresses memory beyond the operand.
pub fn bt(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let bits = sz as u64 * 8;
    let off = if o.sk == kind::IMM {
        o.imm
    } else {
        c.get(o.src, sz)
    };
    let (val, addr, bit) = if o.dk == kind::MEM {
        let base = c.lin(o);
        let (byte_off, bit) = if o.sk == kind::IMM {
            (0i64, off % bits)
        } else {
            let s = sign(sz);
            let soff = ((off ^ s).wrapping_sub(s)) as i64;
            (
                soff.div_euclid(bits as i64) * sz as i64,
                soff.rem_euclid(bits as i64) as u64,
            )
        };
        let a = base.wrapping_add(byte_off as u64) & c.lin_mask;
        (t!(c.rd_sz(a, sz)), a, bit)
    } else {
        (c.get(o.dst, sz), 0, off % bits)
    };
    let cf = (val >> bit) & 1;
    let nv = match o.cc {
        1 => val | (1 << bit),
        2 => val & !(1 << bit),
        3 => val ^ (1 << bit),
        _ => val,
    };
    if o.cc != 0 {
        if o.dk == kind::MEM {
            t!(c.wr_sz(addr, sz, nv));
        } else {
            c.set(o.dst, sz, nv);
        }
    }
    c.set_arith(CF, cf);
    Flow::Next
}

/// BSF (0), BSR (1), TZCNT (2), LZCNT (3), POPCNT (4).
pub fn bitscan(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let v = t!(c.src(o, sz));
    let bits = sz as u32 * 8;
    match o.cc {
        0 | 1 => {
            if v == 0 {
                c.set_arith(ZF, ZF);
            } else {
                let r = if o.cc == 0 {
                    v.trailing_zeros()
                } else {
                    63 - v.leading_zeros()
                };
                c.set(o.dst, sz, r as u64);
                c.set_arith(ZF, 0);
            }
        }
        2 | 3 => {
            let r = if o.cc == 2 {
                if v == 0 { bits } else { v.trailing_zeros() }
            } else {
                (v.leading_zeros()).saturating_sub(64 - bits)
            };
            c.set(o.dst, sz, r as u64);
            let f = if v == 0 { CF } else { 0 } | if r == 0 { ZF } else { 0 };
            c.set_arith(CF | ZF, f);
        }
        _ => {
            let r = v.count_ones() as u64;
            c.set(o.dst, sz, r);
            c.set_arith(flags::ARITH, if v == 0 { ZF } else { 0 });
        }
    }
    Flow::Next
}

/// BSWAP.
pub fn bswap(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.get(o.dst, o.sz);
    let r = if o.sz == 8 {
        v.swap_bytes()
    } else if o.sz == 4 {
        (v as u32).swap_bytes() as u64
    } else {
        0 // 16-bit BSWAP is undefined; zero is what current CPUs produce.
    };
    c.set(o.dst, o.sz, r);
    Flow::Next
}

/// CMOVcc: the load happens even when the condition is false (and can fault).
pub fn cmov(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.src(o, o.sz));
    if c.cond(o.cc) {
        c.set(o.dst, o.sz, v);
    } else if o.sz == 4 {
        let keep = c.get(o.dst, 4);
        c.set(o.dst, 4, keep);
    }
    Flow::Next
}

/// SETcc.
pub fn setcc(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.cond(o.cc) as u64;
    let (_, addr) = if o.dk == kind::MEM {
        (0, c.lin(o))
    } else {
        (0, 0)
    };
    t!(c.put(o, 1, addr, v));
    Flow::Next
}

/// XCHG reg/mem with reg.
pub fn xchg(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let (a, addr) = t!(c.dst(o, sz));
    let b = c.get(o.src, sz);
    t!(c.put(o, sz, addr, b));
    c.set(o.src, sz, a);
    Flow::Next
}

/// XADD.
pub fn xadd(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let (a, addr) = t!(c.dst(o, sz));
    let b = c.get(o.src, sz);
    let r = a.wrapping_add(b);
    if o.dk == kind::MEM {
        t!(c.put(o, sz, addr, r));
        c.set(o.src, sz, a);
    } else {
        // SRC <- DEST, then DEST <- sum: with one register for both, the sum wins.
        c.set(o.src, sz, a);
        c.set(o.dst, sz, r);
    }
    c.set_lazy(fop::ADD, sz, a, b, r);
    Flow::Next
}

/// CMPXCHG.
pub fn cmpxchg(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let (d, addr) = t!(c.dst(o, sz));
    let acc = c.get(0, sz);
    if acc == d {
        let s = c.get(o.src, sz);
        t!(c.put(o, sz, addr, s));
    } else {
        // The destination is written back with its own value (a locked RMW always writes).
        t!(c.put(o, sz, addr, d));
        c.set(0, sz, d);
    }
    c.set_lazy(fop::SUB, sz, acc, d, acc.wrapping_sub(d));
    Flow::Next
}

/// CMPXCHG8B (`sz` 4) / CMPXCHG16B (`sz` 8).
pub fn cmpxchg_wide(c: &mut Cpu, o: &Op) -> Flow {
    let addr = c.lin(o);
    if o.sz == 8 {
        if addr & 15 != 0 {
            c.gp0();
            return Flow::Stop;
        }
        let m = t!(c.rd128(addr));
        let (lo, hi) = (c.gpr[0], c.gpr[2]);
        if m == [lo, hi] {
            let (blo, bhi) = (c.gpr[3], c.gpr[1]);
            t!(c.wr128(addr, [blo, bhi]));
            c.set_arith(ZF, ZF);
        } else {
            t!(c.wr128(addr, m));
            c.gpr[0] = m[0];
            c.gpr[2] = m[1];
            c.set_arith(ZF, 0);
        }
    } else {
        let m = t!(c.rd::<8>(addr));
        let cur = (c.gpr[0] & 0xffff_ffff) | (c.gpr[2] << 32);
        if m == cur {
            let nv = (c.gpr[3] & 0xffff_ffff) | (c.gpr[1] << 32);
            t!(c.wr::<8>(addr, nv));
            c.set_arith(ZF, ZF);
        } else {
            t!(c.wr::<8>(addr, m));
            c.set(0, 4, m & 0xffff_ffff);
            c.set(2, 4, m >> 32);
            c.set_arith(ZF, 0);
        }
    }
    Flow::Next
}

/// CBW/CWDE/CDQE (`cc` 0) and CWD/CDQ/CQO (`cc` 1) for operand size `sz`.
pub fn convert(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    if o.cc == 0 {
        let half = sz / 2;
        let v = c.get(0, half);
        let s = sign(half);
        c.set(0, sz, (v ^ s).wrapping_sub(s));
    } else {
        let v = c.get(0, sz);
        let hi = if v & sign(sz) != 0 { u64::MAX } else { 0 };
        c.set(2, sz, hi);
    }
    Flow::Next
}

/// CLC/STC/CMC/CLD/STD (`cc` 0..=4), LAHF (5), SAHF (6).
pub fn flagop(c: &mut Cpu, o: &Op) -> Flow {
    c.materialize();
    match o.cc {
        0 => c.rf &= !CF,
        1 => c.rf |= CF,
        2 => c.rf ^= CF,
        3 => c.rf &= !flags::DF,
        4 => c.rf |= flags::DF,
        5 => {
            let ah = (c.rf & 0xd5) | 2;
            c.set(16, 1, ah);
        }
        _ => {
            let ah = c.get(16, 1);
            c.rf = (c.rf & !0xd5) | (ah & 0xd5);
        }
    }
    Flow::Next
}

/// NOP (and the hints that do nothing here: PAUSE, fences, prefetch, ENDBR).
pub fn nop(_c: &mut Cpu, _o: &Op) -> Flow {
    Flow::Next
}

/// Raise #UD (unsupported or invalid instruction).
pub fn ud(c: &mut Cpu, _o: &Op) -> Flow {
    c.ud();
    Flow::Stop
}
