//! The fuzz target: execute arbitrary bytes as guest code. Used by
//! `vcpu/soft/fuzz` (cargo-fuzz) and by a seeded test in the normal test run.
//! Whatever the bytes do, the host must not panic; guest faults become guest
//! exceptions or a triple fault, and every exit is answered.

use vcpu::{
    Completion, ExitInfo, ExitReason, IoDirection, Regs, Segment, SpecialRegs, Vcpu, VcpuError,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::SoftVcpu;

/// What one fuzz input did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FuzzOutcome {
    /// Exits answered.
    pub exits: u32,
    /// Instructions retired.
    pub instructions: u64,
    /// The run ended in a triple fault.
    pub triple_fault: bool,
    /// The run ended in `VcpuError::Internal`.
    pub internal_error: bool,
}

const CODE: u64 = 0x10_0000;

/// Run `data` as 64-bit code (first byte selects CPL 0 or 3 and a few
/// controls) for a bounded number of instructions and exits.
pub fn run_bytes(data: &[u8]) -> FuzzOutcome {
    let mut out = FuzzOutcome::default();
    let Some((&sel, code)) = data.split_first() else {
        return out;
    };
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]) else {
        return out;
    };
    let w = |a: u64, v: u64| {
        let _ = mem.write_obj(v, GuestAddress(a));
    };
    // Identity map 4 MiB (user, writable); MMIO above 4 MiB.
    w(0x1000, 0x2000 | 7);
    w(0x2000, 0x3000 | 7);
    w(0x3000, 0x87);
    w(0x3008, 0x20_0000 | 0x87);
    w(0x3010, 0x40_0000 | 0x87); // not RAM: MMIO
    // GDT: null, kcode64, kdata, ucode32, udata, ucode64, TSS.
    let gdt = 0x4000u64;
    let d = |code: bool, l: bool, dpl: u64| -> u64 {
        0xffff
            | ((if code { 0xb } else { 0x3 }) << 40)
            | (1 << 44)
            | (dpl << 45)
            | (1 << 47)
            | (0xf << 48)
            | ((l as u64) << 53)
            | (((!l) as u64) << 54)
            | (1 << 55)
    };
    w(gdt + 8, d(true, true, 0));
    w(gdt + 0x10, d(false, false, 0));
    w(gdt + 0x18, d(true, false, 3));
    w(gdt + 0x20, d(false, false, 3));
    w(gdt + 0x28, d(true, true, 3));
    let tss = 0x5000u64;
    w(gdt + 0x30, 0x67 | (tss << 16) | (0x9 << 40) | (1 << 47));
    w(tss + 4, 0x9_0000);
    w(tss + 0x24, 0x8_0000);
    // IDT: every vector to a handler that IRETQs (the faulting instruction
    // may fault again: the instruction budget bounds that).
    let idt = 0x6000u64;
    let handler = 0x7000u64;
    let _ = mem.write_slice(&[0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf], GuestAddress(handler)); // add rsp,8; iretq
    let _ = mem.write_slice(&[0x48, 0xcf], GuestAddress(handler + 0x10)); // iretq
    for v in 0..256u64 {
        let h = if vcpu::Exception::vector_has_error_code(v as u8) {
            handler
        } else {
            handler + 0x10
        };
        let lo = (h & 0xffff)
            | (8 << 16)
            | ((v & 1) << 32)
            | (0xe << 40)
            | (3 << 45)
            | (1 << 47)
            | ((h >> 16) << 48);
        w(idt + v * 16, lo);
        w(idt + v * 16 + 8, 0);
    }
    let _ = mem.write_slice(&code[..code.len().min(0x4000)], GuestAddress(CODE));
    let mut v = SoftVcpu::new(mem);
    let user = sel & 1 != 0;
    let cs = Segment {
        limit: 0xffff_ffff,
        selector: if user { 0x2b } else { 8 },
        type_: 0xb,
        present: true,
        dpl: if user { 3 } else { 0 },
        s: true,
        l: true,
        g: true,
        ..Default::default()
    };
    let ds = Segment {
        selector: if user { 0x23 } else { 0x10 },
        type_: 3,
        l: false,
        db: true,
        ..cs
    };
    let sregs = SpecialRegs {
        cs,
        ds,
        es: ds,
        fs: ds,
        gs: ds,
        ss: ds,
        tr: Segment {
            base: tss,
            limit: 0x67,
            selector: 0x30,
            type_: 0xb,
            present: true,
            ..Default::default()
        },
        ldt: Segment {
            unusable: true,
            ..Default::default()
        },
        gdt: vcpu::DescriptorTable {
            base: gdt,
            limit: 0x3f,
        },
        idt: vcpu::DescriptorTable {
            base: idt,
            limit: 0xfff,
        },
        cr0: 0x8001_0033,
        cr3: 0x1000,
        cr4: 0x10620,
        efer: 0xd01,
        ..Default::default()
    };
    if v.set_special_regs(&sregs).is_err() {
        return out;
    }
    let _ = v.set_regs(&Regs {
        rip: CODE,
        rsp: 0xa_0000,
        rflags: 0x202 | if sel & 2 != 0 { 0x100 } else { 0 },
        rax: 0x1234,
        rsi: 0x20_0000,
        rdi: 0x21_0000,
        rcx: 16,
        ..Default::default()
    });
    let mut ctl = v.controls().clone();
    ctl.monitor_trap_flag = sel & 4 != 0;
    ctl.preemption_timer = Some(2000);
    ctl.hlt_exiting = true;
    ctl.msr_bitmap.unknown_exit = sel & 8 != 0;
    let _ = v.set_controls(ctl);
    for _ in 0..200 {
        let x = match v.run() {
            Ok(x) => x,
            Err(e @ VcpuError::Internal { .. }) => {
                if std::env::var_os("MOTION_FUZZ_VERBOSE").is_some() {
                    eprintln!("internal: {e}");
                }
                out.internal_error = true;
                break;
            }
            Err(_) => break,
        };
        out.exits += 1;
        let c = match (&x.reason, &x.info) {
            (ExitReason::TripleFault, _) => {
                out.triple_fault = true;
                break;
            }
            (ExitReason::PreemptionTimer, _) => break,
            (ExitReason::IoInstruction, ExitInfo::Io { qual, .. }) => {
                if qual.direction == IoDirection::In {
                    Completion::IoIn(0x5a5a_5a5a)
                } else {
                    Completion::Retire
                }
            }
            (
                ExitReason::EptViolation,
                ExitInfo::Mmio {
                    write_data: None,
                    fetch: false,
                    ..
                },
            ) => Completion::MmioRead([0xa5; 16]),
            (ExitReason::EptViolation, ExitInfo::Mmio { fetch: true, .. }) => {
                Completion::Fault(vcpu::Exception::GP0)
            }
            (ExitReason::EptViolation, _) | (ExitReason::Hlt, _) | (ExitReason::Wrmsr, _) => {
                Completion::Retire
            }
            (ExitReason::Cpuid, _) => Completion::Cpuid {
                eax: 1,
                ebx: 2,
                ecx: 3,
                edx: 4,
            },
            (ExitReason::Rdtsc, _) => Completion::Rdtsc(1000),
            (ExitReason::Rdtscp, _) => Completion::Rdtscp { tsc: 1000, aux: 1 },
            (ExitReason::Rdmsr, _) => Completion::Rdmsr(7),
            (ExitReason::Rdrand, _) | (ExitReason::Rdseed, _) => Completion::Random {
                value: 9,
                valid: true,
            },
            _ => continue,
        };
        if v.complete(c).is_err() {
            break;
        }
    }
    out.instructions = v.retired().map(|r| r.instructions).unwrap_or(0);
    out
}
