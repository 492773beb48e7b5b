//! The SSE/SSE2 data movement and integer operations compiled no_std code uses.

use crate::cpu::{Cpu, R, cr0, cr4};
use crate::op::{Flow, Op, kind};
use crate::t;

/// SSE binary operations (`cc` of [`binop`]).
pub mod sop {
    /// PXOR/XORPS/XORPD.
    pub const XOR: u8 = 0;
    /// POR/ORPS/ORPD.
    pub const OR: u8 = 1;
    /// PAND/ANDPS/ANDPD.
    pub const AND: u8 = 2;
    /// PANDN/ANDNPS/ANDNPD.
    pub const ANDN: u8 = 3;
    /// PCMPEQB.
    pub const PCMPEQB: u8 = 4;
    /// PCMPEQW.
    pub const PCMPEQW: u8 = 5;
    /// PCMPEQD.
    pub const PCMPEQD: u8 = 6;
    /// PADDB.
    pub const PADDB: u8 = 7;
    /// PADDW.
    pub const PADDW: u8 = 8;
    /// PADDD.
    pub const PADDD: u8 = 9;
    /// PADDQ.
    pub const PADDQ: u8 = 10;
    /// PSUBB.
    pub const PSUBB: u8 = 11;
    /// PSUBW.
    pub const PSUBW: u8 = 12;
    /// PSUBD.
    pub const PSUBD: u8 = 13;
    /// PSUBQ.
    pub const PSUBQ: u8 = 14;
    /// PUNPCKLBW.
    pub const PUNPCKLBW: u8 = 15;
    /// PUNPCKLWD.
    pub const PUNPCKLWD: u8 = 16;
    /// PUNPCKLDQ.
    pub const PUNPCKLDQ: u8 = 17;
    /// PUNPCKLQDQ.
    pub const PUNPCKLQDQ: u8 = 18;
    /// PUNPCKHBW.
    pub const PUNPCKHBW: u8 = 19;
    /// PUNPCKHWD.
    pub const PUNPCKHWD: u8 = 20;
    /// PUNPCKHDQ.
    pub const PUNPCKHDQ: u8 = 21;
    /// PUNPCKHQDQ.
    pub const PUNPCKHQDQ: u8 = 22;
    /// PMINUB.
    pub const PMINUB: u8 = 23;
    /// PMAXUB.
    pub const PMAXUB: u8 = 24;
    /// PCMPGTB.
    pub const PCMPGTB: u8 = 25;
    /// PCMPGTD.
    pub const PCMPGTD: u8 = 26;
    /// PCMPEQQ... not SSE2; PMULUDQ.
    pub const PMULUDQ: u8 = 27;
    /// PCMPGTW.
    pub const PCMPGTW: u8 = 28;
}

/// #UD/#NM checks for SSE instructions.
fn check(c: &mut Cpu) -> R<()> {
    if c.cr0 & cr0::EM != 0 || c.cr4 & cr4::OSFXSR == 0 {
        return Err(c.ud());
    }
    if c.cr0 & cr0::TS != 0 {
        return Err(c.fault(7, None));
    }
    Ok(())
}

fn bytes(v: [u64; 2]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&v[0].to_le_bytes());
    b[8..].copy_from_slice(&v[1].to_le_bytes());
    b
}

fn from_bytes(b: [u8; 16]) -> [u64; 2] {
    [
        u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
        u64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8])),
    ]
}

fn lanes<const N: usize>(v: [u64; 2]) -> [u64; 16] {
    // Split into 16/N lanes of N bytes.
    let b = bytes(v);
    let mut out = [0u64; 16];
    for (i, ch) in b.chunks(N).enumerate() {
        let mut x = 0u64;
        for (j, &y) in ch.iter().enumerate() {
            x |= (y as u64) << (8 * j);
        }
        out[i] = x;
    }
    out
}

fn unlanes<const N: usize>(l: [u64; 16]) -> [u64; 2] {
    let mut b = [0u8; 16];
    for i in 0..16 / N {
        for j in 0..N {
            b[i * N + j] = (l[i] >> (8 * j)) as u8;
        }
    }
    from_bytes(b)
}

fn map2<const N: usize>(a: [u64; 2], b: [u64; 2], f: impl Fn(u64, u64) -> u64) -> [u64; 2] {
    let (la, lb) = (lanes::<N>(a), lanes::<N>(b));
    let mut r = [0u64; 16];
    let m = if N == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * N)) - 1
    };
    for i in 0..16 / N {
        r[i] = f(la[i], lb[i]) & m;
    }
    unlanes::<N>(r)
}

fn interleave<const N: usize>(a: [u64; 2], b: [u64; 2], high: bool) -> [u64; 2] {
    let (la, lb) = (lanes::<N>(a), lanes::<N>(b));
    let half = 8 / N;
    let start = if high { half } else { 0 };
    let mut r = [0u64; 16];
    for i in 0..half {
        r[2 * i] = la[start + i];
        r[2 * i + 1] = lb[start + i];
    }
    unlanes::<N>(r)
}

fn sext(v: u64, n: usize) -> i64 {
    let sh = 64 - 8 * n as u32;
    ((v << sh) as i64) >> sh
}

/// Read the 128-bit source (xmm or m128; `cc2` aligned requirement via `sz2` = 1).
fn src128(c: &mut Cpu, o: &Op) -> R<[u64; 2]> {
    if o.sk == kind::MEM {
        let a = c.lin(o);
        if o.sz2 == 1 && a & 15 != 0 {
            return Err(c.gp0());
        }
        c.rd128(a)
    } else {
        Ok(c.xmm[o.src as usize & 15])
    }
}

/// Binary op dst = dst OP src.
pub fn binop(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let b = t!(src128(c, o));
    let a = c.xmm[o.dst as usize & 15];
    let r = match o.cc {
        sop::XOR => [a[0] ^ b[0], a[1] ^ b[1]],
        sop::OR => [a[0] | b[0], a[1] | b[1]],
        sop::AND => [a[0] & b[0], a[1] & b[1]],
        sop::ANDN => [!a[0] & b[0], !a[1] & b[1]],
        sop::PCMPEQB => map2::<1>(a, b, |x, y| if x == y { u64::MAX } else { 0 }),
        sop::PCMPEQW => map2::<2>(a, b, |x, y| if x == y { u64::MAX } else { 0 }),
        sop::PCMPEQD => map2::<4>(a, b, |x, y| if x == y { u64::MAX } else { 0 }),
        sop::PCMPGTB => map2::<1>(
            a,
            b,
            |x, y| if sext(x, 1) > sext(y, 1) { u64::MAX } else { 0 },
        ),
        sop::PCMPGTW => map2::<2>(
            a,
            b,
            |x, y| if sext(x, 2) > sext(y, 2) { u64::MAX } else { 0 },
        ),
        sop::PCMPGTD => map2::<4>(
            a,
            b,
            |x, y| if sext(x, 4) > sext(y, 4) { u64::MAX } else { 0 },
        ),
        sop::PADDB => map2::<1>(a, b, u64::wrapping_add),
        sop::PADDW => map2::<2>(a, b, u64::wrapping_add),
        sop::PADDD => map2::<4>(a, b, u64::wrapping_add),
        sop::PADDQ => [a[0].wrapping_add(b[0]), a[1].wrapping_add(b[1])],
        sop::PSUBB => map2::<1>(a, b, u64::wrapping_sub),
        sop::PSUBW => map2::<2>(a, b, u64::wrapping_sub),
        sop::PSUBD => map2::<4>(a, b, u64::wrapping_sub),
        sop::PSUBQ => [a[0].wrapping_sub(b[0]), a[1].wrapping_sub(b[1])],
        sop::PUNPCKLBW => interleave::<1>(a, b, false),
        sop::PUNPCKLWD => interleave::<2>(a, b, false),
        sop::PUNPCKLDQ => interleave::<4>(a, b, false),
        sop::PUNPCKLQDQ => [a[0], b[0]],
        sop::PUNPCKHBW => interleave::<1>(a, b, true),
        sop::PUNPCKHWD => interleave::<2>(a, b, true),
        sop::PUNPCKHDQ => interleave::<4>(a, b, true),
        sop::PUNPCKHQDQ => [a[1], b[1]],
        sop::PMINUB => map2::<1>(a, b, |x, y| x.min(y)),
        sop::PMAXUB => map2::<1>(a, b, |x, y| x.max(y)),
        sop::PMULUDQ => [
            (a[0] & 0xffff_ffff).wrapping_mul(b[0] & 0xffff_ffff),
            (a[1] & 0xffff_ffff).wrapping_mul(b[1] & 0xffff_ffff),
        ],
        _ => {
            c.ud();
            return Flow::Stop;
        }
    };
    c.xmm[o.dst as usize & 15] = r;
    Flow::Next
}

/// 128-bit moves: MOVDQA/MOVDQU/MOVAPS/MOVUPS/MOVAPD/MOVUPD (`sz2` = 1 aligned).
pub fn mov128(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    if o.dk == kind::MEM {
        let a = c.lin(o);
        if o.sz2 == 1 && a & 15 != 0 {
            c.gp0();
            return Flow::Stop;
        }
        let v = c.xmm[o.src as usize & 15];
        t!(c.wr128(a, v));
    } else {
        let v = t!(src128(c, o));
        c.xmm[o.dst as usize & 15] = v;
    }
    Flow::Next
}

/// MOVD/MOVQ between xmm and r/m (`sz` 4 or 8). `cc` 0: to xmm (zero upper);
/// 1: from xmm to r/m; 2: MOVQ xmm, xmm/m64 (zero upper); 3: MOVQ xmm/m64 store form;
/// 4: MOVSS/MOVSD load merge rules (reg-reg merges low, load zeroes upper); 5: MOVSS/MOVSD store.
pub fn movdq(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let sz = o.sz;
    let m = crate::flags::mask(sz);
    match o.cc {
        0 | 2 => {
            let v = if o.sk == kind::MEM {
                let a = c.lin(o);
                t!(c.rd_sz(a, sz))
            } else if o.cc == 2 {
                c.xmm[o.src as usize & 15][0] & m
            } else {
                c.get(o.src, sz)
            };
            c.xmm[o.dst as usize & 15] = [v, 0];
        }
        1 | 3 | 5 => {
            let v = c.xmm[o.src as usize & 15][0] & m;
            if o.dk == kind::MEM {
                let a = c.lin(o);
                t!(c.wr_sz(a, sz, v));
            } else if o.cc == 1 {
                c.set(o.dst, sz, v);
            } else {
                let d = &mut c.xmm[o.dst as usize & 15];
                d[0] = (d[0] & !m) | v;
                if o.cc == 3 {
                    d[1] = 0;
                }
            }
        }
        _ => {
            if o.sk == kind::MEM {
                let a = c.lin(o);
                let v = t!(c.rd_sz(a, sz));
                c.xmm[o.dst as usize & 15] = [v, 0];
            } else {
                let v = c.xmm[o.src as usize & 15][0] & m;
                let d = &mut c.xmm[o.dst as usize & 15];
                d[0] = (d[0] & !m) | v;
            }
        }
    }
    Flow::Next
}

/// PMOVMSKB (`cc` 0), MOVMSKPS (1), MOVMSKPD (2).
pub fn movmsk(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let v = c.xmm[o.src as usize & 15];
    let b = bytes(v);
    let r = match o.cc {
        0 => b
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &x)| acc | (((x >> 7) as u64) << i)),
        1 => (0..4).fold(0u64, |acc, i| acc | (((b[i * 4 + 3] >> 7) as u64) << i)),
        _ => (0..2).fold(0u64, |acc, i| acc | (((b[i * 8 + 7] >> 7) as u64) << i)),
    };
    c.set(o.dst, o.sz, r);
    Flow::Next
}

/// PSHUFD (`cc` 0), PSHUFLW (1), PSHUFHW (2), SHUFPS (3) with imm8.
pub fn shuffle(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let s = t!(src128(c, o));
    let imm = o.imm as usize;
    let r = match o.cc {
        0 => {
            let l = lanes::<4>(s);
            let mut r = [0u64; 16];
            for (i, x) in r.iter_mut().take(4).enumerate() {
                *x = l[(imm >> (2 * i)) & 3];
            }
            unlanes::<4>(r)
        }
        1 | 2 => {
            let l = lanes::<2>(s);
            let mut r = l;
            let base = if o.cc == 1 { 0 } else { 4 };
            for i in 0..4 {
                r[base + i] = l[base + ((imm >> (2 * i)) & 3)];
            }
            unlanes::<2>(r)
        }
        _ => {
            let d = lanes::<4>(c.xmm[o.dst as usize & 15]);
            let l = lanes::<4>(s);
            let mut r = [0u64; 16];
            r[0] = d[imm & 3];
            r[1] = d[(imm >> 2) & 3];
            r[2] = l[(imm >> 4) & 3];
            r[3] = l[(imm >> 6) & 3];
            unlanes::<4>(r)
        }
    };
    c.xmm[o.dst as usize & 15] = r;
    Flow::Next
}

/// Packed shifts by immediate: `cc` 0 PSRLW,1 PSRLD,2 PSRLQ,3 PSRAW,4 PSRAD,5 PSLLW,6 PSLLD,7 PSLLQ,8 PSRLDQ,9 PSLLDQ.
/// With `sk` = REG/MEM the count comes from an xmm/m128 operand.
pub fn pshift(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let cnt = if o.sk == kind::IMM {
        o.imm & 0xff
    } else {
        t!(src128(c, o))[0]
    };
    let v = c.xmm[o.dst as usize & 15];
    let r = match o.cc {
        8 | 9 => {
            let n = cnt.min(16) as usize;
            let b = bytes(v);
            let mut out = [0u8; 16];
            for i in 0..16 {
                if o.cc == 8 {
                    if i + n < 16 {
                        out[i] = b[i + n];
                    }
                } else if i >= n {
                    out[i] = b[i - n];
                }
            }
            from_bytes(out)
        }
        _ => {
            let (n, right, arith) = match o.cc {
                0 => (2, true, false),
                1 => (4, true, false),
                2 => (8, true, false),
                3 => (2, true, true),
                4 => (4, true, true),
                5 => (2, false, false),
                6 => (4, false, false),
                _ => (8, false, false),
            };
            let bits = 8 * n as u64;
            let f = |x: u64| -> u64 {
                if arith {
                    let s = sext(x, n);
                    (s >> cnt.min(bits - 1)) as u64
                } else if cnt >= bits {
                    0
                } else if right {
                    x >> cnt
                } else {
                    x << cnt
                }
            };
            match n {
                2 => map2::<2>(v, v, |x, _| f(x)),
                4 => map2::<4>(v, v, |x, _| f(x)),
                _ => map2::<8>(v, v, |x, _| f(x)),
            }
        }
    };
    c.xmm[o.dst as usize & 15] = r;
    Flow::Next
}

/// MOVHPS/MOVHPD/MOVLPS/MOVLPD/MOVHLPS/MOVLHPS (`cc` bit0 = high half of xmm, bit1 = store;
/// `cc` 4 MOVHLPS, 5 MOVLHPS).
pub fn movhl(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let d = o.dst as usize & 15;
    let s = o.src as usize & 15;
    match o.cc {
        4 => c.xmm[d][0] = c.xmm[s][1],
        5 => c.xmm[d][1] = c.xmm[s][0],
        cc if cc & 2 != 0 => {
            let v = c.xmm[s][(cc & 1) as usize];
            let a = c.lin(o);
            t!(c.wr::<8>(a, v));
        }
        cc => {
            let a = c.lin(o);
            let v = t!(c.rd::<8>(a));
            c.xmm[d][(cc & 1) as usize] = v;
        }
    }
    Flow::Next
}

/// LDMXCSR (`cc` 0) / STMXCSR (1).
pub fn mxcsr(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let a = c.lin(o);
    if o.cc == 0 {
        let v = t!(c.rd::<4>(a));
        if v & !0xffff != 0 {
            c.gp0();
            return Flow::Stop;
        }
        c.mxcsr = v as u32;
    } else {
        t!(c.wr::<4>(a, c.mxcsr as u64));
    }
    Flow::Next
}

/// PINSRW xmm, r32/m16, imm8 (`cc` 0) / PEXTRW r32, xmm, imm8 (`cc` 1).
pub fn pinsrw_pextrw(c: &mut Cpu, o: &Op) -> Flow {
    t!(check(c));
    let lane = (o.imm & 7) as usize;
    if o.cc == 0 {
        let v = if o.sk == kind::MEM {
            let a = c.lin(o);
            t!(c.rd::<2>(a))
        } else {
            c.get(o.src, 2)
        };
        let mut l = lanes::<2>(c.xmm[o.dst as usize & 15]);
        l[lane] = v & 0xffff;
        c.xmm[o.dst as usize & 15] = unlanes::<2>(l);
    } else {
        let l = lanes::<2>(c.xmm[o.src as usize & 15]);
        c.set(o.dst, o.sz, l[lane]);
    }
    Flow::Next
}
