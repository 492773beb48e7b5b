//! Field-by-field conversion between the vcpu crate's register structures and KVM's.

use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_xsave};
use vcpu::{DescriptorTable, FpuState, Regs, Segment, SpecialRegs};

/// KVM's registers to ours.
pub fn regs_from_kvm(r: &kvm_regs) -> Regs {
    Regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

/// Our registers to KVM's.
pub fn regs_to_kvm(r: &Regs) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn seg_from_kvm(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

/// Our segment to KVM's.
pub fn seg_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present as u8,
        dpl: s.dpl,
        db: s.db as u8,
        s: s.s as u8,
        l: s.l as u8,
        g: s.g as u8,
        avl: s.avl as u8,
        unusable: s.unusable as u8,
        padding: 0,
    }
}

fn dt_from_kvm(d: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: d.base,
        limit: d.limit,
    }
}

fn dt_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

/// KVM's special registers to ours (the pending-interrupt bitmap is not
/// carried: this backend never uses KVM's interrupt queue across state saves).
pub fn sregs_from_kvm(s: &kvm_sregs) -> SpecialRegs {
    SpecialRegs {
        cs: seg_from_kvm(&s.cs),
        ds: seg_from_kvm(&s.ds),
        es: seg_from_kvm(&s.es),
        fs: seg_from_kvm(&s.fs),
        gs: seg_from_kvm(&s.gs),
        ss: seg_from_kvm(&s.ss),
        tr: seg_from_kvm(&s.tr),
        ldt: seg_from_kvm(&s.ldt),
        gdt: dt_from_kvm(&s.gdt),
        idt: dt_from_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

/// Our special registers to KVM's, with an empty pending-interrupt bitmap.
pub fn sregs_to_kvm(s: &SpecialRegs) -> kvm_sregs {
    kvm_sregs {
        cs: seg_to_kvm(&s.cs),
        ds: seg_to_kvm(&s.ds),
        es: seg_to_kvm(&s.es),
        fs: seg_to_kvm(&s.fs),
        gs: seg_to_kvm(&s.gs),
        ss: seg_to_kvm(&s.ss),
        tr: seg_to_kvm(&s.tr),
        ldt: seg_to_kvm(&s.ldt),
        gdt: dt_to_kvm(&s.gdt),
        idt: dt_to_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: [0; 4],
    }
}

/// KVM's x87/SSE state to ours.
pub fn fpu_from_kvm(f: &kvm_fpu) -> FpuState {
    FpuState {
        fcw: f.fcw,
        fsw: f.fsw,
        ftw: f.ftwx,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        st: f.fpr,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
    }
}

/// Our x87/SSE state to KVM's.
pub fn fpu_to_kvm(f: &FpuState) -> kvm_fpu {
    kvm_fpu {
        fpr: f.st,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftw,
        pad1: 0,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

fn xsave_bytes(x: &kvm_xsave, at: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let byte = at + i;
        *b = x.region[byte / 4].to_le_bytes()[byte % 4];
    }
}

fn xsave_put(x: &mut kvm_xsave, at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let byte = at + i;
        let mut w = x.region[byte / 4].to_le_bytes();
        w[byte % 4] = *b;
        x.region[byte / 4] = u32::from_le_bytes(w);
    }
}

/// x87/SSE state from the legacy (FXSAVE-format) area of an XSAVE image.
///
/// The XSAVE path is used rather than KVM_GET_FPU because the nested KVM
/// here returns MXCSR as 0 from KVM_GET_FPU and does not load KVM_SET_FPU's
/// XMM values into the guest, while KVM_GET/SET_XSAVE are exact.
pub fn fpu_from_xsave(x: &kvm_xsave) -> FpuState {
    let mut b = [0u8; 512];
    xsave_bytes(x, 0, &mut b);
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let mut f = FpuState {
        fcw: u16_at(0),
        fsw: u16_at(2),
        ftw: b[4],
        last_opcode: u16_at(6),
        last_ip: u64_at(8),
        last_dp: u64_at(16),
        st: [[0; 16]; 8],
        xmm: [[0; 16]; 16],
        mxcsr: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
    };
    for i in 0..8 {
        f.st[i].copy_from_slice(&b[32 + 16 * i..48 + 16 * i]);
    }
    for i in 0..16 {
        f.xmm[i].copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
    }
    f
}

/// Write x87/SSE state into an XSAVE image's legacy area and mark x87 and
/// SSE present in XSTATE_BV. With `only_legacy`, every other state component
/// (AVX upper halves, …) is marked absent, i.e. reset to its initial state.
pub fn fpu_to_xsave(f: &FpuState, x: &mut kvm_xsave, only_legacy: bool) {
    xsave_put(x, 0, &f.fcw.to_le_bytes());
    xsave_put(x, 2, &f.fsw.to_le_bytes());
    xsave_put(x, 4, &[f.ftw]);
    xsave_put(x, 6, &f.last_opcode.to_le_bytes());
    xsave_put(x, 8, &f.last_ip.to_le_bytes());
    xsave_put(x, 16, &f.last_dp.to_le_bytes());
    xsave_put(x, 24, &f.mxcsr.to_le_bytes());
    for i in 0..8 {
        xsave_put(x, 32 + 16 * i, &f.st[i]);
    }
    for i in 0..16 {
        xsave_put(x, 160 + 16 * i, &f.xmm[i]);
    }
    let mut bv = [0u8; 8];
    xsave_bytes(x, 512, &mut bv);
    let bv = if only_legacy {
        3
    } else {
        u64::from_le_bytes(bv) | 3
    };
    xsave_put(x, 512, &bv.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_round_trip() {
        let mut r = Regs::default();
        r.set_gprs(std::array::from_fn(|i| i as u64 * 0x1111));
        r.rip = 0x1234;
        r.rflags = 0x202;
        assert_eq!(regs_from_kvm(&regs_to_kvm(&r)), r);
    }

    #[test]
    fn sregs_and_fpu_round_trip() {
        let mut s = SpecialRegs::default();
        s.cs = Segment {
            base: 1,
            limit: 0xffff_ffff,
            selector: 0x23,
            type_: 11,
            present: true,
            dpl: 3,
            db: false,
            s: true,
            l: true,
            g: true,
            avl: false,
            unusable: false,
        };
        s.gdt = DescriptorTable {
            base: 0x1000,
            limit: 55,
        };
        s.efer = 0xd00;
        assert_eq!(sregs_from_kvm(&sregs_to_kvm(&s)), s);
        let mut f = FpuState::default();
        f.xmm[3] = [7; 16];
        assert_eq!(fpu_from_kvm(&fpu_to_kvm(&f)), f);
        let mut x = kvm_xsave::default();
        f.st[7] = [9; 16];
        f.mxcsr = 0x1f80;
        f.last_ip = 0x1234_5678_9abc;
        fpu_to_xsave(&f, &mut x, true);
        assert_eq!(fpu_from_xsave(&x), f);
        assert_eq!(x.region[128], 3, "XSTATE_BV");
    }
}
