//! Page walks: every permission fault, A/D bits, TLB flushes, large pages.
mod support;

use iced_x86::code_asm::*;
use support::*;

const PF_HANDLER: u64 = HANDLERS;

/// #PF handler: store error code at DATA, CR2 at DATA+8, then HLT.
fn install_pf_handler(vm: &Vm) {
    vm.asm(PF_HANDLER, |a| {
        a.pop(rax).unwrap();
        a.mov(rbx, DATA).unwrap();
        a.mov(qword_ptr(rbx), rax).unwrap();
        a.mov(rax, cr2).unwrap();
        a.mov(qword_ptr(rbx + 8), rax).unwrap();
        a.hlt().unwrap();
    });
    vm.gate(14, PF_HANDLER, 0, 0, false);
}

fn pte(vm: &Vm, page: u64, flags: u64) {
    vm.write_u64(PT + ((page - PAGED) >> 12) * 8, page | flags);
}

/// Run code that should fault; returns (error code, cr2, faulting rip).
fn fault(vm: &mut Vm) -> (u64, u64) {
    vm.write_u64(DATA, 0xdead);
    vm.run_to_hlt();
    (vm.read_u64(DATA), vm.read_u64(DATA + 8))
}

#[test]
fn not_present_read_and_write() {
    let mut vm = Vm::long64();
    install_pf_handler(&vm);
    pte(&vm, PAGED, 0);
    vm.asm(CODE, |a| {
        a.mov(rsi, PAGED + 0x10).unwrap();
        a.mov(rax, qword_ptr(rsi)).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(fault(&mut vm), (0, PAGED + 0x10));
    let mut vm = Vm::long64();
    install_pf_handler(&vm);
    pte(&vm, PAGED, 0);
    vm.asm(CODE, |a| {
        a.mov(rsi, PAGED + 0x18).unwrap();
        a.mov(qword_ptr(rsi), rax).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(fault(&mut vm), (2, PAGED + 0x18));
}

#[test]
fn supervisor_write_to_read_only_honours_cr0_wp() {
    let mut vm = Vm::long64();
    install_pf_handler(&vm);
    pte(&vm, PAGED, 0x5); // present, user, read-only
    vm.asm(CODE, |a| {
        a.mov(rsi, PAGED).unwrap();
        a.mov(qword_ptr(rsi), rax).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(fault(&mut vm), (3, PAGED));
    // WP = 0: the supervisor write succeeds and sets the dirty bit.
    let mut vm = Vm::long64();
    install_pf_handler(&vm);
    pte(&vm, PAGED, 0x5);
    let mut s = vcpu::Vcpu::special_regs(&vm.vcpu).unwrap();
    s.cr0 &= !(1 << 16);
    vcpu::Vcpu::set_special_regs(&mut vm.vcpu, &s).unwrap();
    vm.asm(CODE, |a| {
        a.mov(rsi, PAGED).unwrap();
        a.mov(eax, 0x1234).unwrap();
        a.mov(qword_ptr(rsi), rax).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(PAGED), 0x1234);
    assert_eq!(vm.read_u64(PT) & 0x60, 0x60, "accessed and dirty set");
}

#[test]
fn user_faults_on_supervisor_and_read_only_pages() {
    for (flags, write, expect) in [
        (0x3u64, false, 5u64),
        (0x3, true, 7),
        (0x5, true, 7),
        (0x5, false, u64::MAX),
    ] {
        let mut vm = Vm::long64();
        install_pf_handler(&vm);
        pte(&vm, PAGED, flags);
        vm.asm(CODE, |a| {
            a.mov(rsi, PAGED + 8).unwrap();
            if write {
                a.mov(qword_ptr(rsi), rax).unwrap();
            } else {
                a.mov(rax, qword_ptr(rsi)).unwrap();
            }
            // A user HLT is #GP; use an undefined gate-less path instead: int3 to a DPL-3 gate.
            a.int3().unwrap();
        });
        // int3 handler: record "no fault" and halt.
        vm.asm(HANDLERS + 0x100, |a| {
            a.mov(rbx, DATA).unwrap();
            a.mov(qword_ptr(rbx), -1i32).unwrap();
            a.hlt().unwrap();
        });
        vm.gate(3, HANDLERS + 0x100, 0, 3, false);
        vm.enter_user();
        vm.write_u64(DATA, 0xdead);
        vm.run_to_hlt();
        let got = vm.read_u64(DATA);
        assert_eq!(got, expect, "flags {flags:#x} write {write}");
        if expect != u64::MAX {
            assert_eq!(vm.read_u64(DATA + 8), PAGED + 8);
        }
    }
}

#[test]
fn nx_fetch_faults_with_instruction_bit() {
    let mut vm = Vm::long64();
    install_pf_handler(&vm);
    pte(&vm, PAGED, 0x3 | (1 << 63));
    vm.write(PAGED, &[0x90, 0xf4]);
    vm.asm(CODE, |a| {
        a.mov(rax, PAGED).unwrap();
        a.jmp(rax).unwrap();
    });
    assert_eq!(fault(&mut vm), (0x11, PAGED));
    assert_eq!(
        vm.counts().1,
        1,
        "the jmp retired; the fetch fault is not a branch"
    );
}

#[test]
fn reserved_bit_fault_when_nx_disabled() {
    let mut vm = Vm::long64();
    install_pf_handler(&vm);
    let mut s = vcpu::Vcpu::special_regs(&vm.vcpu).unwrap();
    s.efer &= !(1 << 11);
    vcpu::Vcpu::set_special_regs(&mut vm.vcpu, &s).unwrap();
    pte(&vm, PAGED, 0x3 | (1 << 63));
    vm.asm(CODE, |a| {
        a.mov(rsi, PAGED).unwrap();
        a.mov(rax, qword_ptr(rsi)).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(fault(&mut vm), (0x9, PAGED));
}

#[test]
fn accessed_and_dirty_bits() {
    let mut vm = Vm::long64();
    pte(&vm, PAGED, 0x3);
    pte(&vm, PAGED + 0x1000, 0x3);
    vm.asm(CODE, |a| {
        a.mov(rsi, PAGED).unwrap();
        a.mov(rax, qword_ptr(rsi)).unwrap();
        a.mov(rsi, PAGED + 0x1000).unwrap();
        a.mov(qword_ptr(rsi), rax).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(PT) & 0x60, 0x20, "read: accessed only");
    assert_eq!(
        vm.read_u64(PT + 8) & 0x60,
        0x60,
        "write: accessed and dirty"
    );
    assert_eq!(
        vm.read_u64(PD + 2 * 8) & 0x20,
        0x20,
        "upper levels accessed"
    );
}

#[test]
fn tlb_is_flushed_by_invlpg_and_cr3_writes() {
    for use_cr3 in [false, true] {
        let mut vm = Vm::long64();
        vm.write_u64(DATA + 0x1000, 111);
        vm.write_u64(DATA + 0x2000, 222);
        vm.write_u64(PT, (DATA + 0x1000) | 3);
        vm.asm(CODE, |a| {
            a.mov(rsi, PAGED).unwrap();
            a.mov(rax, qword_ptr(rsi)).unwrap();
            a.mov(rbx, PT).unwrap();
            a.mov(rcx, (DATA + 0x2000) | 3).unwrap();
            a.mov(qword_ptr(rbx), rcx).unwrap();
            if use_cr3 {
                a.mov(rcx, cr3).unwrap();
                a.mov(cr3, rcx).unwrap();
            } else {
                a.invlpg(qword_ptr(rsi)).unwrap();
            }
            a.mov(rdx, qword_ptr(rsi)).unwrap();
            a.hlt().unwrap();
        });
        vm.run_to_hlt();
        let r = vm.regs();
        assert_eq!((r.rax, r.rdx), (111, 222), "cr3: {use_cr3}");
    }
}

#[test]
fn one_gib_and_two_mib_pages() {
    let mut vm = Vm::long64();
    // PDPT[1]: 1 GiB page at 0x40000000 -> physical 0.
    vm.write_u64(PDPT + 8, 0x83);
    vm.write_u64(DATA + 0x40, 0x5555);
    vm.asm(CODE, |a| {
        a.mov(rsi, 0x4000_0000u64 + DATA + 0x40).unwrap();
        a.mov(rax, qword_ptr(rsi)).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 0x5555);
}

#[test]
fn non_canonical_address_is_gp() {
    let mut vm = Vm::long64();
    vm.asm(HANDLERS + 0x200, |a| {
        a.pop(rax).unwrap();
        a.mov(rbx, DATA).unwrap();
        a.mov(qword_ptr(rbx), rax).unwrap();
        a.hlt().unwrap();
    });
    vm.gate(13, HANDLERS + 0x200, 0, 0, false);
    vm.asm(CODE, |a| {
        a.mov(rsi, 0x8000_0000_0000_0000u64).unwrap();
        a.mov(rax, qword_ptr(rsi)).unwrap();
        a.hlt().unwrap();
    });
    vm.write_u64(DATA, 0xdead);
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(DATA), 0);
}
