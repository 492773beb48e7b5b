//! The pre-decoded micro-op form: one [`Op`] per guest instruction, holding
//! a handler specialised (through const generics) for the operation, operand
//! forms and size, plus the operands it needs. Translation calls iced-x86
//! once per instruction; execution never decodes.

use crate::cpu::{Cpu, R};

/// What an op's execution did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flow {
    /// Retired; go on with the next op in the block.
    Next,
    /// Retired; the block ends here (the handler set `rip`).
    End,
    /// Did not retire: `cpu.stop` says why; `rip` stays at this instruction.
    Stop,
}

/// An op handler.
pub type Handler = fn(&mut Cpu, &Op) -> Flow;

/// Operand kinds for handlers with runtime operand forms.
pub mod kind {
    /// None.
    pub const NONE: u8 = 0;
    /// Register.
    pub const REG: u8 = 1;
    /// Memory.
    pub const MEM: u8 = 2;
    /// Immediate.
    pub const IMM: u8 = 3;
}

/// Fusion tags: a register-only flag setter directly followed by the Jcc
/// that ends its block runs as one op (two instructions).
pub mod fusion {
    /// Not fusible.
    pub const NONE: u8 = 0;
    /// A Jcc.
    pub const JCC: u8 = 1;
    /// ALU reg, reg (`cc`-less; the ALU op number is in bits 4..8).
    pub const ALU_RR: u8 = 2;
    /// ALU reg, imm.
    pub const ALU_RI: u8 = 3;
    /// INC reg.
    pub const INC: u8 = 4;
    /// DEC reg.
    pub const DEC: u8 = 5;
}

/// One translated instruction.
#[derive(Clone, Copy)]
pub struct Op {
    /// The handler.
    pub h: Handler,
    /// Guest RIP of the instruction.
    pub rip: u64,
    /// Immediate (sign-extended to 64 bits where the instruction does).
    pub imm: u64,
    /// Displacement (absolute address for RIP-relative operands).
    pub disp: u64,
    /// Branch target / second immediate.
    pub target: u64,
    /// Instruction length.
    pub len: u8,
    /// Operand size in bytes.
    pub sz: u8,
    /// Second size (source size of MOVZX/MOVSX, address size of string ops).
    pub sz2: u8,
    /// Destination register (16..=19 with size 1 = AH..BH).
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Address base register (16 = none).
    pub base: u8,
    /// Address index register (16 = none).
    pub index: u8,
    /// Index scale shift (0..=3).
    pub scale: u8,
    /// Segment index (6 = none).
    pub seg: u8,
    /// 32-bit address size.
    pub a32: bool,
    /// Condition code / sub-operation selector.
    pub cc: u8,
    /// Destination operand kind ([`kind`]).
    pub dk: u8,
    /// Source operand kind ([`kind`]).
    pub sk: u8,
    /// Branch instruction (counts toward retired branches when it ends the block).
    pub br: bool,
    /// REP / REPE (1), REPNE (2) prefix.
    pub rep: u8,
    /// Fusion tag (see `fusion`): what this op can fuse with a following Jcc.
    pub fuse: u8,
}

impl Op {
    /// An op that does nothing yet (filled in by the translator).
    pub fn new(h: Handler, rip: u64, len: u8) -> Self {
        Op {
            h,
            rip,
            imm: 0,
            disp: 0,
            target: 0,
            len,
            sz: 8,
            sz2: 0,
            dst: 0,
            src: 0,
            base: 16,
            index: 16,
            scale: 0,
            seg: 6,
            a32: false,
            cc: 0,
            dk: 0,
            sk: 0,
            br: false,
            rep: 0,
            fuse: 0,
        }
    }

    /// RIP of the next instruction.
    #[inline(always)]
    pub fn next(&self) -> u64 {
        self.rip.wrapping_add(self.len as u64)
    }
}

impl Cpu {
    /// Effective address (offset within the segment) of the op's memory operand.
    #[inline(always)]
    pub fn ea(&self, o: &Op) -> u64 {
        let a = self.gpr[o.base as usize & 31]
            .wrapping_add(self.gpr[o.index as usize & 31] << (o.scale & 3))
            .wrapping_add(o.disp);
        if o.a32 { a as u32 as u64 } else { a }
    }

    /// Linear address of the op's memory operand.
    #[inline(always)]
    pub fn lin(&self, o: &Op) -> u64 {
        self.ea(o).wrapping_add(self.seg_base[o.seg as usize % 7]) & self.lin_mask
    }

    /// Linear address of `seg:off`.
    #[inline(always)]
    pub fn lin_of(&self, seg: usize, off: u64) -> u64 {
        off.wrapping_add(self.seg_base[seg % 7]) & self.lin_mask
    }

    /// Read the source operand (runtime form).
    #[inline]
    pub fn src(&mut self, o: &Op, sz: u8) -> R<u64> {
        match o.sk {
            kind::REG => Ok(self.get(o.src, sz)),
            kind::MEM => {
                let a = self.lin(o);
                self.rd_sz(a, sz)
            }
            _ => Ok(o.imm & crate::flags::mask(sz)),
        }
    }

    /// Read the destination operand (runtime form); returns the value and the linear address if memory.
    #[inline]
    pub fn dst(&mut self, o: &Op, sz: u8) -> R<(u64, u64)> {
        if o.dk == kind::MEM {
            let a = self.lin(o);
            Ok((self.rd_sz(a, sz)?, a))
        } else {
            Ok((self.get(o.dst, sz), 0))
        }
    }

    /// Write the destination operand (memory at `addr` from [`Cpu::dst`]).
    #[inline]
    pub fn put(&mut self, o: &Op, sz: u8, addr: u64, v: u64) -> R<()> {
        if o.dk == kind::MEM {
            self.wr_sz(addr, sz, v)
        } else {
            self.set(o.dst, sz, v);
            Ok(())
        }
    }

    /// Stack pointer width in bytes for the current mode.
    #[inline(always)]
    pub fn stack_sz(&self) -> u8 {
        if self.bitness == 64 {
            8
        } else if self.seg[crate::cpu::SS].db {
            4
        } else {
            2
        }
    }

    /// Push `v` of `sz` bytes.
    #[inline]
    pub fn push(&mut self, v: u64, sz: u8) -> R<()> {
        let ssz = self.stack_sz();
        let sp = self.get(4, ssz).wrapping_sub(sz as u64) & crate::flags::mask(ssz);
        let a = self.lin_of(crate::cpu::SS, sp);
        self.wr_sz(a, sz, v)?;
        self.set(4, ssz, sp);
        Ok(())
    }

    /// Read the top of the stack at `offset` bytes without popping.
    #[inline]
    pub fn peek(&mut self, sz: u8, offset: u64) -> R<u64> {
        let ssz = self.stack_sz();
        let sp = self.get(4, ssz).wrapping_add(offset) & crate::flags::mask(ssz);
        let a = self.lin_of(crate::cpu::SS, sp);
        self.rd_sz(a, sz)
    }

    /// Add to the stack pointer (at its width).
    #[inline]
    pub fn sp_add(&mut self, n: u64) {
        let ssz = self.stack_sz();
        let sp = self.get(4, ssz).wrapping_add(n);
        self.set(4, ssz, sp);
    }
}

/// `try` for handlers: stop the op on error.
#[macro_export]
macro_rules! t {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(_) => return $crate::op::Flow::Stop,
        }
    };
}
