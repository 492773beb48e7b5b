//! A small machine for tests: 16 MiB of RAM, a GDT, an IDT, a TSS and
//! identity page tables, in 64-bit long mode at CPL 0.
#![allow(dead_code)]

use iced_x86::code_asm::CodeAssembler;
use vcpu::{Completion, ExecControls, ExitReason, Regs, Segment, SpecialRegs, Vcpu, VmExit};
use vcpu_soft::SoftVcpu;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const RAM: usize = 16 << 20;
pub const GDT: u64 = 0x1000;
pub const IDT: u64 = 0x2000;
pub const TSS: u64 = 0x3000;
pub const PML4: u64 = 0x10000;
pub const PDPT: u64 = 0x11000;
pub const PD: u64 = 0x12000;
/// 4 KiB page table covering 0x400000..0x600000.
pub const PT: u64 = 0x13000;
pub const CODE: u64 = 0x100000;
pub const STACK: u64 = 0x200000;
pub const DATA: u64 = 0x300000;
/// Region mapped by 4 KiB pages (PT).
pub const PAGED: u64 = 0x400000;
pub const RSP0: u64 = 0x1f0000;
pub const IST1: u64 = 0x1e0000;
pub const HANDLERS: u64 = 0x180000;

pub const KCODE: u16 = 0x08;
pub const KDATA: u16 = 0x10;
pub const UDATA: u16 = 0x23;
pub const UCODE: u16 = 0x2b;
pub const TSS_SEL: u16 = 0x30;
pub const KCODE32: u16 = 0x40;

pub struct Vm {
    pub mem: GuestMemoryMmap,
    pub vcpu: SoftVcpu,
}

pub fn seg(sel: u16, code: bool, l: bool, dpl: u8) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl,
        db: !l,
        s: true,
        l,
        g: true,
        avl: false,
        unusable: false,
    }
}

fn desc(code: bool, l: bool, dpl: u8) -> u64 {
    let typ: u64 = if code { 0xb } else { 0x3 };
    0xffff
        | (typ << 40)
        | (1 << 44)
        | ((dpl as u64) << 45)
        | (1 << 47)
        | (0xf << 48)
        | ((l as u64) << 53)
        | (((!l) as u64) << 54)
        | (1 << 55)
}

impl Vm {
    /// A 64-bit machine at CPL 0 with identity paging (2 MiB pages, user-accessible, writable).
    pub fn long64() -> Vm {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
        let mut vcpu = SoftVcpu::new(mem.clone());
        let vm_mem = mem.clone();
        let w = |a: u64, v: u64| vm_mem.write_obj(v, GuestAddress(a)).unwrap();
        // GDT
        w(GDT, 0);
        w(GDT + 0x08, desc(true, true, 0));
        w(GDT + 0x10, desc(false, false, 0));
        w(GDT + 0x18, desc(true, false, 3));
        w(GDT + 0x20, desc(false, false, 3));
        w(GDT + 0x28, desc(true, true, 3));
        let tss_lo =
            0x67 | ((TSS & 0xff_ffff) << 16) | (0x9 << 40) | (1 << 47) | ((TSS >> 24 & 0xff) << 56);
        w(GDT + 0x30, tss_lo);
        w(GDT + 0x38, TSS >> 32);
        w(GDT + 0x40, desc(true, false, 0));
        // TSS: RSP0 at +4, IST1 at +0x24.
        vm_mem.write_obj(RSP0, GuestAddress(TSS + 4)).unwrap();
        vm_mem.write_obj(IST1, GuestAddress(TSS + 0x24)).unwrap();
        // Page tables: identity-map 1 GiB with 2 MiB pages; 0x400000..0x600000 with 4 KiB pages.
        w(PML4, PDPT | 7);
        w(PDPT, PD | 7);
        for i in 0..512u64 {
            w(PD + i * 8, (i << 21) | 0x87);
        }
        w(PD + 2 * 8, PT | 7);
        for i in 0..512u64 {
            w(PT + i * 8, (PAGED + (i << 12)) | 7);
        }
        let sregs = SpecialRegs {
            cs: seg(KCODE, true, true, 0),
            ds: seg(KDATA, false, false, 0),
            es: seg(KDATA, false, false, 0),
            fs: seg(KDATA, false, false, 0),
            gs: seg(KDATA, false, false, 0),
            ss: seg(KDATA, false, false, 0),
            tr: Segment {
                base: TSS,
                limit: 0x67,
                selector: TSS_SEL,
                type_: 0xb,
                present: true,
                ..Default::default()
            },
            ldt: Segment {
                unusable: true,
                ..Default::default()
            },
            gdt: vcpu::DescriptorTable {
                base: GDT,
                limit: 0x47,
            },
            idt: vcpu::DescriptorTable {
                base: IDT,
                limit: 0xfff,
            },
            cr0: 0x8000_0033 | (1 << 16),
            cr2: 0,
            cr3: PML4,
            cr4: 0x620,
            cr8: 0,
            efer: 0x501 | (1 << 11),
            apic_base: 0xfee0_0900,
        };
        vcpu.set_special_regs(&sregs).unwrap();
        let regs = Regs {
            rip: CODE,
            rsp: STACK,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).unwrap();
        vcpu.set_msr(0xc000_0081, ((0x18u64) << 48) | ((KCODE as u64) << 32))
            .unwrap();
        Vm { mem, vcpu }
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn read_u64(&self, addr: u64) -> u64 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    pub fn write_u64(&self, addr: u64, v: u64) {
        self.mem.write_obj(v, GuestAddress(addr)).unwrap()
    }

    /// Assemble 64-bit code at `addr`.
    pub fn asm(&self, addr: u64, f: impl FnOnce(&mut CodeAssembler)) -> u64 {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a);
        let bytes = a.assemble(addr).unwrap();
        self.write(addr, &bytes);
        bytes.len() as u64
    }

    /// Install an IDT gate (64-bit interrupt gate unless `trap`).
    pub fn gate(&self, vector: u8, handler: u64, ist: u8, dpl: u8, trap: bool) {
        let typ: u64 = if trap { 0xf } else { 0xe };
        let lo = (handler & 0xffff)
            | ((KCODE as u64) << 16)
            | ((ist as u64) << 32)
            | (typ << 40)
            | ((dpl as u64) << 45)
            | (1 << 47)
            | ((handler >> 16 & 0xffff) << 48);
        self.write_u64(IDT + vector as u64 * 16, lo);
        self.write_u64(IDT + vector as u64 * 16 + 8, handler >> 32);
    }

    pub fn regs(&self) -> Regs {
        self.vcpu.regs().unwrap()
    }

    pub fn set_rip(&mut self, rip: u64) {
        let mut r = self.regs();
        r.rip = rip;
        self.vcpu.set_regs(&r).unwrap();
    }

    pub fn controls(&mut self, f: impl FnOnce(&mut ExecControls)) {
        let mut c = self.vcpu.controls().clone();
        f(&mut c);
        self.vcpu.set_controls(c).unwrap();
    }

    /// Run until a HLT exit (completed with Retire); panics on any other exit.
    pub fn run_to_hlt(&mut self) -> VmExit {
        let x = self.vcpu.run().unwrap();
        assert_eq!(
            x.reason,
            ExitReason::Hlt,
            "unexpected exit {x:?} (regs {:x?})",
            self.regs()
        );
        self.vcpu.complete(Completion::Retire).unwrap();
        x
    }

    pub fn counts(&self) -> (u64, u64) {
        let r = self.vcpu.retired().unwrap();
        (r.instructions, r.branches)
    }

    /// Switch to CPL 3 with user segments (pages are user-accessible).
    pub fn enter_user(&mut self) {
        let mut s = self.vcpu.special_regs().unwrap();
        s.cs = seg(UCODE, true, true, 3);
        s.ss = seg(UDATA, false, false, 3);
        s.ds = seg(UDATA, false, false, 3);
        s.es = seg(UDATA, false, false, 3);
        self.vcpu.set_special_regs(&s).unwrap();
    }
}
