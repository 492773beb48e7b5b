//! Segment loads set the descriptor's accessed bit in memory, as the SDM
//! says (3.4.5.1) and hardware virtualization does: a replay on another
//! backend compares guest memory, GDT included.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::Vcpu;

const ACCESSED: u64 = 1 << 40;

#[test]
fn segment_loads_set_the_descriptor_accessed_bit() {
    let mut vm = Vm::long64();
    for off in [0x10, 0x20] {
        let d = vm.read_u64(GDT + off);
        vm.write_u64(GDT + off, d & !ACCESSED);
    }
    vm.asm(CODE, |a| {
        a.mov(eax, KDATA as u32).unwrap();
        a.mov(ds, ax).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_ne!(
        vm.read_u64(GDT + 0x10) & ACCESSED,
        0,
        "MOV DS sets the accessed bit of the descriptor it loads"
    );
    assert_eq!(
        vm.read_u64(GDT + 0x20) & ACCESSED,
        0,
        "a descriptor nobody loaded is left alone"
    );
    assert_eq!(
        vm.vcpu.special_regs().unwrap().ds.type_,
        3,
        "the loaded segment's type includes the bit"
    );
}
