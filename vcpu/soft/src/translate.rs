//! Translation of guest instructions (decoded once by iced-x86) into [`Op`]s.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

use crate::op::{Handler, Op, kind};
use crate::ops::alu::{self, aluop, form};
use crate::ops::{branch, sse, string, sys};

/// How an instruction affects block formation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Ordinary.
    Inner,
    /// The block ends after it (branches, mode changes).
    Last,
    /// It must be the first op of a block (it reads exact retired counts), and ends it.
    First,
}

/// A translated instruction.
pub struct Translated {
    /// The op.
    pub op: Op,
    /// Where it may sit in a block.
    pub place: Place,
}

/// A general register operand: (id, size). AH..BH are ids 16..19.
fn gpr(r: Register) -> Option<(u8, u8)> {
    if r.is_gpr8() {
        let n = r.number() as u8;
        let id = match n {
            0..=3 => n,
            4..=7 => 16 + (n - 4),
            8..=11 => 4 + (n - 8),
            _ => 8 + (n - 12),
        };
        return Some((id, 1));
    }
    if r.is_gpr16() || r.is_gpr32() || r.is_gpr64() {
        return Some((r.number() as u8, r.size() as u8));
    }
    None
}

fn xmm(r: Register) -> Option<u8> {
    r.is_xmm().then(|| r.number() as u8)
}

/// One operand, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opnd {
    Reg(u8, u8),
    Xmm(u8),
    Mem(u8),
    Imm(u64),
    Other,
}

fn operand(i: &Instruction, n: u32) -> Opnd {
    match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            if let Some((id, sz)) = gpr(r) {
                Opnd::Reg(id, sz)
            } else if let Some(x) = xmm(r) {
                Opnd::Xmm(x)
            } else {
                Opnd::Other
            }
        }
        OpKind::Memory => Opnd::Mem(i.memory_size().size() as u8),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Opnd::Imm(i.immediate(n)),
        _ => Opnd::Other,
    }
}

/// Fill the memory-operand fields; false if the addressing form is unsupported (16-bit).
fn mem(o: &mut Op, i: &Instruction, bitness: u32) -> bool {
    let base = i.memory_base();
    let index = i.memory_index();
    let mut a32 = bitness != 64;
    if base == Register::RIP || base == Register::EIP {
        o.base = 16;
        a32 = base == Register::EIP;
    } else if base != Register::None {
        match gpr(base) {
            Some((id, 8)) => o.base = id,
            Some((id, 4)) => {
                o.base = id;
                a32 = true;
            }
            _ => return false,
        }
    }
    if index != Register::None {
        match gpr(index) {
            Some((id, 8)) => o.index = id,
            Some((id, 4)) => {
                o.index = id;
                a32 = true;
            }
            _ => return false,
        }
        o.scale = i.memory_index_scale().trailing_zeros() as u8;
    }
    o.disp = i.memory_displacement64();
    o.a32 = a32;
    o.seg = match i.memory_segment() {
        Register::None => 6,
        r => r.number() as u8,
    };
    true
}

fn ud_op(rip: u64, len: u8) -> Translated {
    Translated {
        op: Op::new(alu::ud, rip, len),
        place: Place::Last,
    }
}

/// Set dst/src kinds from two operands, for runtime-form handlers.
fn two(o: &mut Op, i: &Instruction, bitness: u32) -> bool {
    let (a, b) = (operand(i, 0), operand(i, 1));
    match a {
        Opnd::Reg(id, sz) => {
            o.dk = kind::REG;
            o.dst = id;
            o.sz = sz;
        }
        Opnd::Mem(sz) => {
            o.dk = kind::MEM;
            o.sz = sz;
            if !mem(o, i, bitness) {
                return false;
            }
        }
        _ => return false,
    }
    match b {
        Opnd::Reg(id, _) => {
            o.sk = kind::REG;
            o.src = id;
        }
        Opnd::Mem(_) => {
            o.sk = kind::MEM;
            if !mem(o, i, bitness) {
                return false;
            }
        }
        Opnd::Imm(v) => {
            o.sk = kind::IMM;
            o.imm = v;
        }
        Opnd::Other => {
            if i.op_count() >= 2 {
                return false;
            }
        }
        _ => return false,
    }
    true
}

fn cc_of(i: &Instruction) -> u8 {
    (i.condition_code() as u8).wrapping_sub(1) & 15
}

fn code_name(i: &Instruction) -> String {
    format!("{:?}", i.code())
}

/// Translate one decoded instruction.
pub fn translate(i: &Instruction, bitness: u32) -> Translated {
    let rip = i.ip();
    let len = i.len() as u8;
    if i.is_invalid() || i.code() == Code::INVALID {
        return ud_op(rip, len);
    }
    let mut o = Op::new(alu::ud, rip, len);
    let mut place = Place::Inner;
    use Mnemonic as M;
    let h: Handler = match i.mnemonic() {
        M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
            let op = match i.mnemonic() {
                M::Add => aluop::ADD,
                M::Or => aluop::OR,
                M::Adc => aluop::ADC,
                M::Sbb => aluop::SBB,
                M::And => aluop::AND,
                M::Sub => aluop::SUB,
                M::Xor => aluop::XOR,
                M::Cmp => aluop::CMP,
                _ => aluop::TEST,
            };
            if !two(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            // TEST r/m, reg is encoded with the register second; both forms are symmetric.
            let f = match (o.dk, o.sk) {
                (kind::REG, kind::REG) => form::RR,
                (kind::REG, kind::IMM) => form::RI,
                (kind::REG, kind::MEM) => form::RM,
                (kind::MEM, kind::REG) => form::MR,
                (kind::MEM, kind::IMM) => form::MI,
                _ => return ud_op(rip, len),
            };
            if o.dst < 16 && (f == form::RR || f == form::RI) && (o.sk != kind::REG || o.src < 16) {
                o.fuse = (if f == form::RR {
                    crate::op::fusion::ALU_RR
                } else {
                    crate::op::fusion::ALU_RI
                }) | (op << 4);
            }
            alu::alu_handler(op, f, o.sz)
        }
        M::Mov => {
            let (a, b) = (operand(i, 0), operand(i, 1));
            let ka = i.op_kind(0);
            let kb = i.op_kind(1);
            if ka == OpKind::Register && i.op_register(0).is_cr() {
                o.cc = i.op_register(0).number() as u8;
                if let Opnd::Reg(id, sz) = b {
                    o.src = id;
                    o.sz = sz;
                }
                place = Place::Last;
                sys::mov_to_cr
            } else if kb == OpKind::Register && i.op_register(1).is_cr() {
                o.cc = i.op_register(1).number() as u8;
                if let Opnd::Reg(id, sz) = a {
                    o.dst = id;
                    o.sz = sz;
                }
                sys::mov_from_cr
            } else if ka == OpKind::Register && i.op_register(0).is_dr() {
                o.cc = i.op_register(0).number() as u8;
                o.sk = kind::REG;
                if let Opnd::Reg(id, sz) = b {
                    o.src = id;
                    o.sz = sz;
                }
                sys::mov_dr
            } else if kb == OpKind::Register && i.op_register(1).is_dr() {
                o.cc = i.op_register(1).number() as u8;
                o.sk = kind::NONE;
                if let Opnd::Reg(id, sz) = a {
                    o.dst = id;
                    o.sz = sz;
                }
                sys::mov_dr
            } else if ka == OpKind::Register && i.op_register(0).is_segment_register() {
                o.cc = i.op_register(0).number() as u8;
                match b {
                    Opnd::Reg(id, _) => {
                        o.sk = kind::REG;
                        o.src = id;
                    }
                    Opnd::Mem(_) => {
                        o.sk = kind::MEM;
                        if !mem(&mut o, i, bitness) {
                            return ud_op(rip, len);
                        }
                    }
                    _ => return ud_op(rip, len),
                }
                place = Place::Last;
                sys::mov_to_seg
            } else if kb == OpKind::Register && i.op_register(1).is_segment_register() {
                o.cc = i.op_register(1).number() as u8;
                match a {
                    Opnd::Reg(id, sz) => {
                        o.dk = kind::REG;
                        o.dst = id;
                        o.sz = sz;
                    }
                    Opnd::Mem(_) => {
                        o.dk = kind::MEM;
                        if !mem(&mut o, i, bitness) {
                            return ud_op(rip, len);
                        }
                    }
                    _ => return ud_op(rip, len),
                }
                sys::mov_from_seg
            } else {
                // moffs forms come through as Memory operands too.
                if !two(&mut o, i, bitness) {
                    return ud_op(rip, len);
                }
                let f = match (o.dk, o.sk) {
                    (kind::REG, kind::REG) => form::RR,
                    (kind::REG, kind::IMM) => form::RI,
                    (kind::REG, kind::MEM) => form::RM,
                    (kind::MEM, kind::REG) => form::MR,
                    (kind::MEM, kind::IMM) => form::MI,
                    _ => return ud_op(rip, len),
                };
                alu::mov_handler(f, o.sz)
            }
        }
        M::Movzx | M::Movsx | M::Movsxd => {
            if !two(&mut o, i, bitness) || o.dk != kind::REG {
                return ud_op(rip, len);
            }
            o.sz2 = match operand(i, 1) {
                Opnd::Reg(_, s) | Opnd::Mem(s) => s,
                _ => return ud_op(rip, len),
            };
            o.cc = (i.mnemonic() != M::Movzx) as u8;
            alu::movx
        }
        M::Lea => {
            match operand(i, 0) {
                Opnd::Reg(id, sz) => {
                    o.dst = id;
                    o.sz = sz;
                }
                _ => return ud_op(rip, len),
            }
            if !mem(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            o.seg = 6;
            alu::lea
        }
        M::Inc | M::Dec | M::Neg | M::Not => {
            match operand(i, 0) {
                Opnd::Reg(id, sz) => {
                    o.dk = kind::REG;
                    o.dst = id;
                    o.sz = sz;
                }
                Opnd::Mem(sz) => {
                    o.dk = kind::MEM;
                    o.sz = sz;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            o.cc = match i.mnemonic() {
                M::Inc => 0,
                M::Dec => 1,
                M::Neg => 2,
                _ => 3,
            };
            if o.dk == kind::REG && o.cc <= 1 && o.dst < 16 {
                o.fuse = if o.cc == 1 {
                    crate::op::fusion::DEC
                } else {
                    crate::op::fusion::INC
                };
                alu::incdec_handler(o.cc == 1, o.sz)
            } else {
                alu::unary
            }
        }
        M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => {
            if !two(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            if o.sk == kind::REG {
                o.sk = kind::NONE; // CL
            }
            if i.op_count() == 1 {
                o.sk = kind::IMM;
                o.imm = 1;
            }
            o.cc = match i.mnemonic() {
                M::Rol => 0,
                M::Ror => 1,
                M::Rcl => 2,
                M::Rcr => 3,
                M::Shl => 4,
                M::Shr => 5,
                M::Sal => 6,
                _ => 7,
            };
            let bits = o.sz as u64 * 8;
            let k = match o.cc {
                4 | 6 => Some(0),
                5 => Some(1),
                7 => Some(2),
                _ => None,
            };
            match k {
                Some(k)
                    if o.sk == kind::IMM
                        && (o.imm & if o.sz == 8 { 63 } else { 31 }) > 0
                        && (o.imm & if o.sz == 8 { 63 } else { 31 }) < bits =>
                {
                    o.imm &= if o.sz == 8 { 63 } else { 31 };
                    alu::shift_imm_handler(k, o.sz)
                }
                _ => alu::shift,
            }
        }
        M::Shld | M::Shrd => {
            if !two(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            match operand(i, 2) {
                Opnd::Imm(v) => {
                    o.sk = kind::IMM;
                    o.imm = v;
                }
                _ => o.sk = kind::NONE,
            }
            o.cc = (i.mnemonic() == M::Shrd) as u8;
            alu::shxd
        }
        M::Mul | M::Div | M::Idiv => {
            match operand(i, 0) {
                Opnd::Reg(id, sz) => {
                    o.sk = kind::REG;
                    o.src = id;
                    o.sz = sz;
                }
                Opnd::Mem(sz) => {
                    o.sk = kind::MEM;
                    o.sz = sz;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            match i.mnemonic() {
                M::Mul => {
                    o.cc = 0;
                    alu::mul1
                }
                M::Div => {
                    o.cc = 0;
                    alu::div
                }
                _ => {
                    o.cc = 1;
                    alu::div
                }
            }
        }
        M::Imul => {
            if i.op_count() == 1 {
                match operand(i, 0) {
                    Opnd::Reg(id, sz) => {
                        o.sk = kind::REG;
                        o.src = id;
                        o.sz = sz;
                    }
                    Opnd::Mem(sz) => {
                        o.sk = kind::MEM;
                        o.sz = sz;
                        if !mem(&mut o, i, bitness) {
                            return ud_op(rip, len);
                        }
                    }
                    _ => return ud_op(rip, len),
                }
                o.cc = 1;
                alu::mul1
            } else {
                if !two(&mut o, i, bitness) || o.dk != kind::REG {
                    return ud_op(rip, len);
                }
                if let Opnd::Imm(v) = operand(i, 2) {
                    o.imm = v;
                    o.cc = 1;
                }
                alu::imul2
            }
        }
        M::Bt | M::Bts | M::Btr | M::Btc => {
            if !two(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            o.cc = match i.mnemonic() {
                M::Bt => 0,
                M::Bts => 1,
                M::Btr => 2,
                _ => 3,
            };
            alu::bt
        }
        M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => {
            if !two(&mut o, i, bitness) || o.dk != kind::REG {
                return ud_op(rip, len);
            }
            o.cc = match i.mnemonic() {
                M::Bsf => 0,
                M::Bsr => 1,
                M::Tzcnt => 2,
                M::Lzcnt => 3,
                _ => 4,
            };
            alu::bitscan
        }
        M::Bswap => match operand(i, 0) {
            Opnd::Reg(id, sz) => {
                o.dst = id;
                o.sz = sz;
                alu::bswap
            }
            _ => return ud_op(rip, len),
        },
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => {
            if !two(&mut o, i, bitness) || o.dk != kind::REG {
                return ud_op(rip, len);
            }
            o.cc = cc_of(i);
            alu::cmov
        }
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => {
            match operand(i, 0) {
                Opnd::Reg(id, _) => {
                    o.dk = kind::REG;
                    o.dst = id;
                }
                Opnd::Mem(_) => {
                    o.dk = kind::MEM;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            o.sz = 1;
            o.cc = cc_of(i);
            alu::setcc
        }
        M::Xchg | M::Xadd | M::Cmpxchg => {
            // Normalise to (r/m, reg).
            let (a, b) = (operand(i, 0), operand(i, 1));
            let (rm, reg) = match (a, b) {
                (Opnd::Mem(_), Opnd::Reg(..)) => (a, b),
                (Opnd::Reg(..), Opnd::Mem(_)) => (b, a),
                (Opnd::Reg(..), Opnd::Reg(..)) => (a, b),
                _ => return ud_op(rip, len),
            };
            match rm {
                Opnd::Reg(id, sz) => {
                    o.dk = kind::REG;
                    o.dst = id;
                    o.sz = sz;
                }
                Opnd::Mem(sz) => {
                    o.dk = kind::MEM;
                    o.sz = sz;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            if let Opnd::Reg(id, _) = reg {
                o.src = id;
            }
            match i.mnemonic() {
                M::Xchg => alu::xchg,
                M::Xadd => alu::xadd,
                _ => alu::cmpxchg,
            }
        }
        M::Cmpxchg8b | M::Cmpxchg16b => {
            if !mem(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            o.sz = if i.mnemonic() == M::Cmpxchg16b { 8 } else { 4 };
            alu::cmpxchg_wide
        }
        M::Cbw | M::Cwde | M::Cdqe | M::Cwd | M::Cdq | M::Cqo => {
            o.sz = match i.mnemonic() {
                M::Cbw | M::Cwd => 2,
                M::Cwde | M::Cdq => 4,
                _ => 8,
            };
            o.cc = matches!(i.mnemonic(), M::Cwd | M::Cdq | M::Cqo) as u8;
            alu::convert
        }
        M::Clc | M::Stc | M::Cmc | M::Cld | M::Std | M::Lahf | M::Sahf => {
            o.cc = match i.mnemonic() {
                M::Clc => 0,
                M::Stc => 1,
                M::Cmc => 2,
                M::Cld => 3,
                M::Std => 4,
                M::Lahf => 5,
                _ => 6,
            };
            alu::flagop
        }
        M::Nop
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Endbr64
        | M::Endbr32
        | M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Clflush
        | M::Clflushopt => alu::nop,
        // ---- branches ----
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => {
            o.cc = cc_of(i);
            o.target = i.near_branch_target();
            o.br = true;
            place = Place::Last;
            o.fuse = crate::op::fusion::JCC;
            branch::jcc_handler(o.cc)
        }
        M::Jmp | M::Call => {
            o.br = true;
            place = Place::Last;
            let call = i.mnemonic() == M::Call;
            match i.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    o.target = i.near_branch_target();
                    o.sz = (-i.stack_pointer_increment()).clamp(2, 8) as u8;
                    if call { branch::call } else { branch::jmp }
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    o.imm = i.far_branch_selector() as u64;
                    o.target = if i.op_kind(0) == OpKind::FarBranch32 {
                        i.far_branch32() as u64
                    } else {
                        i.far_branch16() as u64
                    };
                    o.sz = if i.op_kind(0) == OpKind::FarBranch32 {
                        4
                    } else {
                        2
                    };
                    o.cc = call as u8;
                    sys::far_jmp_call
                }
                _ => match operand(i, 0) {
                    Opnd::Reg(id, sz) => {
                        o.sk = kind::REG;
                        o.src = id;
                        o.sz = sz;
                        if call {
                            branch::call_ind
                        } else {
                            branch::jmp_ind
                        }
                    }
                    Opnd::Mem(sz) => {
                        o.sk = kind::MEM;
                        if !mem(&mut o, i, bitness) {
                            return ud_op(rip, len);
                        }
                        let far = matches!(
                            i.memory_size(),
                            iced_x86::MemorySize::SegPtr16
                                | iced_x86::MemorySize::SegPtr32
                                | iced_x86::MemorySize::SegPtr64
                        );
                        if far {
                            o.sz = sz - 2;
                            o.cc = call as u8;
                            sys::far_jmp_call
                        } else {
                            o.sz = sz;
                            if call {
                                branch::call_ind
                            } else {
                                branch::jmp_ind
                            }
                        }
                    }
                    _ => return ud_op(rip, len),
                },
            }
        }
        M::Ret => {
            o.br = true;
            place = Place::Last;
            let name = code_name(i);
            o.sz = if name.starts_with("Retnq") {
                8
            } else if name.starts_with("Retnd") {
                4
            } else {
                2
            };
            if let Opnd::Imm(v) = operand(i, 0) {
                o.imm = v & 0xffff;
            }
            branch::ret
        }
        M::Retf => {
            o.br = true;
            place = Place::Last;
            let name = code_name(i);
            o.sz = if name.starts_with("Retfq") {
                8
            } else if name.starts_with("Retfd") {
                4
            } else {
                2
            };
            if let Opnd::Imm(v) = operand(i, 0) {
                o.imm = v & 0xffff;
            }
            sys::far_ret
        }
        M::Loop | M::Loope | M::Loopne | M::Jrcxz | M::Jecxz | M::Jcxz => {
            o.br = true;
            place = Place::Last;
            o.target = i.near_branch_target();
            o.cc = match i.mnemonic() {
                M::Loop => 0,
                M::Loope => 1,
                M::Loopne => 2,
                _ => 3,
            };
            let name = code_name(i);
            o.sz2 = match i.mnemonic() {
                M::Jrcxz => 8,
                M::Jecxz => 4,
                M::Jcxz => 2,
                _ if name.ends_with("_RCX") => 8,
                _ if name.ends_with("_ECX") => 4,
                _ => 2,
            };
            branch::loop_
        }
        // ---- stack ----
        M::Push | M::Pop => {
            let push = i.mnemonic() == M::Push;
            o.sz = i.stack_pointer_increment().unsigned_abs().clamp(2, 8) as u8;
            match operand(i, 0) {
                Opnd::Reg(id, _) => {
                    o.sk = kind::REG;
                    o.src = id;
                    o.dk = kind::REG;
                    o.dst = id;
                    if o.sz == 8 && bitness == 64 {
                        if push {
                            branch::push_r64
                        } else {
                            branch::pop_r64
                        }
                    } else if push {
                        branch::push
                    } else {
                        branch::pop
                    }
                }
                Opnd::Mem(_) => {
                    o.sk = kind::MEM;
                    o.dk = kind::MEM;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                    if push { branch::push } else { branch::pop }
                }
                Opnd::Imm(v) if push => {
                    o.sk = kind::IMM;
                    o.imm = v;
                    branch::push
                }
                _ => {
                    let r = i.op_register(0);
                    if r.is_segment_register() {
                        o.cc = r.number() as u8;
                        if push {
                            sys::push_seg
                        } else {
                            place = Place::Last;
                            sys::pop_seg
                        }
                    } else {
                        return ud_op(rip, len);
                    }
                }
            }
        }
        M::Pushf | M::Pushfd | M::Pushfq | M::Popf | M::Popfd | M::Popfq => {
            o.sz = match i.mnemonic() {
                M::Pushf | M::Popf => 2,
                M::Pushfd | M::Popfd => 4,
                _ => 8,
            };
            if matches!(i.mnemonic(), M::Pushf | M::Pushfd | M::Pushfq) {
                branch::pushf
            } else {
                place = Place::Last;
                branch::popf
            }
        }
        M::Enter => {
            o.sz = i.stack_pointer_increment().unsigned_abs().min(8) as u8;
            o.sz = if bitness == 64 { 8 } else { 4 };
            if i.code() == Code::Enterw_imm16_imm8 {
                o.sz = 2;
            }
            o.imm = i.immediate(0) & 0xffff;
            o.target = i.immediate(1) & 0xff;
            branch::enter
        }
        M::Leave => {
            o.sz = if bitness == 64 { 8 } else { 4 };
            if i.code() == Code::Leavew {
                o.sz = 2;
            }
            branch::leave
        }
        // ---- strings ----
        M::Movsb
        | M::Movsw
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsd
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq
        | M::Insb
        | M::Insw
        | M::Insd
        | M::Outsb
        | M::Outsw
        | M::Outsd => string_op(&mut o, i),
        M::Movsd if i.code() == Code::Movsd_m32_m32 => string_op(&mut o, i),
        // ---- system ----
        M::In | M::Out => {
            let (a, b) = (operand(i, 0), operand(i, 1));
            let (acc, port) = if i.mnemonic() == M::In {
                (a, b)
            } else {
                (b, a)
            };
            if let Opnd::Reg(_, sz) = acc {
                o.sz = sz;
            }
            if let Opnd::Imm(v) = port {
                o.sk = kind::IMM;
                o.imm = v & 0xff;
            }
            if i.mnemonic() == M::In {
                sys::in_
            } else {
                sys::out
            }
        }
        M::Cpuid => sys::cpuid,
        M::Rdtsc | M::Rdtscp => {
            o.cc = (i.mnemonic() == M::Rdtscp) as u8;
            place = Place::First;
            sys::rdtsc
        }
        M::Rdrand | M::Rdseed => match operand(i, 0) {
            Opnd::Reg(id, sz) => {
                o.dst = id;
                o.sz = sz;
                o.cc = (i.mnemonic() == M::Rdseed) as u8;
                sys::rdrand
            }
            _ => return ud_op(rip, len),
        },
        M::Rdmsr | M::Wrmsr => {
            o.cc = (i.mnemonic() == M::Wrmsr) as u8;
            place = Place::First;
            sys::msr
        }
        M::Rdpmc => {
            place = Place::First;
            crate::exec::rdpmc
        }
        M::Hlt => {
            place = Place::Last;
            sys::hlt
        }
        M::Lgdt | M::Lidt | M::Sgdt | M::Sidt => {
            if !mem(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            o.sz = if bitness == 64 { 8 } else { 4 };
            o.cc = match i.mnemonic() {
                M::Lgdt => 0,
                M::Lidt => 1,
                M::Sgdt => 2,
                _ => 3,
            };
            sys::desc_table
        }
        M::Ltr | M::Lldt | M::Str | M::Sldt | M::Smsw => {
            match operand(i, 0) {
                Opnd::Reg(id, sz) => {
                    o.sk = kind::REG;
                    o.src = id;
                    o.dk = kind::REG;
                    o.dst = id;
                    o.sz = sz;
                }
                Opnd::Mem(_) => {
                    o.sk = kind::MEM;
                    o.dk = kind::MEM;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            o.cc = match i.mnemonic() {
                M::Ltr => 0,
                M::Lldt => 1,
                M::Str => 2,
                M::Sldt => 3,
                _ => 4,
            };
            if o.cc == 4 { sys::smsw } else { sys::task_reg }
        }
        M::Cli | M::Sti => {
            o.cc = (i.mnemonic() == M::Sti) as u8;
            if o.cc == 1 {
                place = Place::Last;
            }
            sys::cli_sti
        }
        M::Int | M::Int3 | M::Into | M::Int1 => {
            o.br = true;
            place = Place::Last;
            o.cc = match i.mnemonic() {
                M::Int => {
                    o.imm = i.immediate(0) & 0xff;
                    0
                }
                M::Int3 => 1,
                M::Into => {
                    if bitness == 64 {
                        return ud_op(rip, len);
                    }
                    2
                }
                _ => 3,
            };
            sys::int
        }
        M::Iret | M::Iretd | M::Iretq => {
            o.br = true;
            place = Place::Last;
            o.sz = match i.mnemonic() {
                M::Iret => 2,
                M::Iretd => 4,
                _ => 8,
            };
            sys::iret
        }
        M::Syscall => {
            o.br = true;
            place = Place::Last;
            sys::syscall
        }
        M::Sysret | M::Sysretq => {
            o.br = true;
            place = Place::Last;
            o.sz = if i.mnemonic() == M::Sysretq { 8 } else { 4 };
            sys::sysret
        }
        M::Sysexit | M::Sysexitq => {
            o.br = true;
            place = Place::Last;
            o.sz = if i.mnemonic() == M::Sysexitq { 8 } else { 4 };
            sys::sysexit
        }
        M::Swapgs => sys::swapgs,
        M::Rdfsbase | M::Rdgsbase | M::Wrfsbase | M::Wrgsbase => match operand(i, 0) {
            Opnd::Reg(id, sz) => {
                o.dst = id;
                o.sz = sz;
                o.cc = match i.mnemonic() {
                    M::Rdfsbase => 0,
                    M::Rdgsbase => 1,
                    M::Wrfsbase => 2,
                    _ => 3,
                };
                sys::fsgsbase
            }
            _ => return ud_op(rip, len),
        },
        M::Invlpg => {
            place = Place::Last;
            sys::invlpg
        }
        M::Wbinvd | M::Invd | M::Clts => {
            o.cc = if i.mnemonic() == M::Clts { 2 } else { 0 };
            sys::cache_ctl
        }
        M::Xgetbv | M::Xsetbv => {
            o.cc = (i.mnemonic() == M::Xsetbv) as u8;
            sys::xcr
        }
        M::Ud2 | M::Ud0 | M::Ud1 => sys::ud2,
        // ---- SSE ----
        M::Movaps | M::Movups | M::Movapd | M::Movupd | M::Movdqa | M::Movdqu => {
            let aligned = matches!(i.mnemonic(), M::Movaps | M::Movapd | M::Movdqa);
            o.sz2 = aligned as u8;
            match (operand(i, 0), operand(i, 1)) {
                (Opnd::Xmm(d), Opnd::Xmm(s)) => {
                    o.dst = d;
                    o.src = s;
                    o.sk = kind::REG;
                }
                (Opnd::Xmm(d), Opnd::Mem(_)) => {
                    o.dst = d;
                    o.sk = kind::MEM;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                (Opnd::Mem(_), Opnd::Xmm(s)) => {
                    o.src = s;
                    o.dk = kind::MEM;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            sse::mov128
        }
        M::Movd | M::Movq | M::Movss | M::Movsd => {
            let scalar = matches!(i.mnemonic(), M::Movss | M::Movsd);
            o.sz = match i.mnemonic() {
                M::Movd | M::Movss => 4,
                _ => 8,
            };
            match (operand(i, 0), operand(i, 1)) {
                (Opnd::Xmm(d), Opnd::Xmm(s)) => {
                    o.dst = d;
                    o.src = s;
                    o.sk = kind::REG;
                    o.cc = if scalar { 4 } else { 2 };
                }
                (Opnd::Xmm(d), Opnd::Mem(_)) => {
                    o.dst = d;
                    o.sk = kind::MEM;
                    o.cc = if scalar { 4 } else { 0 };
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                (Opnd::Xmm(d), Opnd::Reg(s, _)) if !scalar => {
                    o.dst = d;
                    o.src = s;
                    o.sk = kind::REG;
                    o.cc = 0;
                }
                (Opnd::Mem(_), Opnd::Xmm(s)) => {
                    o.src = s;
                    o.dk = kind::MEM;
                    o.cc = if scalar { 5 } else { 1 };
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                (Opnd::Reg(d, _), Opnd::Xmm(s)) if !scalar => {
                    o.dst = d;
                    o.src = s;
                    o.dk = kind::REG;
                    o.cc = 1;
                }
                _ => return ud_op(rip, len),
            }
            // One handler for every form: `o.cc` and the operand kinds say which.
            sse::movdq
        }
        M::Pxor
        | M::Xorps
        | M::Xorpd
        | M::Por
        | M::Orps
        | M::Orpd
        | M::Pand
        | M::Andps
        | M::Andpd
        | M::Pandn
        | M::Andnps
        | M::Andnpd
        | M::Pcmpeqb
        | M::Pcmpeqw
        | M::Pcmpeqd
        | M::Pcmpgtb
        | M::Pcmpgtw
        | M::Pcmpgtd
        | M::Paddb
        | M::Paddw
        | M::Paddd
        | M::Paddq
        | M::Psubb
        | M::Psubw
        | M::Psubd
        | M::Psubq
        | M::Punpcklbw
        | M::Punpcklwd
        | M::Punpckldq
        | M::Punpcklqdq
        | M::Punpckhbw
        | M::Punpckhwd
        | M::Punpckhdq
        | M::Punpckhqdq
        | M::Pminub
        | M::Pmaxub
        | M::Pmuludq => {
            o.cc = match i.mnemonic() {
                M::Pxor | M::Xorps | M::Xorpd => sse::sop::XOR,
                M::Por | M::Orps | M::Orpd => sse::sop::OR,
                M::Pand | M::Andps | M::Andpd => sse::sop::AND,
                M::Pandn | M::Andnps | M::Andnpd => sse::sop::ANDN,
                M::Pcmpeqb => sse::sop::PCMPEQB,
                M::Pcmpeqw => sse::sop::PCMPEQW,
                M::Pcmpeqd => sse::sop::PCMPEQD,
                M::Pcmpgtb => sse::sop::PCMPGTB,
                M::Pcmpgtw => sse::sop::PCMPGTW,
                M::Pcmpgtd => sse::sop::PCMPGTD,
                M::Paddb => sse::sop::PADDB,
                M::Paddw => sse::sop::PADDW,
                M::Paddd => sse::sop::PADDD,
                M::Paddq => sse::sop::PADDQ,
                M::Psubb => sse::sop::PSUBB,
                M::Psubw => sse::sop::PSUBW,
                M::Psubd => sse::sop::PSUBD,
                M::Psubq => sse::sop::PSUBQ,
                M::Punpcklbw => sse::sop::PUNPCKLBW,
                M::Punpcklwd => sse::sop::PUNPCKLWD,
                M::Punpckldq => sse::sop::PUNPCKLDQ,
                M::Punpcklqdq => sse::sop::PUNPCKLQDQ,
                M::Punpckhbw => sse::sop::PUNPCKHBW,
                M::Punpckhwd => sse::sop::PUNPCKHWD,
                M::Punpckhdq => sse::sop::PUNPCKHDQ,
                M::Punpckhqdq => sse::sop::PUNPCKHQDQ,
                M::Pminub => sse::sop::PMINUB,
                M::Pmaxub => sse::sop::PMAXUB,
                _ => sse::sop::PMULUDQ,
            };
            if !xmm_src(&mut o, i, bitness, true) {
                return ud_op(rip, len);
            }
            sse::binop
        }
        M::Pmovmskb | M::Movmskps | M::Movmskpd => match (operand(i, 0), operand(i, 1)) {
            (Opnd::Reg(d, sz), Opnd::Xmm(s)) => {
                o.dst = d;
                o.sz = sz;
                o.src = s;
                o.cc = match i.mnemonic() {
                    M::Pmovmskb => 0,
                    M::Movmskps => 1,
                    _ => 2,
                };
                sse::movmsk
            }
            _ => return ud_op(rip, len),
        },
        M::Pshufd | M::Pshuflw | M::Pshufhw | M::Shufps => {
            if !xmm_src(&mut o, i, bitness, true) {
                return ud_op(rip, len);
            }
            o.imm = i.immediate(2) & 0xff;
            o.cc = match i.mnemonic() {
                M::Pshufd => 0,
                M::Pshuflw => 1,
                M::Pshufhw => 2,
                _ => 3,
            };
            sse::shuffle
        }
        M::Psrlw
        | M::Psrld
        | M::Psrlq
        | M::Psraw
        | M::Psrad
        | M::Psllw
        | M::Pslld
        | M::Psllq
        | M::Psrldq
        | M::Pslldq => {
            o.cc = match i.mnemonic() {
                M::Psrlw => 0,
                M::Psrld => 1,
                M::Psrlq => 2,
                M::Psraw => 3,
                M::Psrad => 4,
                M::Psllw => 5,
                M::Pslld => 6,
                M::Psllq => 7,
                M::Psrldq => 8,
                _ => 9,
            };
            match operand(i, 1) {
                Opnd::Imm(v) => {
                    if let Opnd::Xmm(d) = operand(i, 0) {
                        o.dst = d;
                    } else {
                        return ud_op(rip, len);
                    }
                    o.sk = kind::IMM;
                    o.imm = v;
                }
                _ => {
                    if !xmm_src(&mut o, i, bitness, true) {
                        return ud_op(rip, len);
                    }
                }
            }
            sse::pshift
        }
        M::Movhps | M::Movhpd | M::Movlps | M::Movlpd | M::Movhlps | M::Movlhps => {
            let high = matches!(i.mnemonic(), M::Movhps | M::Movhpd);
            match (operand(i, 0), operand(i, 1)) {
                (Opnd::Xmm(d), Opnd::Xmm(s)) => {
                    o.dst = d;
                    o.src = s;
                    o.cc = if i.mnemonic() == M::Movhlps { 4 } else { 5 };
                }
                (Opnd::Xmm(d), Opnd::Mem(_)) => {
                    o.dst = d;
                    o.cc = high as u8;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                (Opnd::Mem(_), Opnd::Xmm(s)) => {
                    o.src = s;
                    o.cc = 2 | high as u8;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            sse::movhl
        }
        M::Pinsrw => {
            match operand(i, 0) {
                Opnd::Xmm(d) => o.dst = d,
                _ => return ud_op(rip, len),
            }
            match operand(i, 1) {
                Opnd::Reg(s, _) => {
                    o.sk = kind::REG;
                    o.src = s;
                }
                Opnd::Mem(_) => {
                    o.sk = kind::MEM;
                    if !mem(&mut o, i, bitness) {
                        return ud_op(rip, len);
                    }
                }
                _ => return ud_op(rip, len),
            }
            o.imm = i.immediate(2);
            o.cc = 0;
            sse::pinsrw_pextrw
        }
        M::Pextrw => match (operand(i, 0), operand(i, 1)) {
            (Opnd::Reg(d, sz), Opnd::Xmm(s)) => {
                o.dst = d;
                o.sz = sz;
                o.src = s;
                o.imm = i.immediate(2);
                o.cc = 1;
                sse::pinsrw_pextrw
            }
            _ => return ud_op(rip, len),
        },
        M::Ldmxcsr | M::Stmxcsr => {
            if !mem(&mut o, i, bitness) {
                return ud_op(rip, len);
            }
            o.cc = (i.mnemonic() == M::Stmxcsr) as u8;
            sse::mxcsr
        }
        _ => return ud_op(rip, len),
    };
    o.h = h;
    if i.flow_control() != FlowControl::Next && place == Place::Inner {
        place = Place::Last;
    }
    Translated { op: o, place }
}

/// xmm destination, xmm/m128 source.
fn xmm_src(o: &mut Op, i: &Instruction, bitness: u32, aligned_mem: bool) -> bool {
    match operand(i, 0) {
        Opnd::Xmm(d) => o.dst = d,
        _ => return false,
    }
    match operand(i, 1) {
        Opnd::Xmm(s) => {
            o.src = s;
            o.sk = kind::REG;
        }
        Opnd::Mem(_) => {
            o.sk = kind::MEM;
            o.sz2 = aligned_mem as u8;
            if !mem(o, i, bitness) {
                return false;
            }
        }
        _ => return false,
    }
    true
}

fn string_op(o: &mut Op, i: &Instruction) -> Handler {
    use Mnemonic as M;
    let m = i.mnemonic();
    o.cc = match m {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq => string::sop::MOVS,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => string::sop::STOS,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => string::sop::LODS,
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => string::sop::CMPS,
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => string::sop::SCAS,
        M::Insb | M::Insw | M::Insd => string::sop::INS,
        _ => string::sop::OUTS,
    };
    o.sz = match m {
        M::Movsb | M::Stosb | M::Lodsb | M::Cmpsb | M::Scasb | M::Insb | M::Outsb => 1,
        M::Movsw | M::Stosw | M::Lodsw | M::Cmpsw | M::Scasw | M::Insw | M::Outsw => 2,
        M::Movsq | M::Stosq | M::Lodsq | M::Cmpsq | M::Scasq => 8,
        _ => 4,
    };
    o.sz2 = 8;
    o.seg = 3;
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI => o.sz2 = 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI => o.sz2 = 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI | OpKind::MemorySegRDI => o.sz2 = 8,
            _ => {}
        }
        if matches!(
            i.op_kind(n),
            OpKind::MemorySegSI | OpKind::MemorySegESI | OpKind::MemorySegRSI
        ) {
            o.seg = i.memory_segment().number() as u8;
        }
    }
    let compare = o.cc == string::sop::CMPS || o.cc == string::sop::SCAS;
    o.rep = if i.has_repne_prefix() {
        if compare { 2 } else { 1 }
    } else if i.has_rep_prefix() {
        1
    } else {
        0
    };
    if o.cc == string::sop::INS || o.cc == string::sop::OUTS {
        o.sk = kind::NONE;
    }
    string::string
}

/// Decode and translate a block starting at `rip` from `bytes` (which start at
/// `rip`). Stops at a block-ending instruction, at `max` instructions, or when
/// the next instruction would extend past `limit` bytes.
pub fn translate_block(
    bytes: &[u8],
    rip: u64,
    bitness: u32,
    limit: usize,
    max: usize,
    out: &mut Vec<Op>,
) {
    let mut d = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut consumed = 0usize;
    while d.can_decode() && out.len() < max {
        d.decode_out(&mut ins);
        let l = ins.len();
        if ins.is_invalid() && d.last_error() == iced_x86::DecoderError::NoMoreBytes {
            break;
        }
        if consumed + l > limit && !out.is_empty() {
            break;
        }
        let t = translate(&ins, bitness);
        if t.place == Place::First && !out.is_empty() {
            break;
        }
        out.push(t.op);
        consumed += l;
        if t.place != Place::Inner || consumed >= limit {
            break;
        }
    }
}
