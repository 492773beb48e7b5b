//! The retired-branch definition (Intel event C4H), instruction by instruction.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{ExitReason, Vcpu};

/// Run with MTF and record (rip, branches) after each instruction.
fn trace(vm: &mut Vm) -> Vec<(u64, u64, u64)> {
    vm.controls(|c| c.monitor_trap_flag = true);
    let mut out = vec![];
    loop {
        let before = vm.counts();
        let rip = vm.regs().rip;
        let x = vm.vcpu.run().unwrap();
        match x.reason {
            ExitReason::MonitorTrapFlag => {
                let after = vm.counts();
                out.push((rip, after.0 - before.0, after.1 - before.1));
            }
            ExitReason::Hlt => {
                vm.vcpu.complete(vcpu::Completion::Retire).unwrap();
                return out;
            }
            r => panic!("{r:?}"),
        }
    }
}

#[test]
fn every_branch_kind_counts_once_and_nothing_else_counts() {
    let mut vm = Vm::long64();
    vm.asm(HANDLERS, |a| {
        a.iretq().unwrap();
    });
    vm.gate(3, HANDLERS, 0, 0, false);
    vm.gate(0x40, HANDLERS, 0, 0, false);
    // (instruction, is it a branch?) — built in order; the MTF trace checks each.
    let mut kinds: Vec<(&str, bool)> = vec![];
    vm.asm(CODE, |a| {
        let mut l1 = a.create_label();
        let mut l2 = a.create_label();
        let mut l3 = a.create_label();
        let mut l4 = a.create_label();
        let mut l5 = a.create_label();
        let mut l6 = a.create_label();
        let mut f = a.create_label();
        let mut g = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 2).unwrap();
        kinds.push(("mov", false));
        a.jmp(l1).unwrap();
        kinds.push(("jmp rel", true));
        a.set_label(&mut l1).unwrap();
        a.lea(rax, ptr(l2)).unwrap();
        kinds.push(("lea", false));
        a.jmp(rax).unwrap();
        kinds.push(("jmp reg", true));
        a.set_label(&mut l2).unwrap();
        a.call(f).unwrap();
        kinds.push(("call rel", true));
        kinds.push(("ret", true));
        a.xor(edx, edx).unwrap();
        kinds.push(("xor", false));
        a.jz(l3).unwrap();
        kinds.push(("jcc taken", true));
        a.set_label(&mut l3).unwrap();
        a.jnz(l3).unwrap();
        kinds.push(("jcc not taken", true));
        a.set_label(&mut l4).unwrap();
        a.loop_(l4).unwrap();
        kinds.push(("loop taken", true));
        kinds.push(("loop not taken", true));
        a.jrcxz(l5).unwrap();
        kinds.push(("jrcxz taken", true));
        a.set_label(&mut l5).unwrap();
        a.inc(ecx).unwrap();
        kinds.push(("inc", false));
        a.jrcxz(l6).unwrap();
        kinds.push(("jrcxz not taken", true));
        a.set_label(&mut l6).unwrap();
        a.lea(rax, ptr(g)).unwrap();
        kinds.push(("lea", false));
        a.push(rax).unwrap();
        kinds.push(("push", false));
        a.call(qword_ptr(rsp)).unwrap();
        kinds.push(("call mem", true));
        kinds.push(("ret imm16", true));
        a.int3().unwrap();
        kinds.push(("int3", true));
        kinds.push(("iretq", true));
        a.int(0x40).unwrap();
        kinds.push(("int n", true));
        kinds.push(("iretq", true));
        a.cmove(eax, edx).unwrap();
        kinds.push(("cmov", false));
        a.pushfq().unwrap();
        kinds.push(("pushfq", false));
        a.popfq().unwrap();
        kinds.push(("popfq", false));
        a.jmp(done).unwrap();
        kinds.push(("jmp rel", true));
        a.set_label(&mut f).unwrap();
        a.ret().unwrap();
        a.set_label(&mut g).unwrap();
        a.ret_1(8).unwrap();
        a.set_label(&mut done).unwrap();
        a.hlt().unwrap();
    });
    let t = trace(&mut vm);
    assert_eq!(t.len(), kinds.len(), "{t:x?}");
    for ((rip, insns, br), (name, is_branch)) in t.iter().zip(&kinds) {
        assert_eq!(*insns, 1, "{name} at {rip:#x} retires one instruction");
        assert_eq!(*br, *is_branch as u64, "{name} at {rip:#x}");
    }
}

#[test]
fn faults_and_interrupt_delivery_do_not_count() {
    let mut vm = Vm::long64();
    vm.asm(HANDLERS, |a| {
        a.hlt().unwrap();
    });
    vm.gate(14, HANDLERS, 0, 0, false);
    vm.write_u64(PT, 0);
    vm.asm(CODE, |a| {
        a.mov(rax, PAGED).unwrap();
        a.call(rax).unwrap(); // the call retires; the fetch at PAGED faults
    });
    vm.run_to_hlt();
    assert_eq!(vm.counts(), (3, 1), "mov, call, the handler's HLT");
    // A RET whose stack read faults does not retire.
    let mut vm = Vm::long64();
    vm.asm(HANDLERS, |a| {
        a.hlt().unwrap();
    });
    vm.gate(14, HANDLERS, 1, 0, false); // IST: the faulting stack is unusable
    vm.write_u64(PT, 0);
    vm.asm(CODE, |a| {
        a.mov(rsp, PAGED + 0x100).unwrap();
        a.ret().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.counts(), (2, 0), "mov, the handler's HLT");
}

#[test]
fn mtf_stepping_and_free_running_agree() {
    let prog = |vm: &Vm| {
        vm.asm(CODE, |a| {
            let mut top = a.create_label();
            a.mov(ecx, 50).unwrap();
            a.mov(rdi, DATA).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(rax, rcx).unwrap();
            a.imul_2(rax, rax).unwrap();
            a.stosq().unwrap();
            a.test(al, 1).unwrap();
            a.cmovnz(rdx, rax).unwrap();
            a.loop_(top).unwrap();
            a.hlt().unwrap();
        });
    };
    let mut free = Vm::long64();
    prog(&free);
    free.run_to_hlt();
    let mut stepped = Vm::long64();
    prog(&stepped);
    let t = trace(&mut stepped);
    assert_eq!(
        t.len() as u64 + 1,
        free.counts().0,
        "every instruction but the HLT gave an MTF exit"
    );
    assert_eq!(free.counts(), stepped.counts());
    assert_eq!(free.regs(), stepped.regs());
}
