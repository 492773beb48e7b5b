//! Straight-line code, loops, calls and the retired counters.
mod support;

use iced_x86::code_asm::*;
use support::*;

#[test]
fn loop_sums_and_counts_exactly() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        let mut top = a.create_label();
        a.mov(rcx, 1000u64).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut top).unwrap();
        a.add(rax, rcx).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
    });
    let x = vm.run_to_hlt();
    assert_eq!(x.instruction_len, 1);
    let r = vm.regs();
    assert_eq!(r.rax, 500500);
    assert_eq!(r.rcx, 0);
    // 2 + 3*1000 + the HLT, which retires when the monitor completes it.
    assert_eq!(vm.counts(), (2 + 3000 + 1, 1000));
}

#[test]
fn call_ret_push_pop_memory() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        let mut f = a.create_label();
        a.mov(rbx, DATA).unwrap();
        a.mov(qword_ptr(rbx), 7i32).unwrap();
        a.push(rbx).unwrap();
        a.call(f).unwrap();
        a.pop(rdx).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut f).unwrap();
        a.mov(rax, qword_ptr(rsp + 8)).unwrap();
        a.mov(rax, qword_ptr(rax)).unwrap();
        a.imul_3(rax, rax, 6).unwrap();
        a.ret().unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(r.rax, 42);
    assert_eq!(r.rdx, DATA);
    assert_eq!(r.rsp, STACK);
    assert_eq!(vm.counts().1, 2, "call + ret");
}

#[test]
fn string_ops_and_flags() {
    let mut vm = Vm::long64();
    vm.write(DATA, b"hello world");
    vm.asm(CODE, |a| {
        a.mov(rsi, DATA).unwrap();
        a.mov(rdi, DATA + 0x100).unwrap();
        a.mov(rcx, 11u64).unwrap();
        a.rep().movsb().unwrap();
        a.mov(rsi, DATA).unwrap();
        a.mov(rdi, DATA + 0x100).unwrap();
        a.mov(rcx, 11u64).unwrap();
        a.repe().cmpsb().unwrap();
        a.setz(al).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(r.rax & 0xff, 1);
    assert_eq!(r.rcx, 0);
    let mut b = [0u8; 11];
    vm_memory::Bytes::read_slice(&vm.mem, &mut b, vm_memory::GuestAddress(DATA + 0x100)).unwrap();
    assert_eq!(&b, b"hello world");
}
