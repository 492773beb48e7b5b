//! REP string instructions: zero count, direction, faults between iterations,
//! termination conditions, and MTF stepping per iteration.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{ExitReason, Vcpu};

#[test]
fn zero_count_retires_once_without_touching_memory() {
    let mut vm = Vm::long64();
    vm.write_u64(DATA, 0x1111);
    vm.asm(CODE, |a| {
        a.mov(rdi, DATA).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.mov(eax, 0x22).unwrap();
        a.rep().stosb().unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(DATA), 0x1111);
    assert_eq!(vm.regs().rdi, DATA);
    assert_eq!(vm.counts().0, 5, "four instructions and the HLT");
}

#[test]
fn direction_flag_copies_backwards() {
    let mut vm = Vm::long64();
    vm.write(DATA, b"abcdefgh");
    vm.asm(CODE, |a| {
        a.std().unwrap();
        a.mov(rsi, DATA + 7).unwrap();
        a.mov(rdi, DATA + 0x107).unwrap();
        a.mov(ecx, 8).unwrap();
        a.rep().movsb().unwrap();
        a.cld().unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    let mut b = [0u8; 8];
    vm_memory::Bytes::read_slice(&vm.mem, &mut b, vm_memory::GuestAddress(DATA + 0x100)).unwrap();
    assert_eq!(&b, b"abcdefgh");
    assert_eq!(vm.regs().rsi, DATA - 1);
}

#[test]
fn page_fault_mid_way_leaves_count_of_remaining_iterations() {
    let mut vm = Vm::long64();
    vm.write_u64(PT + 8, 0); // PAGED+0x1000 not present
    vm.asm(HANDLERS, |a| {
        a.pop(rax).unwrap();
        a.hlt().unwrap();
    });
    vm.gate(14, HANDLERS, 0, 0, false);
    let rep_at = vm.asm(CODE, |a| {
        a.mov(rdi, PAGED + 0x1000 - 8).unwrap();
        a.mov(ecx, 100).unwrap();
        a.mov(eax, 0xab).unwrap();
    });
    vm.asm(CODE + rep_at, |a| {
        a.rep().stosw().unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(r.rcx, 96, "4 words stored before the fault");
    assert_eq!(r.rdi, PAGED + 0x1000);
    assert_eq!(r.rax, 2, "error code: write, not present");
    let f = vm.read_u64(RSP0 - 40);
    let _ = f;
    let ret_rip = vm.read_u64(STACK - 40);
    assert_eq!(ret_rip, CODE + rep_at, "fault RIP is the REP instruction");
    assert_eq!(
        vm.counts().0,
        3 + 2,
        "three MOVs, then the handler's POP and HLT: the REP did not retire"
    );
}

#[test]
fn repne_scasb_stops_on_match_and_repe_cmpsb_on_mismatch() {
    let mut vm = Vm::long64();
    vm.write(DATA, b"xxxxZyyy");
    vm.write(DATA + 0x100, b"abcdEfgh");
    vm.write(DATA + 0x200, b"abcdXfgh");
    vm.asm(CODE, |a| {
        a.mov(rdi, DATA).unwrap();
        a.mov(ecx, 8).unwrap();
        a.mov(al, b'Z' as i32).unwrap();
        a.repne().scasb().unwrap();
        a.mov(r8, rcx).unwrap();
        a.mov(r9, rdi).unwrap();
        a.mov(rsi, DATA + 0x100).unwrap();
        a.mov(rdi, DATA + 0x200).unwrap();
        a.mov(ecx, 8).unwrap();
        a.repe().cmpsb().unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!((r.r8, r.r9), (3, DATA + 5));
    assert_eq!(r.rcx, 3);
    assert_eq!(r.rsi, DATA + 0x105);
    assert_eq!(r.rflags & 0x40, 0, "ZF clear: mismatch");
}

#[test]
fn mtf_visits_every_iteration_and_counts_once() {
    let mut vm = Vm::long64();
    let rep_at = vm.asm(CODE, |a| {
        a.mov(rdi, DATA).unwrap();
        a.mov(ecx, 5).unwrap();
    });
    vm.asm(CODE + rep_at, |a| {
        a.rep().stosq().unwrap();
        a.hlt().unwrap();
    });
    vm.controls(|c| c.monitor_trap_flag = true);
    let mut seen = vec![];
    loop {
        let x = vm.vcpu.run().unwrap();
        match x.reason {
            ExitReason::MonitorTrapFlag => {
                let r = vm.regs();
                seen.push((r.rip, r.rcx, vm.counts().0));
            }
            ExitReason::Hlt => break,
            other => panic!("{other:?}"),
        }
    }
    let rep = CODE + rep_at;
    assert_eq!(rep_at, 15);
    let expect = vec![
        (CODE + 10, 0, 1),
        (rep, 5, 2),
        (rep, 4, 2),
        (rep, 3, 2),
        (rep, 2, 2),
        (rep, 1, 2),
        (rep + 3, 0, 3),
    ];
    assert_eq!(seen, expect);
}
