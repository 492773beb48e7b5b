//! Self-modifying code: stores into translated code are seen by the next fetch.
mod support;

use iced_x86::code_asm::*;
use support::*;

#[test]
fn store_into_the_current_block_changes_the_next_instruction() {
    let mut vm = Vm::long64();
    // mov byte [rip+X], 7 patches the immediate of the following `mov eax, 1`.
    // c6 05 01 00 00 00 07: mov byte [rip+1], 7 (the immediate of the next instruction).
    vm.write(
        CODE,
        &[0xc6, 0x05, 0x01, 0, 0, 0, 0x07, 0xb8, 0x01, 0, 0, 0, 0xf4],
    );
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 7);
}

#[test]
fn patching_an_already_executed_loop_body_takes_effect() {
    let mut vm = Vm::long64();
    // body: add rax, imm8 (48 83 c0 01); after the first pass patch imm to 10.
    let body = CODE + 0x100;
    vm.write(body, &[0x48, 0x83, 0xc0, 0x01, 0xc3]); // add rax, 1; ret
    vm.asm(CODE, |a| {
        a.xor(eax, eax).unwrap();
        a.mov(rbx, body).unwrap();
        a.call(rbx).unwrap();
        a.mov(byte_ptr(rbx + 3), 10).unwrap();
        a.call(rbx).unwrap();
        a.call(rbx).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 21);
}

#[test]
fn writes_through_another_mapping_of_the_code_page_invalidate() {
    let mut vm = Vm::long64();
    // PAGED maps (4 KiB) the physical page of `body`: write through the alias.
    let body = CODE + 0x2000;
    vm.write_u64(PT, body | 3);
    vm.write(body, &[0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3]); // mov eax, 1; ret
    vm.asm(CODE, |a| {
        a.mov(rbx, body).unwrap();
        a.call(rbx).unwrap();
        a.mov(r8, rax).unwrap();
        a.mov(rsi, PAGED).unwrap();
        a.mov(byte_ptr(rsi + 1), 9).unwrap();
        a.call(rbx).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!((vm.regs().r8, vm.regs().rax), (1, 9));
}

#[test]
fn a_full_translation_cache_is_flushed_and_execution_goes_on() {
    // More distinct blocks than the cache holds (65536): 70000 tiny blocks
    // chained by jumps; every one must still run.
    let mut vm = Vm::long64();
    let n = 70_000u64;
    let mut code = Vec::with_capacity(n as usize * 6 + 1);
    for _ in 0..n {
        code.extend_from_slice(&[0x48, 0xff, 0xc0]); // inc rax
        code.extend_from_slice(&[0xeb, 0x00]); // jmp +0 (to the next block)
    }
    code.push(0xf4);
    vm.write(CODE, &code);
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, n);
    assert_eq!(vm.counts(), (2 * n + 1, n));
}
