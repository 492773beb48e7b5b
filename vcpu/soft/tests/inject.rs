//! Event injection: IF and the interrupt shadow, interrupt-window exits,
//! exceptions with error codes, NMIs.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{Event, Exception, ExitReason, Vcpu, VcpuError};

/// Handler that stores its stack frame (6 qwords) at DATA and halts.
fn recorder(vm: &Vm, at: u64) {
    vm.asm(at, |a| {
        a.mov(rbx, DATA).unwrap();
        for i in 0..6i32 {
            a.mov(rax, qword_ptr(rsp + 8 * i)).unwrap();
            a.mov(qword_ptr(rbx + 8 * i), rax).unwrap();
        }
        a.hlt().unwrap();
    });
}

#[test]
fn interrupt_with_if_clear_waits_for_the_window_and_sti_shadow_delays_one_instruction() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(0x30, HANDLERS, 0, 0, false);
    let sti_at = vm.asm(CODE, |a| {
        a.mov(eax, 1).unwrap();
    });
    vm.asm(CODE + sti_at, |a| {
        a.sti().unwrap();
        a.inc(eax).unwrap();
        a.inc(eax).unwrap();
        a.hlt().unwrap();
    });
    // IF = 0: injection is refused; ask for the window.
    assert!(matches!(
        vm.vcpu.inject(Event::ExternalInterrupt(0x30)),
        Err(VcpuError::CannotInject { .. })
    ));
    vm.controls(|c| c.interrupt_window_exiting = true);
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::InterruptWindow);
    // STI at CODE+5 (1 byte), then one `inc eax` (2 bytes) runs in the shadow.
    assert_eq!(
        x.rip,
        CODE + sti_at + 1 + 2,
        "the window opens after the instruction following STI"
    );
    assert_eq!(vm.regs().rax, 2);
    vm.controls(|c| c.interrupt_window_exiting = false);
    vm.vcpu.inject(Event::ExternalInterrupt(0x30)).unwrap();
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(DATA), CODE + sti_at + 3, "return RIP");
    assert_eq!(
        vm.read_u64(DATA + 16) & 0x200,
        0x200,
        "IF was set in the pushed RFLAGS"
    );
}

#[test]
fn shadow_is_visible_through_interruptible() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.sti().unwrap();
        a.nop().unwrap();
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    vm.controls(|c| c.monitor_trap_flag = true);
    assert!(!vm.vcpu.interruptible().unwrap());
    assert_eq!(vm.vcpu.run().unwrap().reason, ExitReason::MonitorTrapFlag);
    assert!(!vm.vcpu.interruptible().unwrap(), "STI shadow");
    assert!(matches!(
        vm.vcpu.inject(Event::ExternalInterrupt(0x40)),
        Err(VcpuError::CannotInject { .. })
    ));
    assert_eq!(vm.vcpu.run().unwrap().reason, ExitReason::MonitorTrapFlag);
    assert!(vm.vcpu.interruptible().unwrap());
}

#[test]
fn mov_ss_shadow_blocks_for_one_instruction() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.nop().unwrap();
        a.nop().unwrap();
        a.mov(eax, KDATA as i32).unwrap();
        a.mov(ss, ax).unwrap();
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    let mut r = vm.regs();
    r.rflags |= 0x200;
    vm.vcpu.set_regs(&r).unwrap();
    vm.controls(|c| c.monitor_trap_flag = true);
    let mut states = vec![];
    for _ in 0..5 {
        assert_eq!(vm.vcpu.run().unwrap().reason, ExitReason::MonitorTrapFlag);
        states.push(vm.vcpu.interruptible().unwrap());
    }
    assert_eq!(
        states,
        vec![true, true, true, false, true],
        "only MOV SS opens a shadow here"
    );
}

#[test]
fn injected_exception_with_error_code_arrives_with_the_right_frame() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(13, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.nop().unwrap();
    });
    vm.vcpu
        .inject(Event::Exception(Exception {
            vector: 13,
            error_code: Some(0x18),
        }))
        .unwrap();
    vm.run_to_hlt();
    let f: Vec<u64> = (0..6).map(|i| vm.read_u64(DATA + 8 * i)).collect();
    // Fault-class exceptions push RF = 1 (also when injected).
    assert_eq!(
        f,
        vec![0x18, CODE, KCODE as u64, 0x10002, STACK, KDATA as u64]
    );
    assert_eq!(
        vm.counts().0,
        14,
        "delivery is not an instruction: only the handler (13 and its HLT) counted"
    );
}

#[test]
fn injected_exception_from_user_mode_switches_stacks() {
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(14, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.nop().unwrap();
    });
    vm.enter_user();
    vm.vcpu
        .inject(Event::Exception(Exception {
            vector: 14,
            error_code: Some(6),
        }))
        .unwrap();
    vm.run_to_hlt();
    let f: Vec<u64> = (0..6).map(|i| vm.read_u64(DATA + 8 * i)).collect();
    assert_eq!(f, vec![6, CODE, UCODE as u64, 0x10002, STACK, UDATA as u64]);
}

#[test]
fn nmi_is_delivered_and_blocks_further_nmis_until_iret() {
    let mut vm = Vm::long64();
    vm.asm(HANDLERS, |a| {
        a.inc(rbx).unwrap();
        a.hlt().unwrap();
        a.iretq().unwrap();
    });
    vm.gate(2, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.hlt().unwrap();
    });
    vm.vcpu.inject(Event::Nmi).unwrap();
    vm.run_to_hlt();
    assert_eq!(vm.regs().rbx, 1);
    assert!(matches!(
        vm.vcpu.inject(Event::Nmi),
        Err(VcpuError::CannotInject { .. })
    ));
    vm.run_to_hlt(); // iretq, then the HLT at CODE (retired by the completion)
    assert_eq!(vm.regs().rip, CODE + 1);
    vm.vcpu.inject(Event::Nmi).unwrap();
}

#[test]
fn sti_hlt_then_inject_after_completing_the_hlt() {
    // The idle idiom: STI; HLT. The HLT exit is completed (the monitor
    // "emulated" it), which ends the STI shadow, so the interrupt can be
    // injected right away and returns after the HLT.
    let mut vm = Vm::long64();
    recorder(&vm, HANDLERS);
    vm.gate(0x20, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.sti().unwrap();
        a.hlt().unwrap();
        a.nop().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!((x.reason, x.rip), (ExitReason::Hlt, CODE + 1));
    assert!(
        !vm.vcpu.interruptible().unwrap(),
        "the HLT is in the STI shadow"
    );
    vm.vcpu.complete(vcpu::Completion::Retire).unwrap();
    assert!(vm.vcpu.interruptible().unwrap());
    assert_eq!(vm.regs().rip, CODE + 2);
    vm.vcpu.inject(Event::ExternalInterrupt(0x20)).unwrap();
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(DATA), CODE + 2, "returns after the HLT");
}
