//! RFLAGS with lazy evaluation of the six arithmetic flags.
//!
//! Most flag results are never read (the next ALU op overwrites them), so
//! ALU ops record their operands and result in [`Lazy`] and the flags are
//! computed only when something reads them (Jcc, SETcc, PUSHF, an exit).

/// Carry.
pub const CF: u64 = 1 << 0;
/// Parity.
pub const PF: u64 = 1 << 2;
/// Auxiliary carry.
pub const AF: u64 = 1 << 4;
/// Zero.
pub const ZF: u64 = 1 << 6;
/// Sign.
pub const SF: u64 = 1 << 7;
/// Trap.
pub const TF: u64 = 1 << 8;
/// Interrupt enable.
pub const IF: u64 = 1 << 9;
/// Direction.
pub const DF: u64 = 1 << 10;
/// Overflow.
pub const OF: u64 = 1 << 11;
/// I/O privilege level (2 bits).
pub const IOPL: u64 = 3 << 12;
/// Nested task.
pub const NT: u64 = 1 << 14;
/// Resume.
pub const RF: u64 = 1 << 16;
/// Virtual-8086 mode.
pub const VM: u64 = 1 << 17;
/// Alignment check.
pub const AC: u64 = 1 << 18;
/// CPUID available.
pub const ID: u64 = 1 << 21;
/// The arithmetic flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
/// Bits software can ever see set (bit 1 always reads as 1).
pub const WRITABLE: u64 = ARITH | TF | IF | DF | IOPL | NT | RF | AC | ID | (1 << 19) | (1 << 20);

/// Which operation produced the pending flags.
pub mod op {
    /// Flags are materialized in `rf`.
    pub const NONE: u8 = 0;
    /// a + b.
    pub const ADD: u8 = 1;
    /// a - b.
    pub const SUB: u8 = 2;
    /// a + b + 1 (ADC with carry in).
    pub const ADC1: u8 = 3;
    /// a - b - 1 (SBB with borrow in).
    pub const SBB1: u8 = 4;
    /// AND/OR/XOR/TEST: CF = OF = 0.
    pub const LOGIC: u8 = 5;
    /// a + 1 with CF kept in `b`.
    pub const INC: u8 = 6;
    /// a - 1 with CF kept in `b`.
    pub const DEC: u8 = 7;
    /// a << b, 0 < b < size in bits.
    pub const SHL: u8 = 8;
    /// a >> b (logical), 0 < b < size in bits.
    pub const SHR: u8 = 9;
    /// a >> b (arithmetic, `a` sign-extended to 64 bits), 0 < b < size in bits.
    pub const SAR: u8 = 10;
}

/// Pending flag computation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lazy {
    /// One of [`op`].
    pub op: u8,
    /// Operand size in bytes.
    pub sz: u8,
    /// Result (unmasked).
    pub res: u64,
    /// First operand.
    pub a: u64,
    /// Second operand (INC/DEC: the preserved CF).
    pub b: u64,
}

/// All-ones mask of an operand size.
#[inline(always)]
pub fn mask(sz: u8) -> u64 {
    if sz >= 8 {
        u64::MAX
    } else {
        (1u64 << (sz as u32 * 8)) - 1
    }
}

/// The sign bit of an operand size.
#[inline(always)]
pub fn sign(sz: u8) -> u64 {
    1u64 << (sz as u32 * 8 - 1)
}

/// Parity flag of the low byte of `v`.
#[inline(always)]
pub fn parity(v: u64) -> u64 {
    if (v as u8).count_ones() % 2 == 0 {
        PF
    } else {
        0
    }
}

/// SF, ZF, PF of a result of size `sz`.
#[inline(always)]
pub fn szp(res: u64, sz: u8) -> u64 {
    let m = res & mask(sz);
    (if m == 0 { ZF } else { 0 }) | (if m & sign(sz) != 0 { SF } else { 0 }) | parity(m)
}

impl Lazy {
    /// The carry flag.
    #[inline(always)]
    pub fn cf(&self, rf: u64) -> bool {
        let m = mask(self.sz);
        match self.op {
            op::ADD => self.res & m < self.a & m,
            op::ADC1 => self.res & m <= self.a & m,
            op::SUB => self.a & m < self.b & m,
            op::SBB1 => self.a & m <= self.b & m,
            op::LOGIC => false,
            op::INC | op::DEC => self.b != 0,
            op::SHL => (self.a >> ((self.sz as u64 * 8 - self.b) & 63)) & 1 != 0,
            op::SHR | op::SAR => (self.a >> ((self.b - 1) & 63)) & 1 != 0,
            _ => rf & CF != 0,
        }
    }

    /// The arithmetic flags as RFLAGS bits.
    pub fn compute(&self, rf: u64) -> u64 {
        let s = sign(self.sz);
        let (a, b, r) = (self.a, self.b, self.res);
        let cf = if self.cf(rf) { CF } else { 0 };
        let (of, af) = match self.op {
            op::ADD | op::ADC1 => (((a ^ r) & (b ^ r) & s) != 0, (a ^ b ^ r) & 0x10 != 0),
            op::SUB | op::SBB1 => (((a ^ b) & (a ^ r) & s) != 0, (a ^ b ^ r) & 0x10 != 0),
            op::INC => (r & mask(self.sz) == s, (a ^ r) & 0x10 != 0),
            op::DEC => (a & mask(self.sz) == s, (a ^ r) & 0x10 != 0),
            op::LOGIC | op::SAR => (false, false),
            op::SHL => ((r & s != 0) != (cf != 0), false),
            op::SHR => (a & s != 0, false),
            _ => return rf & ARITH,
        };
        cf | szp(r, self.sz) | if of { OF } else { 0 } | if af { AF } else { 0 }
    }

    /// Evaluate condition code `cc` (the x86 encoding nibble 0..=15).
    #[inline(always)]
    pub fn cond(&self, rf: u64, cc: u8) -> bool {
        let m = mask(self.sz);
        let v = match self.op {
            op::SUB => {
                let (a, b) = (self.a & m, self.b & m);
                let s = sign(self.sz);
                let sa = (a ^ s).wrapping_sub(s) as i64; // sign-extend
                let sb = (b ^ s).wrapping_sub(s) as i64;
                match cc >> 1 {
                    1 => a < b,
                    2 => a == b,
                    3 => a <= b,
                    4 => (a.wrapping_sub(b) & s) != 0,
                    6 => sa < sb,
                    7 => sa <= sb,
                    _ => return eval(self.compute(rf), cc),
                }
            }
            op::LOGIC => {
                let r = self.res & m;
                let neg = r & sign(self.sz) != 0;
                match cc >> 1 {
                    0 | 1 => false,
                    2 | 3 => r == 0,
                    4 | 6 => neg,
                    7 => r == 0 || neg,
                    _ => return eval(self.compute(rf), cc),
                }
            }
            op::NONE => return eval(rf, cc),
            _ => {
                let r = self.res & m;
                match cc >> 1 {
                    2 => r == 0,
                    4 => r & sign(self.sz) != 0,
                    _ => return eval(self.compute(rf), cc),
                }
            }
        };
        v ^ (cc & 1 != 0)
    }
}

/// Evaluate condition code `cc` on materialized flags.
#[inline]
pub fn eval(f: u64, cc: u8) -> bool {
    let v = match cc >> 1 {
        0 => f & OF != 0,
        1 => f & CF != 0,
        2 => f & ZF != 0,
        3 => f & (CF | ZF) != 0,
        4 => f & SF != 0,
        5 => f & PF != 0,
        6 => (f & SF != 0) != (f & OF != 0),
        _ => f & ZF != 0 || ((f & SF != 0) != (f & OF != 0)),
    };
    v ^ (cc & 1 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_condition_paths_agree_with_materialized_flags() {
        let vals = [
            0u64,
            1,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            5,
        ];
        for &sz in &[1u8, 2, 4, 8] {
            for &a in &vals {
                for &b in &vals {
                    for opk in [op::SUB, op::LOGIC] {
                        let res = if opk == op::SUB {
                            a.wrapping_sub(b)
                        } else {
                            a & b
                        };
                        let l = Lazy {
                            op: opk,
                            sz,
                            res,
                            a,
                            b,
                        };
                        let f = l.compute(0);
                        for cc in 0..16 {
                            assert_eq!(
                                l.cond(0, cc),
                                eval(f, cc),
                                "op {opk} sz {sz} a {a:#x} b {b:#x} cc {cc}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn add_sub_flags() {
        let l = Lazy {
            op: op::ADD,
            sz: 1,
            res: 0x80,
            a: 0x7f,
            b: 1,
        };
        let f = l.compute(0);
        assert_eq!(f & (OF | SF | CF | ZF | AF), OF | SF | AF);
        let l = Lazy {
            op: op::SUB,
            sz: 4,
            res: 0u64.wrapping_sub(1),
            a: 0,
            b: 1,
        };
        assert_eq!(l.compute(0) & (CF | SF | ZF | OF), CF | SF);
    }
}
