//! System instructions, segment loads, far transfers, and the instructions
//! that exit to the monitor (I/O, CPUID, RDTSC, RDMSR/WRMSR, HLT, RDRAND…).

use vcpu::{Completion, ExitInfo, ExitReason, IoDirection, IoQualification, VmExit};

use crate::cpu::{CS, Cpu, DS, ES, FS, GS, R, SS, Stop, Stopped, cr0, cr4, efer};
use crate::exits::Answer;
use crate::flags;
use crate::interrupt::{
    self, EventKind, load_cs, mark_accessed, null_ss, read_desc, seg_from_desc, set_cs,
};
use crate::op::{Flow, Op, kind};
use crate::t;

/// Stop the op with an instruction exit.
fn exit(c: &mut Cpu, o: &Op, reason: ExitReason, qualification: u64, info: ExitInfo) -> Stopped {
    c.stop = Stop::Exit(VmExit {
        reason,
        qualification,
        instruction_len: o.len,
        rip: o.rip,
        info,
    });
    Stopped
}

/// The monitor's answer for this exit point, if re-executing.
fn answer(c: &mut Cpu) -> R<Option<Completion>> {
    match c.answers.take() {
        None => Ok(None),
        Some(Answer::Value(v)) => Ok(Some(v)),
        Some(a) => Err(c.internal(format!(
            "re-executed instruction expected a value answer, found {a:?}"
        ))),
    }
}

fn bad_answer(c: &mut Cpu, what: &str, got: Completion) -> Stopped {
    c.internal(format!("{what} exit answered with {got:?}"))
}

fn need_cpl0(c: &mut Cpu) -> R<()> {
    if c.cpl != 0 { Err(c.gp0()) } else { Ok(()) }
}

/// Whether I/O to `sz` bytes at `port` is allowed: CPL <= IOPL, or else
/// every port's bit is clear in the TSS I/O permission bitmap (SDM 19.5.2).
pub fn io_allowed(c: &mut Cpu, port: u16, sz: u8) -> R<bool> {
    if (c.cpl as u64) <= (c.rflags() & flags::IOPL) >> 12 {
        return Ok(true);
    }
    let tr = c.tr;
    if tr.unusable || tr.limit < 0x67 {
        return Ok(false);
    }
    let map = c.rd_sys(tr.base.wrapping_add(0x66) & c.lin_mask, 2)? & 0xffff;
    for i in 0..sz as u64 {
        let p = port as u64 + i;
        let off = map + p / 8;
        if off > tr.limit as u64 {
            return Ok(false);
        }
        let byte = c.rd_sys(tr.base.wrapping_add(off) & c.lin_mask, 1)?;
        if byte & (1 << (p % 8)) != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Read a port: exits if the I/O bitmap selects it; else reads all-ones (no device).
pub fn port_in(c: &mut Cpu, o: &Op, port: u16, sz: u8, string: bool) -> R<u64> {
    if !c.ctl.io_bitmap.access_exits(port, sz) {
        return Ok(flags::mask(sz));
    }
    match answer(c)? {
        Some(Completion::IoIn(v)) => Ok(v as u64 & flags::mask(sz)),
        Some(other) => Err(bad_answer(c, "IN", other)),
        None => {
            let qual = IoQualification {
                size: sz,
                direction: IoDirection::In,
                string,
                rep: o.rep != 0,
                immediate: o.sk == kind::IMM,
                port,
            };
            Err(exit(
                c,
                o,
                ExitReason::IoInstruction,
                qual.encode(),
                ExitInfo::Io {
                    qual,
                    out_value: None,
                },
            ))
        }
    }
}

/// Write a port: exits if the I/O bitmap selects it; else the write is dropped.
pub fn port_out(c: &mut Cpu, o: &Op, port: u16, sz: u8, v: u64, string: bool) -> R<()> {
    if !c.ctl.io_bitmap.access_exits(port, sz) {
        return Ok(());
    }
    match answer(c)? {
        Some(Completion::Retire) => Ok(()),
        Some(other) => Err(bad_answer(c, "OUT", other)),
        None => {
            let qual = IoQualification {
                size: sz,
                direction: IoDirection::Out,
                string,
                rep: o.rep != 0,
                immediate: o.sk == kind::IMM,
                port,
            };
            Err(exit(
                c,
                o,
                ExitReason::IoInstruction,
                qual.encode(),
                ExitInfo::Io {
                    qual,
                    out_value: Some(v as u32),
                },
            ))
        }
    }
}

/// IN al/ax/eax, imm8/dx.
pub fn in_(c: &mut Cpu, o: &Op) -> Flow {
    let port = if o.sk == kind::IMM {
        o.imm as u16
    } else {
        c.gpr[2] as u16
    };
    if !t!(io_allowed(c, port, o.sz)) {
        c.gp0();
        return Flow::Stop;
    }
    let v = t!(port_in(c, o, port, o.sz, false));
    c.set(0, o.sz, v);
    Flow::Next
}

/// OUT imm8/dx, al/ax/eax.
pub fn out(c: &mut Cpu, o: &Op) -> Flow {
    let port = if o.sk == kind::IMM {
        o.imm as u16
    } else {
        c.gpr[2] as u16
    };
    if !t!(io_allowed(c, port, o.sz)) {
        c.gp0();
        return Flow::Stop;
    }
    let v = c.get(0, o.sz);
    t!(port_out(c, o, port, o.sz, v, false));
    Flow::Next
}

/// CPUID: always exits.
pub fn cpuid(c: &mut Cpu, o: &Op) -> Flow {
    match t!(answer(c)) {
        Some(Completion::Cpuid { eax, ebx, ecx, edx }) => {
            c.set(0, 4, eax as u64);
            c.set(3, 4, ebx as u64);
            c.set(1, 4, ecx as u64);
            c.set(2, 4, edx as u64);
            Flow::Next
        }
        Some(other) => {
            bad_answer(c, "CPUID", other);
            Flow::Stop
        }
        None => {
            let (leaf, subleaf) = (c.gpr[0] as u32, c.gpr[1] as u32);
            exit(
                c,
                o,
                ExitReason::Cpuid,
                0,
                ExitInfo::Cpuid { leaf, subleaf },
            );
            Flow::Stop
        }
    }
}

/// The TSC the soft vCPU shows when RDTSC does not exit: retired instructions plus an offset (deterministic).
pub fn soft_tsc(c: &Cpu) -> u64 {
    c.msr.tsc_offset.wrapping_add(c.insns)
}

/// RDTSC (`cc` 0) / RDTSCP (`cc` 1).
pub fn rdtsc(c: &mut Cpu, o: &Op) -> Flow {
    if c.cr4 & (1 << 2) != 0 && c.cpl != 0 {
        c.gp0();
        return Flow::Stop;
    }
    let (tsc, aux) = if c.ctl.rdtsc_exiting {
        match t!(answer(c)) {
            Some(Completion::Rdtsc(v)) if o.cc == 0 => (v, None),
            Some(Completion::Rdtscp { tsc, aux }) if o.cc == 1 => (tsc, Some(aux)),
            Some(other) => {
                bad_answer(c, "RDTSC", other);
                return Flow::Stop;
            }
            None => {
                let r = if o.cc == 0 {
                    ExitReason::Rdtsc
                } else {
                    ExitReason::Rdtscp
                };
                exit(c, o, r, 0, ExitInfo::None);
                return Flow::Stop;
            }
        }
    } else {
        (soft_tsc(c), Some(c.msr.tsc_aux as u32))
    };
    c.set(0, 4, tsc & 0xffff_ffff);
    c.set(2, 4, tsc >> 32);
    if o.cc == 1 {
        c.set(1, 4, aux.unwrap_or(0) as u64);
    }
    Flow::Next
}

/// RDRAND (`cc` 0) / RDSEED (`cc` 1).
pub fn rdrand(c: &mut Cpu, o: &Op) -> Flow {
    let exiting = if o.cc == 0 {
        c.ctl.rdrand_exiting
    } else {
        c.ctl.rdseed_exiting
    };
    let (v, ok) = if exiting {
        match t!(answer(c)) {
            Some(Completion::Random { value, valid }) => (value, valid),
            Some(other) => {
                bad_answer(c, "RDRAND", other);
                return Flow::Stop;
            }
            None => {
                let r = if o.cc == 0 {
                    ExitReason::Rdrand
                } else {
                    ExitReason::Rdseed
                };
                exit(c, o, r, 0, ExitInfo::Random { size: o.sz });
                return Flow::Stop;
            }
        }
    } else {
        (c.next_random(), true)
    };
    c.set(o.dst, o.sz, if ok { v } else { 0 });
    c.set_arith(flags::ARITH, ok as u64);
    Flow::Next
}

/// HLT.
pub fn hlt(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    if c.ctl.hlt_exiting {
        match t!(answer(c)) {
            Some(Completion::Retire) => {
                c.rip = o.next();
                c.link = 2;
                return Flow::End;
            }
            Some(other) => {
                bad_answer(c, "HLT", other);
                return Flow::Stop;
            }
            None => {
                exit(c, o, ExitReason::Hlt, 0, ExitInfo::None);
                return Flow::Stop;
            }
        }
    }
    c.halted = true;
    c.rip = o.next();
    c.link = 2;
    Flow::End
}

/// MSRs the soft vCPU implements itself (besides the PMU, handled by the vCPU wrapper).
pub mod msrs {
    /// IA32_TSC.
    pub const TSC: u32 = 0x10;
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK.
    pub const FMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_TSC_AUX.
    pub const TSC_AUX: u32 = 0xc000_0103;
}

fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// Read an MSR the CPU core implements; `None` if unknown.
pub fn core_rdmsr(c: &Cpu, index: u32) -> Option<u64> {
    use msrs::*;
    Some(match index {
        TSC => soft_tsc(c),
        APIC_BASE => c.apic_base,
        SYSENTER_CS => c.msr.sysenter_cs,
        SYSENTER_ESP => c.msr.sysenter_esp,
        SYSENTER_EIP => c.msr.sysenter_eip,
        MISC_ENABLE => c.msr.misc_enable,
        PAT => c.msr.pat,
        EFER => c.efer,
        STAR => c.msr.star,
        LSTAR => c.msr.lstar,
        CSTAR => c.msr.cstar,
        FMASK => c.msr.fmask,
        FS_BASE => c.seg[FS].base,
        GS_BASE => c.seg[GS].base,
        KERNEL_GS_BASE => c.msr.kernel_gs_base,
        TSC_AUX => c.msr.tsc_aux,
        _ => return None,
    })
}

/// A WRMSR value the MSR does not accept (#GP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMsrValue;

/// Write an MSR the CPU core implements. `Ok(false)` if unknown; Err for an invalid value (#GP).
pub fn core_wrmsr(c: &mut Cpu, index: u32, v: u64) -> Result<bool, BadMsrValue> {
    use msrs::*;
    match index {
        TSC => c.msr.tsc_offset = v.wrapping_sub(c.insns),
        APIC_BASE => c.apic_base = v,
        SYSENTER_CS => c.msr.sysenter_cs = v,
        SYSENTER_ESP => c.msr.sysenter_esp = v,
        SYSENTER_EIP => c.msr.sysenter_eip = v,
        MISC_ENABLE => c.msr.misc_enable = v,
        PAT => c.msr.pat = v,
        EFER => {
            if v & !(efer::SCE | efer::LME | efer::LMA | efer::NXE) != 0 {
                return Err(BadMsrValue);
            }
            // LMA is read-only; LME cannot change while paging is on.
            let lma = c.efer & efer::LMA;
            if c.cr0 & cr0::PG != 0 && (v ^ c.efer) & efer::LME != 0 {
                return Err(BadMsrValue);
            }
            c.efer = (v & !efer::LMA) | lma;
            c.flush_tlb();
            c.mode_changed();
        }
        STAR => c.msr.star = v,
        LSTAR | CSTAR | FS_BASE | GS_BASE | KERNEL_GS_BASE if !canonical(v) => {
            return Err(BadMsrValue);
        }
        LSTAR => c.msr.lstar = v,
        CSTAR => c.msr.cstar = v,
        FMASK => c.msr.fmask = v & 0xffff_ffff,
        FS_BASE => {
            c.seg[FS].base = v;
            c.mode_changed();
        }
        GS_BASE => {
            c.seg[GS].base = v;
            c.mode_changed();
        }
        KERNEL_GS_BASE => c.msr.kernel_gs_base = v,
        TSC_AUX => c.msr.tsc_aux = v & 0xffff_ffff,
        _ => return Ok(false),
    }
    Ok(true)
}

/// RDMSR (`cc` 0) / WRMSR (`cc` 1). The PMU MSRs are served through `c.pmu_hook`.
pub fn msr(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    let index = c.gpr[1] as u32;
    let value = (c.gpr[0] & 0xffff_ffff) | (c.gpr[2] << 32);
    let write = o.cc == 1;
    let exits = if write {
        c.ctl.msr_bitmap.write_exits(index)
    } else {
        c.ctl.msr_bitmap.read_exits(index)
    };
    if !exits {
        if write {
            match crate::pmu::guest_wrmsr(c, index, value) {
                Some(Ok(())) => return Flow::Next,
                Some(Err(())) => {
                    c.gp0();
                    return Flow::Stop;
                }
                None => {}
            }
            match core_wrmsr(c, index, value) {
                Ok(true) => {
                    c.rip = o.next();
                    c.link = 1;
                    return Flow::End;
                }
                Err(BadMsrValue) => {
                    c.gp0();
                    return Flow::Stop;
                }
                Ok(false) => {}
            }
        } else {
            let v = crate::pmu::guest_rdmsr(c, index).or_else(|| core_rdmsr(c, index));
            if let Some(v) = v {
                c.set(0, 4, v & 0xffff_ffff);
                c.set(2, 4, v >> 32);
                return Flow::Next;
            }
        }
        if !c.ctl.msr_bitmap.unknown_exit {
            c.gp0();
            return Flow::Stop;
        }
    }
    match t!(answer(c)) {
        Some(Completion::Rdmsr(v)) if !write => {
            c.set(0, 4, v & 0xffff_ffff);
            c.set(2, 4, v >> 32);
            Flow::Next
        }
        Some(Completion::Retire) if write => Flow::Next,
        Some(other) => {
            bad_answer(c, "RDMSR/WRMSR", other);
            Flow::Stop
        }
        None => {
            if write {
                exit(c, o, ExitReason::Wrmsr, 0, ExitInfo::Wrmsr { index, value });
            } else {
                exit(c, o, ExitReason::Rdmsr, 0, ExitInfo::Rdmsr { index });
            }
            Flow::Stop
        }
    }
}

/// MOV to CRn (`cc` = n, src reg) — ends the block.
pub fn mov_to_cr(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    let v = c.get(o.src, o.sz);
    match o.cc {
        0 => {
            let v = v & 0xffff_ffff;
            if (v & cr0::PG != 0 && v & cr0::PE == 0) || (v & cr0::NW != 0 && v & cr0::CD == 0) {
                c.gp0();
                return Flow::Stop;
            }
            let turning_on = v & cr0::PG != 0 && c.cr0 & cr0::PG == 0;
            let turning_off = v & cr0::PG == 0 && c.cr0 & cr0::PG != 0;
            if turning_on && c.efer & efer::LME != 0 {
                if c.cr4 & cr4::PAE == 0 {
                    c.gp0();
                    return Flow::Stop;
                }
                c.efer |= efer::LMA;
            }
            if turning_off {
                if c.bitness == 64 {
                    c.gp0();
                    return Flow::Stop;
                }
                c.efer &= !efer::LMA;
            }
            c.cr0 = v | cr0::ET;
        }
        2 => c.cr2 = v,
        3 => c.cr3 = v,
        4 => {
            let allowed = 0x7f_ffff & !(1 << 12);
            if v & !allowed != 0 || (c.long_mode() && v & cr4::PAE == 0) {
                c.gp0();
                return Flow::Stop;
            }
            c.cr4 = v;
        }
        8 => {
            if v > 15 {
                c.gp0();
                return Flow::Stop;
            }
            c.cr8 = v;
        }
        _ => {
            c.ud();
            return Flow::Stop;
        }
    }
    c.flush_tlb();
    c.mode_changed();
    c.rip = o.next();
    c.link = 2;
    Flow::End
}

/// MOV from CRn.
pub fn mov_from_cr(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    let v = match o.cc {
        0 => c.cr0,
        2 => c.cr2,
        3 => c.cr3,
        4 => c.cr4,
        8 => c.cr8,
        _ => {
            c.ud();
            return Flow::Stop;
        }
    };
    c.set(o.dst, o.sz, v);
    Flow::Next
}

/// MOV to (`sk` = REG) / from DRn: stored only.
pub fn mov_dr(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    let n = (o.cc & 7) as usize;
    if o.sk == kind::REG {
        c.dr[n] = c.get(o.src, o.sz);
    } else {
        let v = c.dr[n];
        c.set(o.dst, o.sz, v);
    }
    Flow::Next
}

/// LGDT (0), LIDT (1), SGDT (2), SIDT (3).
pub fn desc_table(c: &mut Cpu, o: &Op) -> Flow {
    let a = c.lin(o);
    let base_sz = if c.bitness == 64 { 8 } else { 4 };
    match o.cc {
        0 | 1 => {
            t!(need_cpl0(c));
            let limit = t!(c.rd::<2>(a)) as u16;
            let base = t!(c.rd_sz(a.wrapping_add(2), base_sz));
            let base = if o.sz == 2 { base & 0xff_ffff } else { base };
            let t = vcpu::DescriptorTable { base, limit };
            if o.cc == 0 {
                c.gdt = t;
            } else {
                c.idt = t;
            }
            Flow::Next
        }
        _ => {
            let t = if o.cc == 2 { c.gdt } else { c.idt };
            t!(c.wr::<2>(a, t.limit as u64));
            t!(c.wr_sz(a.wrapping_add(2), base_sz, t.base));
            Flow::Next
        }
    }
}

/// LTR (0), LLDT (1), STR (2), SLDT (3).
pub fn task_reg(c: &mut Cpu, o: &Op) -> Flow {
    match o.cc {
        0 | 1 => {
            t!(need_cpl0(c));
            let sel = t!(c.src(o, 2)) as u16;
            if o.cc == 1 && sel & !3 == 0 {
                c.ldt.unusable = true;
                c.ldt.selector = sel;
                return Flow::Next;
            }
            if sel & 4 != 0 || sel & !3 == 0 {
                c.fault(13, Some(sel as u32 & 0xfffc));
                return Flow::Stop;
            }
            let lo = t!(read_desc(c, sel));
            let hi = if c.long_mode() {
                t!(c.rd_sys(c.gdt.base.wrapping_add((sel & !7) as u64 + 8), 8))
            } else {
                0
            };
            let mut s = seg_from_desc(sel, lo);
            s.base |= (hi & 0xffff_ffff) << 32;
            let ok = if o.cc == 0 {
                !s.s && (s.type_ == 9 || s.type_ == 1)
            } else {
                !s.s && s.type_ == 2
            };
            if !ok {
                c.fault(13, Some(sel as u32 & 0xfffc));
                return Flow::Stop;
            }
            if !s.present {
                c.fault(11, Some(sel as u32 & 0xfffc));
                return Flow::Stop;
            }
            if o.cc == 0 {
                // Mark the descriptor busy.
                let a = c.gdt.base.wrapping_add((sel & !7) as u64);
                t!(c.wr_priv(a, 8, lo | (2 << 40), false));
                s.type_ |= 2;
                c.tr = s;
            } else {
                c.ldt = s;
            }
            Flow::Next
        }
        _ => {
            let v = if o.cc == 2 {
                c.tr.selector
            } else {
                c.ldt.selector
            } as u64;
            let sz = if o.dk == kind::MEM { 2 } else { o.sz };
            let a = if o.dk == kind::MEM { c.lin(o) } else { 0 };
            t!(c.put(o, sz, a, v));
            Flow::Next
        }
    }
}

/// Load a data segment register (DS/ES/FS/GS/SS) from a selector with protected-mode checks.
pub fn load_data_seg(c: &mut Cpu, idx: usize, sel: u16) -> R<()> {
    if c.cr0 & cr0::PE == 0 {
        let s = &mut c.seg[idx];
        s.selector = sel;
        s.base = (sel as u64) << 4;
        c.mode_changed();
        return Ok(());
    }
    let rpl = (sel & 3) as u8;
    if sel & !3 == 0 {
        if idx == SS && !(c.bitness == 64 && c.cpl != 3 && rpl == c.cpl) {
            return Err(c.gp0());
        }
        c.seg[idx] = if idx == SS {
            null_ss(rpl)
        } else {
            vcpu::Segment {
                selector: sel,
                unusable: true,
                ..Default::default()
            }
        };
        c.mode_changed();
        return Ok(());
    }
    let lo = read_desc(c, sel)?;
    let mut s = seg_from_desc(sel, lo);
    let err = Some(sel as u32 & 0xfffc);
    if idx == SS {
        if rpl != c.cpl || s.dpl != c.cpl || !s.s || s.type_ & 0xa != 2 {
            return Err(c.fault(13, err));
        }
        if !s.present {
            return Err(c.fault(12, err));
        }
    } else {
        let code = s.type_ & 8 != 0;
        let readable = !code || s.type_ & 2 != 0;
        let conforming = code && s.type_ & 4 != 0;
        if !s.s || !readable || (!conforming && (rpl > s.dpl || c.cpl > s.dpl)) {
            return Err(c.fault(13, err));
        }
        if !s.present {
            return Err(c.fault(11, err));
        }
    }
    mark_accessed(c, sel, lo)?;
    s.type_ |= 1;
    c.seg[idx] = s;
    c.mode_changed();
    Ok(())
}

/// MOV Sreg, r/m (`cc` = segment index) — ends the block (MOV SS sets the interrupt shadow).
pub fn mov_to_seg(c: &mut Cpu, o: &Op) -> Flow {
    let sel = t!(c.src(o, 2)) as u16;
    let idx = o.cc as usize;
    if idx == CS || idx > GS {
        c.ud();
        return Flow::Stop;
    }
    t!(load_data_seg(c, idx, sel));
    if idx == SS {
        c.shadow_req = true;
    }
    c.rip = o.next();
    c.link = 2;
    Flow::End
}

/// MOV r/m, Sreg.
pub fn mov_from_seg(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.seg[o.cc as usize % 6].selector as u64;
    let sz = if o.dk == kind::MEM { 2 } else { o.sz };
    let a = if o.dk == kind::MEM { c.lin(o) } else { 0 };
    t!(c.put(o, sz, a, v));
    Flow::Next
}

/// PUSH Sreg (`cc` = index).
pub fn push_seg(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.seg[o.cc as usize % 6].selector as u64;
    t!(c.push(v, o.sz));
    Flow::Next
}

/// POP Sreg (`cc` = index) — ends the block.
pub fn pop_seg(c: &mut Cpu, o: &Op) -> Flow {
    let v = t!(c.peek(o.sz, 0)) as u16;
    let idx = o.cc as usize % 6;
    t!(load_data_seg(c, idx, v));
    c.sp_add(o.sz as u64);
    if idx == SS {
        c.shadow_req = true;
    }
    c.rip = o.next();
    c.link = 2;
    Flow::End
}

/// CLI (0) / STI (1). STI ends the block: its shadow covers the next instruction.
pub fn cli_sti(c: &mut Cpu, o: &Op) -> Flow {
    let iopl = (c.rf & flags::IOPL) >> 12;
    if c.cpl as u64 > iopl {
        c.gp0();
        return Flow::Stop;
    }
    if o.cc == 0 {
        c.rf &= !flags::IF;
        Flow::Next
    } else {
        if c.rf & flags::IF == 0 {
            c.shadow_req = true;
        }
        c.rf |= flags::IF;
        c.rip = o.next();
        c.link = 1;
        Flow::End
    }
}

/// INT n (`cc` 0), INT3 (1), INTO (2), INT1 (3): retire, then deliver.
pub fn int(c: &mut Cpu, o: &Op) -> Flow {
    let vector = match o.cc {
        0 => o.imm as u8,
        1 => 3,
        2 => {
            if !c.cond(0) {
                c.rip = o.next();
                c.link = 1;
                return Flow::End;
            }
            4
        }
        _ => 1,
    };
    let kind = if o.cc == 3 {
        EventKind::Exception
    } else {
        EventKind::Software
    };
    // A fault during delivery is raised at the INT instruction (it does not
    // retire); the executor then applies the double-fault rules to it.
    match interrupt::deliver_once(c, vector, None, kind, o.next()) {
        Ok(()) => {
            c.link = 2;
            Flow::End
        }
        Err(_) => Flow::Stop,
    }
}

/// IRET (operand size `sz`).
pub fn iret(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    if c.rf & flags::NT != 0 && !c.long_mode() {
        c.stop = Stop::Internal("IRET with NT (task switch) is not supported".into());
        return Flow::Stop;
    }
    let rip = t!(c.peek(sz, 0));
    let cs_sel = t!(c.peek(sz, sz as u64)) as u16;
    let fl = t!(c.peek(sz, 2 * sz as u64));
    let rpl = (cs_sel & 3) as u8;
    if rpl < c.cpl {
        c.fault(13, Some(cs_sel as u32 & 0xfffc));
        return Flow::Stop;
    }
    let pops_stack = c.bitness == 64 || rpl > c.cpl;
    let (nsp, nss) = if pops_stack {
        (
            t!(c.peek(sz, 3 * sz as u64)),
            t!(c.peek(sz, 4 * sz as u64)) as u16,
        )
    } else {
        (0, 0)
    };
    let cs = t!(load_cs(c, cs_sel, rpl));
    if c.long_mode() && cs.l && !canonical(rip) {
        c.gp0();
        return Flow::Stop;
    }
    // RFLAGS update with privilege rules.
    let old = c.rflags();
    let mut changeable = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if c.cpl == 0 {
        changeable |= flags::IOPL | flags::IF;
    } else if (c.cpl as u64) <= (old & flags::IOPL) >> 12 {
        changeable |= flags::IF;
    }
    if sz == 2 {
        changeable &= 0xffff;
    }
    let old_sp = c.gpr[4];
    let new_sp_same = old_sp.wrapping_add(3 * sz as u64);
    if pops_stack {
        let ss_save = c.seg[SS];
        let cpl_save = c.cpl;
        // Load SS at the new privilege.
        c.cpl = rpl;
        let r = if nss & !3 == 0 && c.long_mode() && cs.l {
            if rpl == 3 {
                Err(c.gp0())
            } else {
                c.seg[SS] = null_ss(rpl);
                Ok(())
            }
        } else {
            load_data_seg(c, SS, nss)
        };
        c.cpl = cpl_save;
        if r.is_err() {
            c.seg[SS] = ss_save;
            return Flow::Stop;
        }
        c.gpr[4] = if sz == 8 { nsp } else { nsp & flags::mask(sz) };
    } else {
        c.sp_add(3 * sz as u64);
        let _ = new_sp_same;
    }
    c.set_rflags((old & !changeable) | (fl & changeable));
    set_cs(c, cs, rpl);
    if rpl > 0 {
        // Data segments not accessible at the new CPL become null (SDM IRET).
        for idx in [ES, DS, FS, GS] {
            let s = c.seg[idx];
            let code_conf = s.type_ & 0xc == 0xc;
            if !s.unusable && s.s && !code_conf && s.dpl < rpl {
                c.seg[idx].selector = 0;
                c.seg[idx].unusable = true;
            }
        }
        c.mode_changed();
    }
    c.nmi_blocked = false;
    c.rip = if cs.l && c.long_mode() {
        rip
    } else {
        rip & 0xffff_ffff
    };
    c.link = 2;
    Flow::End
}

/// SYSCALL.
pub fn syscall(c: &mut Cpu, o: &Op) -> Flow {
    if c.efer & efer::SCE == 0 || !c.long_mode() {
        c.ud();
        return Flow::Stop;
    }
    let fl = c.rflags();
    c.gpr[1] = o.next();
    c.gpr[11] = fl & !flags::RF;
    let sel = ((c.msr.star >> 32) & 0xfffc) as u16;
    let cs = vcpu::Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_: 0xb,
        present: true,
        dpl: 0,
        db: false,
        s: true,
        l: true,
        g: true,
        avl: false,
        unusable: false,
    };
    let ss = vcpu::Segment {
        selector: sel + 8,
        type_: 3,
        db: true,
        l: false,
        ..cs
    };
    c.set_rflags(fl & !c.msr.fmask & !flags::RF);
    c.seg[SS] = ss;
    set_cs(c, cs, 0);
    c.rip = if c.bitness == 64 {
        c.msr.lstar
    } else {
        c.msr.cstar
    };
    c.link = 2;
    Flow::End
}

/// SYSRET (`sz` 8 to 64-bit code, 4 to compatibility mode).
pub fn sysret(c: &mut Cpu, o: &Op) -> Flow {
    if c.efer & efer::SCE == 0 || !c.long_mode() || c.bitness != 64 {
        c.ud();
        return Flow::Stop;
    }
    if c.cpl != 0 {
        c.gp0();
        return Flow::Stop;
    }
    let target = if o.sz == 8 {
        c.gpr[1]
    } else {
        c.gpr[1] & 0xffff_ffff
    };
    if !canonical(target) {
        c.gp0();
        return Flow::Stop;
    }
    let base_sel = ((c.msr.star >> 48) & 0xffff) as u16;
    let cs_sel = if o.sz == 8 { base_sel + 16 } else { base_sel } | 3;
    let cs = vcpu::Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: cs_sel,
        type_: 0xb,
        present: true,
        dpl: 3,
        db: o.sz != 8,
        s: true,
        l: o.sz == 8,
        g: true,
        avl: false,
        unusable: false,
    };
    let ss = vcpu::Segment {
        selector: (base_sel + 8) | 3,
        type_: 3,
        db: true,
        l: false,
        ..cs
    };
    c.set_rflags((c.gpr[11] & !(flags::RF | flags::VM)) | 2);
    c.seg[SS] = ss;
    set_cs(c, cs, 3);
    c.rip = target;
    c.link = 2;
    Flow::End
}

/// SYSEXIT (`sz` 8: REX.W, to 64-bit code; 4: to 32-bit protected mode).
/// CS and SS get fixed flat ring-3 descriptors whose selectors derive from
/// IA32_SYSENTER_CS (+32/+40 for 64-bit, +16/+24 otherwise, RPL 3); RIP
/// comes from RDX and RSP from RCX; RFLAGS is unchanged (SDM "SYSEXIT").
pub fn sysexit(c: &mut Cpu, o: &Op) -> Flow {
    let base_sel = (c.msr.sysenter_cs & 0xfffc) as u16;
    if base_sel == 0 || c.cr0 & cr0::PE == 0 || c.cpl != 0 {
        c.gp0();
        return Flow::Stop;
    }
    let long = o.sz == 8;
    let (rip, rsp) = if long {
        (c.gpr[2], c.gpr[1])
    } else {
        (c.gpr[2] & 0xffff_ffff, c.gpr[1] & 0xffff_ffff)
    };
    if long && (!canonical(rip) || !canonical(rsp)) {
        c.gp0();
        return Flow::Stop;
    }
    let cs = vcpu::Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: base_sel.wrapping_add(if long { 32 } else { 16 }) | 3,
        type_: 0xb,
        present: true,
        dpl: 3,
        db: !long,
        s: true,
        l: long,
        g: true,
        avl: false,
        unusable: false,
    };
    let ss = vcpu::Segment {
        selector: base_sel.wrapping_add(if long { 40 } else { 24 }) | 3,
        type_: 3,
        db: true,
        l: false,
        ..cs
    };
    c.seg[SS] = ss;
    set_cs(c, cs, 3);
    c.gpr[4] = rsp;
    c.rip = rip;
    c.link = 2;
    Flow::End
}

/// SWAPGS.
pub fn swapgs(c: &mut Cpu, _o: &Op) -> Flow {
    if c.bitness != 64 {
        c.ud();
        return Flow::Stop;
    }
    t!(need_cpl0(c));
    std::mem::swap(&mut c.seg[GS].base, &mut c.msr.kernel_gs_base);
    c.mode_changed();
    Flow::Next
}

/// RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE (`cc` bit 0: GS, bit 1: write).
pub fn fsgsbase(c: &mut Cpu, o: &Op) -> Flow {
    if c.cr4 & cr4::FSGSBASE == 0 || c.bitness != 64 {
        c.ud();
        return Flow::Stop;
    }
    let idx = if o.cc & 1 != 0 { GS } else { FS };
    if o.cc & 2 != 0 {
        let v = c.get(o.dst, o.sz);
        if !canonical(v) {
            c.gp0();
            return Flow::Stop;
        }
        c.seg[idx].base = v;
        c.mode_changed();
    } else {
        let v = c.seg[idx].base;
        c.set(o.dst, o.sz, v);
    }
    Flow::Next
}

/// INVLPG — flushes the whole TLB (always architecturally allowed) and ends the block.
pub fn invlpg(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    c.flush_tlb();
    c.rip = o.next();
    c.link = 2;
    Flow::End
}

/// WBINVD / INVD / CLTS (`cc` 2).
pub fn cache_ctl(c: &mut Cpu, o: &Op) -> Flow {
    t!(need_cpl0(c));
    if o.cc == 2 {
        c.cr0 &= !cr0::TS;
    }
    Flow::Next
}

/// XGETBV (`cc` 0) / XSETBV (1).
pub fn xcr(c: &mut Cpu, o: &Op) -> Flow {
    if c.cr4 & cr4::OSXSAVE == 0 {
        c.ud();
        return Flow::Stop;
    }
    if c.gpr[1] as u32 != 0 {
        c.gp0();
        return Flow::Stop;
    }
    if o.cc == 0 {
        let v = c.msr.xcr0;
        c.set(0, 4, v & 0xffff_ffff);
        c.set(2, 4, v >> 32);
    } else {
        t!(need_cpl0(c));
        let v = (c.gpr[0] & 0xffff_ffff) | (c.gpr[2] << 32);
        // x87 must stay set; only x87 and SSE state are supported.
        if v & 1 == 0 || v & !3 != 0 {
            c.gp0();
            return Flow::Stop;
        }
        c.msr.xcr0 = v;
    }
    Flow::Next
}

/// Far JMP (`cc` 0), far CALL (1): target from `target`/`imm` (ptr16:32) or memory (m16:32/64).
pub fn far_jmp_call(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let (sel, off) = if o.sk == kind::MEM {
        let a = c.lin(o);
        let off = t!(c.rd_sz(a, sz));
        let sel = t!(c.rd::<2>(a.wrapping_add(sz as u64)));
        (sel as u16, off)
    } else {
        (o.imm as u16, o.target)
    };
    let lo = t!(read_desc(c, sel));
    let d = seg_from_desc(sel, lo);
    if !d.s || d.type_ & 8 == 0 {
        // Call gates, task gates, TSS: not supported.
        c.fault(13, Some(sel as u32 & 0xfffc));
        return Flow::Stop;
    }
    let conforming = d.type_ & 4 != 0;
    let rpl = (sel & 3) as u8;
    if (conforming && d.dpl > c.cpl) || (!conforming && (rpl > c.cpl || d.dpl != c.cpl)) {
        c.fault(13, Some(sel as u32 & 0xfffc));
        return Flow::Stop;
    }
    if !d.present {
        c.fault(11, Some(sel as u32 & 0xfffc));
        return Flow::Stop;
    }
    t!(mark_accessed(c, sel, lo));
    let mut cs = d;
    cs.type_ |= 1;
    cs.selector = (sel & !3) | c.cpl as u16;
    if o.cc == 1 {
        let old_cs = c.seg[CS].selector as u64;
        let old_sp = c.gpr[4];
        if c.push(old_cs, sz).is_err() || c.push(o.next(), sz).is_err() {
            c.gpr[4] = old_sp;
            return Flow::Stop;
        }
    }
    let cpl = c.cpl;
    set_cs(c, cs, cpl);
    c.rip = if c.bitness == 64 {
        off
    } else {
        off & 0xffff_ffff
    };
    c.link = 2;
    Flow::End
}

/// Far RET (`imm` = bytes to release).
pub fn far_ret(c: &mut Cpu, o: &Op) -> Flow {
    let sz = o.sz;
    let off = t!(c.peek(sz, 0));
    let sel = t!(c.peek(sz, sz as u64)) as u16;
    let rpl = (sel & 3) as u8;
    if rpl < c.cpl {
        c.fault(13, Some(sel as u32 & 0xfffc));
        return Flow::Stop;
    }
    let outer = rpl > c.cpl;
    let (nsp, nss) = if outer {
        let base = 2 * sz as u64 + o.imm;
        (
            t!(c.peek(sz, base)),
            t!(c.peek(sz, base + sz as u64)) as u16,
        )
    } else {
        (0, 0)
    };
    let cs = t!(load_cs(c, sel, rpl));
    if outer {
        let cpl_save = c.cpl;
        c.cpl = rpl;
        let r = load_data_seg(c, SS, nss);
        c.cpl = cpl_save;
        t!(r);
        c.gpr[4] = nsp.wrapping_add(o.imm);
    } else {
        c.sp_add(2 * sz as u64 + o.imm);
    }
    set_cs(c, cs, rpl);
    c.rip = if c.bitness == 64 {
        off
    } else {
        off & 0xffff_ffff
    };
    c.link = 2;
    Flow::End
}

/// LMSW / SMSW are not emitted by our guests; SMSW reads CR0's low 16 bits.
pub fn smsw(c: &mut Cpu, o: &Op) -> Flow {
    let v = c.cr0 & 0xffff;
    let sz = if o.dk == kind::MEM { 2 } else { o.sz };
    let a = if o.dk == kind::MEM { c.lin(o) } else { 0 };
    t!(c.put(o, sz, a, v));
    Flow::Next
}

/// UD2 / unsupported.
pub fn ud2(c: &mut Cpu, _o: &Op) -> Flow {
    c.ud();
    Flow::Stop
}
