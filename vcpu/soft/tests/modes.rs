//! 32-bit protected mode: a PVH-style entry stub that enables PAE, EFER.LME
//! and paging and far-jumps to 64-bit code; 32-bit IDT delivery; 32-bit paging.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::Vcpu;

fn flat32(vm: &mut Vm) {
    let mut s = vm.vcpu.special_regs().unwrap();
    s.cs = seg(KCODE32, true, false, 0);
    s.cr0 = 0x11;
    s.cr4 = 0;
    s.efer = 0;
    s.cr3 = 0;
    vm.vcpu.set_special_regs(&s).unwrap();
}

fn asm32(vm: &Vm, addr: u64, f: impl FnOnce(&mut CodeAssembler)) -> u64 {
    let mut a = CodeAssembler::new(32).unwrap();
    f(&mut a);
    let b = a.assemble(addr).unwrap();
    vm.write(addr, &b);
    b.len() as u64
}

#[test]
fn pvh_entry_stub_switches_to_long_mode() {
    let mut vm = Vm::long64();
    flat32(&mut vm);
    let gdtr = DATA;
    vm.write(gdtr, &[0x47, 0, 0x00, 0x10, 0, 0]); // limit 0x47, base 0x1000
    let entry64 = CODE + 0x200;
    vm.asm(entry64, |a| {
        a.mov(rax, 0x1_2345_6789u64).unwrap();
        a.mov(rbx, rsp).unwrap();
        a.push(rax).unwrap();
        a.pop(rcx).unwrap();
        a.hlt().unwrap();
    });
    let n = asm32(&vm, CODE, |a| {
        a.mov(eax, cr4).unwrap();
        a.or(eax, 0x620).unwrap();
        a.mov(cr4, eax).unwrap();
        a.mov(eax, PML4 as u32).unwrap();
        a.mov(cr3, eax).unwrap();
        a.mov(ecx, 0xc000_0080u32).unwrap();
        a.rdmsr().unwrap();
        a.or(eax, 0x100).unwrap();
        a.wrmsr().unwrap();
        a.mov(eax, cr0).unwrap();
        a.or(eax, 0x8000_0001u32).unwrap();
        a.mov(cr0, eax).unwrap();
        a.lgdt(ptr(gdtr as u32)).unwrap();
    });
    // jmp far 0x08:entry64
    let mut far = vec![0xea];
    far.extend_from_slice(&(entry64 as u32).to_le_bytes());
    far.extend_from_slice(&KCODE.to_le_bytes());
    vm.write(CODE + n, &far);
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!((r.rax, r.rcx), (0x1_2345_6789, 0x1_2345_6789));
    let s = vm.vcpu.special_regs().unwrap();
    assert!(s.cs.l);
    assert_eq!(s.efer & 0x500, 0x500, "LME and LMA");
    assert_eq!(vm.counts().1, 1, "the far jump");
}

#[test]
fn int_through_a_32_bit_idt() {
    let mut vm = Vm::long64();
    flat32(&mut vm);
    let idt = 0x8000u64;
    let handler = HANDLERS;
    let gate = (handler & 0xffff)
        | ((KCODE32 as u64) << 16)
        | (0xe << 40)
        | (1 << 47)
        | ((handler >> 16) << 48);
    vm.write_u64(idt + 0x20 * 8, gate);
    let mut s = vm.vcpu.special_regs().unwrap();
    s.idt = vcpu::DescriptorTable {
        base: idt,
        limit: 0x7ff,
    };
    vm.vcpu.set_special_regs(&s).unwrap();
    asm32(&vm, handler, |a| {
        a.mov(eax, dword_ptr(esp)).unwrap();
        a.mov(ebx, dword_ptr(esp + 4)).unwrap();
        a.mov(ecx, esp).unwrap();
        a.hlt().unwrap();
    });
    asm32(&vm, CODE, |a| {
        a.int(0x20).unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(r.rax, CODE + 2);
    assert_eq!(r.rbx, KCODE32 as u64);
    assert_eq!(r.rcx, STACK - 12);
}

#[test]
fn two_level_32_bit_paging_faults_and_maps() {
    let mut vm = Vm::long64();
    flat32(&mut vm);
    // PD at 0x20000: 4 MiB PSE pages identity for the first 16 MiB, except 0x400000 via a PT.
    let pd = 0x20000u64;
    let pt = 0x21000u64;
    for i in 0..4u64 {
        vm.mem_write_u32(pd + i * 4, ((i << 22) | 0x87) as u32);
    }
    vm.mem_write_u32(pd + 4, (pt | 7) as u32);
    for i in 0..1024u64 {
        vm.mem_write_u32(pt + i * 4, ((0x40_0000 + (i << 12)) | 7) as u32);
    }
    vm.mem_write_u32(pt + 5 * 4, (DATA | 3) as u32); // 0x405000 -> DATA
    vm.mem_write_u32(pt + 6 * 4, 0); // 0x406000 not present
    vm.write_u64(DATA, 0xfeed);
    let idt = 0x8000u64;
    let gate = (HANDLERS & 0xffff)
        | ((KCODE32 as u64) << 16)
        | (0xe << 40)
        | (1 << 47)
        | ((HANDLERS >> 16) << 48);
    vm.write_u64(idt + 14 * 8, gate);
    let mut s = vm.vcpu.special_regs().unwrap();
    s.idt = vcpu::DescriptorTable {
        base: idt,
        limit: 0x7ff,
    };
    s.cr3 = pd;
    s.cr4 = 0x10; // PSE
    s.cr0 = 0x8001_0011;
    vm.vcpu.set_special_regs(&s).unwrap();
    asm32(&vm, HANDLERS, |a| {
        a.pop(edx).unwrap();
        a.mov(esi, cr2).unwrap();
        a.hlt().unwrap();
    });
    asm32(&vm, CODE, |a| {
        a.mov(eax, dword_ptr(0x405000u32)).unwrap();
        a.mov(ebx, dword_ptr(0x406010u32)).unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(r.rax, 0xfeed);
    assert_eq!((r.rdx, r.rsi), (0, 0x406010));
}

trait W32 {
    fn mem_write_u32(&self, a: u64, v: u32);
}
impl W32 for Vm {
    fn mem_write_u32(&self, a: u64, v: u32) {
        self.write(a, &v.to_le_bytes());
    }
}
