//! Architectural state of one soft vCPU and the plumbing every op uses:
//! register access, lazy flags, why an op stopped.

use vcpu::{DescriptorTable, Segment};

use crate::flags::{self, Lazy};
use crate::mem::{Ram, Tlb};

/// Segment register indices (x86 encoding order).
pub const ES: usize = 0;
/// CS.
pub const CS: usize = 1;
/// SS.
pub const SS: usize = 2;
/// DS.
pub const DS: usize = 3;
/// FS.
pub const FS: usize = 4;
/// GS.
pub const GS: usize = 5;
/// "No segment": base always 0.
pub const NOSEG: usize = 6;

/// The always-zero register slot used when an address has no base or index.
pub const ZERO_REG: u8 = 16;

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1;
    /// Monitor coprocessor.
    pub const MP: u64 = 2;
    /// x87 emulation.
    pub const EM: u64 = 4;
    /// Task switched.
    pub const TS: u64 = 8;
    /// Extension type (always 1).
    pub const ET: u64 = 0x10;
    /// Numeric error.
    pub const NE: u64 = 0x20;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    /// Page size extension.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// OS supports FXSAVE/SSE.
    pub const OSFXSR: u64 = 1 << 9;
    /// OS handles SIMD exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// RDFSBASE etc.
    pub const FSGSBASE: u64 = 1 << 16;
    /// XSAVE enabled.
    pub const OSXSAVE: u64 = 1 << 18;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// Why an op stopped without retiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// No stop recorded.
    None,
    /// Deliver this exception (vector, error code).
    Exception(u8, Option<u32>),
    /// Leave `run` with this exit; the instruction is re-executed with the completion.
    Exit(crate::exits::PendingExit),
    /// Stop between iterations of a REP string instruction (kick, single-step).
    Yield,
    /// The interpreter cannot go on.
    Internal(String),
}

/// Marker error: the details are in [`Cpu::stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Result of something that can stop the current instruction.
pub type R<T> = Result<T, Stopped>;

/// The MSRs the soft vCPU keeps itself.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub fmask: u64,
    pub kernel_gs_base: u64,
    pub tsc_aux: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub misc_enable: u64,
    pub tsc_offset: u64,
    pub xcr0: u64,
}

/// One vCPU's architectural state plus its memory fast path.
pub struct Cpu {
    /// RAX..R15 in encoding order; slots 16..31 are always zero ("no register" in addresses).
    pub gpr: [u64; 32],
    /// Instruction pointer.
    pub rip: u64,
    /// RFLAGS; the arithmetic bits are stale while `lf.op != NONE`.
    pub rf: u64,
    /// Pending flag computation.
    pub lf: Lazy,
    /// XMM0..15 as two little-endian u64 halves.
    pub xmm: [[u64; 2]; 16],
    /// MXCSR.
    pub mxcsr: u32,
    /// x87 control/status/tag words kept for get/set round trips.
    pub fpu_misc: vcpu::FpuState,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    /// Effective base per segment index (0 for ES/CS/SS/DS in 64-bit mode), [NOSEG] = 0.
    pub seg_base: [u64; 7],
    /// Task register.
    pub tr: Segment,
    /// LDT register.
    pub ldt: Segment,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR.
    pub idt: DescriptorTable,
    /// Control registers.
    pub cr0: u64,
    /// Page-fault linear address.
    pub cr2: u64,
    /// Page-table base.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// Task priority.
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// IA32_APIC_BASE (stored only).
    pub apic_base: u64,
    /// Debug registers (stored only; breakpoints are not implemented).
    pub dr: [u64; 8],
    /// Other MSRs.
    pub msr: Msrs,
    /// Current privilege level.
    pub cpl: u8,
    /// Code size: 16, 32 or 64.
    pub bitness: u32,
    /// Linear-address mask: 32 bits outside long mode.
    pub lin_mask: u64,
    /// Permission shift into TLB bits for the current CPL (0 supervisor, 3 user).
    pub pshift: u8,
    /// Retired instructions.
    pub insns: u64,
    /// Retired branches.
    pub branches: u64,
    /// Why the current op stopped.
    pub stop: Stop,
    /// Set by a store that hit a page holding translated code.
    pub smc: bool,
    /// Physical pages written while holding translated code (to invalidate).
    pub smc_pages: Vec<u64>,
    /// Which successor a block-ending branch took: 0 taken, 1 fall-through, 2 indirect.
    pub link: u8,
    /// Interrupt shadow (STI / MOV SS) covering the next instruction.
    pub shadow: bool,
    /// NMIs blocked (between NMI delivery and IRET).
    pub nmi_blocked: bool,
    /// The vCPU executed HLT and waits for an event.
    pub halted: bool,
    /// Guest RAM.
    pub ram: Ram,
    /// Software TLB.
    pub tlb: Tlb,
    /// Bumped whenever translations or the code mode change: block links made
    /// under an older epoch are not followed.
    pub epoch: u32,
    /// Answers given to the current instruction's exits, consumed in order on re-execution.
    pub answers: crate::exits::Answers,
    /// REP iterations before checking the kick flag; 1 when single-stepping.
    pub rep_chunk: u64,
    /// Set by another thread to make `run` return.
    pub kick: std::sync::Arc<crate::exec::Kick>,
    /// An op asked for an interrupt shadow (STI, MOV SS, POP SS).
    pub shadow_req: bool,
    /// Retired-instruction count when the shadow began; it covers the next instruction only.
    pub shadow_insns: u64,
    /// The guest's PMU bank.
    pub pmu: crate::pmu::Bank,
    /// The guest wrote a PMU MSR: deadlines need recomputing.
    pub pmu_dirty: bool,
    /// Length of the op that stopped last (for exit reports).
    pub last_len: u8,
    /// Deterministic RDRAND/RDSEED stream when not exiting.
    pub rng: u64,
    /// A CPL/mode change happened: PMU and links need refreshing.
    pub cpl_changed: bool,
    /// Execution controls relevant to ops (copied from `ExecControls`).
    pub ctl: vcpu::ExecControls,
}

impl Cpu {
    /// A vCPU in 64-bit mode? No: the reset state is flat 32-bit protected
    /// mode, paging off, CPL 0 (what a PVH entry expects); the monitor sets the rest.
    pub fn new(ram: Ram) -> Self {
        let code = Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x8,
            type_: 0xb,
            present: true,
            dpl: 0,
            db: true,
            s: true,
            l: false,
            g: true,
            avl: false,
            unusable: false,
        };
        let data = Segment {
            selector: 0x10,
            type_: 0x3,
            ..code
        };
        let tr = Segment {
            selector: 0,
            type_: 0xb,
            s: false,
            db: false,
            g: false,
            limit: 0xffff,
            ..code
        };
        let ldt = Segment {
            type_: 2,
            unusable: true,
            ..tr
        };
        let mut c = Cpu {
            gpr: [0; 32],
            rip: 0,
            rf: 2,
            lf: Lazy::default(),
            xmm: [[0; 2]; 16],
            mxcsr: 0x1f80,
            fpu_misc: vcpu::FpuState::default(),
            seg: [data, code, data, data, data, data],
            seg_base: [0; 7],
            tr,
            ldt,
            gdt: DescriptorTable::default(),
            idt: DescriptorTable::default(),
            cr0: cr0::PE | cr0::ET,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            apic_base: 0xfee0_0900,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msr: Msrs {
                pat: 0x0007_0406_0007_0406,
                xcr0: 1,
                ..Msrs::default()
            },
            cpl: 0,
            bitness: 32,
            lin_mask: 0xffff_ffff,
            pshift: 0,
            insns: 0,
            branches: 0,
            stop: Stop::None,
            smc: false,
            smc_pages: Vec::with_capacity(8),
            link: 2,
            shadow: false,
            nmi_blocked: false,
            halted: false,
            ram,
            tlb: Tlb::new(),
            epoch: 1,
            answers: crate::exits::Answers::default(),
            rep_chunk: 4096,
            kick: Default::default(),
            shadow_req: false,
            shadow_insns: 0,
            pmu: Default::default(),
            pmu_dirty: false,
            last_len: 0,
            rng: 0x853c_49e6_748f_ea9b,
            cpl_changed: false,
            ctl: Default::default(),
        };
        c.mode_changed();
        c
    }

    /// Whether IA-32e mode is active.
    #[inline]
    pub fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    /// Recompute derived mode state after CS, CR0, CR4, EFER or segment bases change.
    pub fn mode_changed(&mut self) {
        let cs = &self.seg[CS];
        self.bitness = if self.long_mode() && cs.l {
            64
        } else if cs.db {
            32
        } else {
            16
        };
        self.lin_mask = if self.long_mode() {
            u64::MAX
        } else {
            0xffff_ffff
        };
        for i in 0..6 {
            self.seg_base[i] = if self.bitness == 64 && i < FS {
                0
            } else {
                self.seg[i].base
            };
        }
        self.seg_base[NOSEG] = 0;
        let cpl = self.cpl;
        self.pshift = if cpl == 3 { 3 } else { 0 };
        self.epoch = self.epoch.wrapping_add(1);
        self.cpl_changed = true;
    }

    /// Drop every cached translation (CR3 write, INVLPG, paging-mode change).
    pub fn flush_tlb(&mut self) {
        self.tlb.flush();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Record a stop reason and return the marker.
    #[inline]
    pub fn fault(&mut self, vector: u8, err: Option<u32>) -> Stopped {
        self.stop = Stop::Exception(vector, err);
        Stopped
    }

    /// #GP(0).
    #[inline]
    pub fn gp0(&mut self) -> Stopped {
        self.fault(13, Some(0))
    }

    /// #UD.
    #[inline]
    pub fn ud(&mut self) -> Stopped {
        self.fault(6, None)
    }

    /// An internal error.
    pub fn internal(&mut self, what: impl Into<String>) -> Stopped {
        self.stop = Stop::Internal(what.into());
        Stopped
    }

    // ---- registers ----

    /// Read a register of `sz` bytes (`r` 16..=19 with `sz == 1` is AH..BH).
    #[inline(always)]
    pub fn get(&self, r: u8, sz: u8) -> u64 {
        match sz {
            8 => self.gpr[r as usize & 15],
            4 => self.gpr[r as usize & 15] as u32 as u64,
            2 => self.gpr[r as usize & 15] as u16 as u64,
            _ => {
                if r >= 16 {
                    (self.gpr[(r - 16) as usize & 3] >> 8) as u8 as u64
                } else {
                    self.gpr[r as usize & 15] as u8 as u64
                }
            }
        }
    }

    /// Write a register with x86 partial-register semantics (32-bit writes zero-extend).
    #[inline(always)]
    pub fn set(&mut self, r: u8, sz: u8, v: u64) {
        match sz {
            8 => self.gpr[r as usize & 15] = v,
            4 => self.gpr[r as usize & 15] = v as u32 as u64,
            2 => {
                let g = &mut self.gpr[r as usize & 15];
                *g = (*g & !0xffff) | (v & 0xffff);
            }
            _ => {
                if r >= 16 {
                    let g = &mut self.gpr[(r - 16) as usize & 3];
                    *g = (*g & !0xff00) | ((v & 0xff) << 8);
                } else {
                    let g = &mut self.gpr[r as usize & 15];
                    *g = (*g & !0xff) | (v & 0xff);
                }
            }
        }
    }

    // ---- flags ----

    /// RFLAGS with the arithmetic flags materialized.
    #[inline]
    pub fn rflags(&self) -> u64 {
        if self.lf.op == flags::op::NONE {
            self.rf
        } else {
            (self.rf & !flags::ARITH) | self.lf.compute(self.rf)
        }
    }

    /// Make `rf` authoritative.
    #[inline]
    pub fn materialize(&mut self) {
        if self.lf.op != flags::op::NONE {
            self.rf = self.rflags();
            self.lf.op = flags::op::NONE;
        }
    }

    /// Set the arithmetic flags to `bits` (others in the ARITH mask cleared).
    #[inline]
    pub fn set_arith(&mut self, mask: u64, bits: u64) {
        self.materialize();
        self.rf = (self.rf & !mask) | (bits & mask);
    }

    /// CF.
    #[inline(always)]
    pub fn cf(&self) -> bool {
        self.lf.cf(self.rf)
    }

    /// Condition code.
    #[inline(always)]
    pub fn cond(&self, cc: u8) -> bool {
        self.lf.cond(self.rf, cc)
    }

    /// Record lazy flags.
    #[inline(always)]
    pub fn set_lazy(&mut self, op: u8, sz: u8, a: u64, b: u64, res: u64) {
        self.lf = Lazy { op, sz, a, b, res };
    }

    /// Replace RFLAGS entirely (bit 1 forced).
    pub fn set_rflags(&mut self, v: u64) {
        self.lf.op = flags::op::NONE;
        self.rf = (v & flags::WRITABLE) | 2;
    }

    /// Whether an external interrupt could be taken now.
    pub fn interruptible(&self) -> bool {
        self.rf & flags::IF != 0 && !self.shadow_active()
    }

    /// Whether an STI/MOV SS shadow covers the next instruction.
    #[inline]
    pub fn shadow_active(&self) -> bool {
        self.shadow && self.insns == self.shadow_insns
    }

    /// CPL change bookkeeping.
    pub fn set_cpl(&mut self, cpl: u8) {
        if cpl != self.cpl {
            self.cpl = cpl;
            self.pshift = if cpl == 3 { 3 } else { 0 };
            self.epoch = self.epoch.wrapping_add(1);
            self.cpl_changed = true;
        }
    }

    /// Next value of the deterministic random stream (splitmix64).
    pub fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
