//! Exception and interrupt delivery: frames, privilege change, IST, #DF, triple fault, SYSCALL.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{ExitReason, Vcpu};

/// Handler that copies 6 qwords from the stack to DATA and the stack pointer to DATA+0x30, then HLTs.
fn recorder(vm: &Vm, at: u64) {
    vm.asm(at, |a| {
        a.mov(rbx, DATA).unwrap();
        for i in 0..6i32 {
            a.mov(rax, qword_ptr(rsp + 8 * i)).unwrap();
            a.mov(qword_ptr(rbx + 8 * i), rax).unwrap();
        }
        a.mov(qword_ptr(rbx + 0x30), rsp).unwrap();
        a.hlt().unwrap();
    });
}

fn frame(vm: &Vm) -> [u64; 7] {
    let mut f = [0u64; 7];
    for (i, x) in f.iter_mut().enumerate() {
        *x = vm.read_u64(DATA + 8 * i as u64);
    }
    f
}

#[test]
fn divide_error_same_privilege_frame() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(0, HANDLERS, 0, 0, false);
    let len = vm.asm(CODE, |a| {
        a.xor(ecx, ecx).unwrap();
        a.div(rcx).unwrap();
    });
    assert!(len > 0);
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], CODE + 2, "RIP of the faulting DIV");
    assert_eq!(f[1], KCODE as u64);
    assert_eq!(f[2] & 0x200, 0);
    assert_eq!(f[3], STACK, "old RSP");
    assert_eq!(f[4], KDATA as u64, "old SS");
    assert_eq!(f[6], STACK - 40);
    assert_eq!(
        vm.counts().0,
        1 + (1 + 12 + 1) + 1,
        "xor; the handler's 14 movs and its HLT (the DIV did not retire)"
    );
}

#[test]
fn general_protection_from_user_switches_to_rsp0() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(13, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.nop().unwrap();
        a.cli().unwrap(); // IOPL 0 at CPL 3: #GP(0)
    });
    vm.enter_user();
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], 0, "error code");
    assert_eq!(f[1], CODE + 1);
    assert_eq!(f[2], UCODE as u64);
    assert_eq!(f[4], STACK, "user RSP");
    assert_eq!(f[5], UDATA as u64);
    assert_eq!(f[6], RSP0 - 48, "handler stack starts at TSS.RSP0");
    let s = vm.vcpu.special_regs().unwrap();
    assert_eq!(s.cs.selector, KCODE);
    assert_eq!(
        s.ss.selector, 0,
        "null SS at CPL 0 after a privilege change in 64-bit mode"
    );
}

#[test]
fn ist_stack_is_used_even_without_privilege_change() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(6, HANDLERS, 1, 0, false);
    vm.asm(CODE, |a| {
        a.ud2().unwrap();
    });
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], CODE);
    assert_eq!(f[3], STACK);
    assert_eq!(f[6], IST1 - 40);
}

#[test]
fn fault_during_delivery_becomes_double_fault() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(8, HANDLERS, 1, 0, false);
    // #GP gate left not present: #GP -> #NP while delivering -> #DF(0).
    vm.asm(CODE, |a| {
        a.cli().unwrap();
    });
    vm.enter_user();
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], 0, "#DF error code is 0");
    assert_eq!(f[1], CODE);
}

#[test]
fn triple_fault_exits() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.ud2().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::TripleFault);
    assert_eq!(
        vm.vcpu.run().unwrap().reason,
        ExitReason::TripleFault,
        "stays dead"
    );
}

#[test]
fn int_n_checks_gate_dpl_and_counts_as_branch() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    recorder(&vm, HANDLERS + 0x100);
    vm.gate(0x80, HANDLERS, 0, 3, true);
    vm.gate(0x81, HANDLERS + 0x100, 0, 0, true);
    vm.gate(13, HANDLERS + 0x100, 0, 0, false);
    vm.asm(CODE, |a| {
        a.int(0x80).unwrap();
    });
    vm.enter_user();
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], CODE + 2, "INT n pushes the next RIP");
    assert_eq!(f[1], UCODE as u64);
    assert_eq!(vm.counts().1, 1);

    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS + 0x100);
    vm.gate(0x81, HANDLERS + 0x100, 0, 0, true);
    vm.gate(13, HANDLERS + 0x100, 0, 0, false);
    vm.asm(CODE, |a| {
        a.int(0x81).unwrap();
    });
    vm.enter_user();
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], 0x81 * 8 + 2, "#GP(vector*8+2) for a DPL-0 gate");
    assert_eq!(f[1], CODE, "the INT did not retire");
    assert_eq!(vm.counts().1, 0);
}

#[test]
fn syscall_sysret_round_trip() {
    let mut vm = Vm::long64();
    let lstar = HANDLERS + 0x400;
    vm.vcpu.set_msr(0xc000_0082, lstar).unwrap();
    vm.vcpu.set_msr(0xc000_0084, 0x200).unwrap(); // FMASK: clear IF
    vm.asm(lstar, |a| {
        a.mov(rdx, 77u64).unwrap();
        a.sysretq().unwrap();
    });
    vm.asm(CODE, |a| {
        a.syscall().unwrap();
        a.int3().unwrap();
    });
    vm.asm(HANDLERS, |a| {
        a.hlt().unwrap();
    });
    vm.gate(3, HANDLERS, 0, 3, false);
    vm.enter_user();
    let mut r = vm.regs();
    r.rflags = 0x202;
    vm.vcpu.set_regs(&r).unwrap();
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(r.rdx, 77);
    assert_eq!(r.rcx, CODE + 2);
    assert_eq!(r.r11 & 0x200, 0x200);
    assert_eq!(vm.counts().1, 3, "syscall, sysret, int3");
}

#[test]
fn sysexitq_enters_64_bit_ring_3_with_rflags_kept() {
    let mut vm = Vm::long64();
    let user = CODE + 0x800;
    vm.vcpu.set_msr(0x174, KCODE as u64).unwrap(); // IA32_SYSENTER_CS
    vm.asm(CODE, |a| {
        a.mov(rdx, user).unwrap();
        a.mov(rcx, STACK - 8).unwrap();
        a.sysexitq().unwrap();
    });
    vm.asm(user, |a| {
        a.mov(esi, 5).unwrap();
        a.int3().unwrap();
    });
    recorder(&vm, HANDLERS);
    vm.gate(3, HANDLERS, 0, 3, false);
    let mut r = vm.regs();
    r.rflags = 0x2 | 0x4; // IF clear, PF set: SYSEXIT leaves both alone
    vm.vcpu.set_regs(&r).unwrap();
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(vm.regs().rsi, 5);
    assert_eq!(f[0], user + 6, "INT3 in ring 3 after mov esi, 5");
    assert_eq!(f[1], KCODE as u64 + 32 + 3, "CS = SYSENTER_CS + 32, RPL 3");
    assert_eq!(
        f[2] & 0x204,
        0x4,
        "RFLAGS kept: IF still clear, PF still set"
    );
    assert_eq!(f[3], STACK - 8, "RSP = RCX");
    assert_eq!(f[4], KCODE as u64 + 40 + 3, "SS = SYSENTER_CS + 40, RPL 3");
}

#[test]
fn sysexit_faults_without_sysenter_cs_or_from_ring_3() {
    // IA32_SYSENTER_CS = 0: #GP(0) at the SYSEXIT.
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS + 0x100);
    vm.gate(13, HANDLERS + 0x100, 0, 0, false);
    vm.asm(CODE, |a| {
        a.sysexitq().unwrap();
    });
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[0], 0, "error code 0");
    assert_eq!(f[1], CODE, "SYSEXIT did not retire");

    // From ring 3: #GP(0) too.
    let mut vm = Vm::long64();
    vm.vcpu.set_msr(0x174, KCODE as u64).unwrap();
    recorder(&vm, HANDLERS + 0x100);
    vm.gate(13, HANDLERS + 0x100, 0, 0, false);
    vm.asm(CODE, |a| {
        a.sysexitq().unwrap();
    });
    vm.enter_user();
    vm.run_to_hlt();
    let f = frame(&vm);
    assert_eq!(f[1], CODE);
    assert_eq!(f[2], UCODE as u64, "faulted in ring 3");
}

#[test]
fn iretq_returns_enter_user() {
    let mut vm = Vm::long64();
    let user = CODE + 0x800;
    vm.asm(CODE, |a| {
        a.push(UDATA as i32).unwrap();
        a.push(STACK as i32).unwrap();
        a.push(0x202).unwrap();
        a.push(UCODE as i32).unwrap();
        a.push(user as i32).unwrap();
        a.iretq().unwrap();
    });
    vm.asm(user, |a| {
        a.mov(eax, 5).unwrap();
        a.int3().unwrap();
    });
    vm.asm(HANDLERS, |a| {
        a.hlt().unwrap();
    });
    vm.gate(3, HANDLERS, 0, 3, false);
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 5);
    assert_eq!(vm.counts().1, 2, "iretq, int3");
}

#[test]
fn trap_flag_raises_debug_after_each_instruction_and_rep_iteration() {
    let mut vm = Vm::long64();
    // #DB handler: count in r15, IRET (the pushed RFLAGS keeps TF set).
    vm.asm(HANDLERS, |a| {
        a.inc(r15).unwrap();
        a.iretq().unwrap();
    });
    vm.gate(1, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.mov(rdi, DATA).unwrap();
        a.mov(ecx, 3).unwrap();
        a.rep().stosb().unwrap();
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    let mut r = vm.regs();
    r.rflags |= 0x100;
    vm.vcpu.set_regs(&r).unwrap();
    vm.run_to_hlt();
    // mov, mov, 3 iterations (the last retires the REP), nop: 6 traps.
    assert_eq!(vm.regs().r15, 6);
    assert_eq!(vm.vcpu.special_regs().unwrap().cr0 & 1, 1);
}
