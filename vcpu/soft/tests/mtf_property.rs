//! Property: single-stepping a guest with the monitor trap flag reaches the
//! same registers, memory and retired counts as running it freely.
mod support;

use iced_x86::code_asm::*;
use proptest::prelude::*;
use support::*;
use vcpu::{ExitReason, Vcpu};

const REGS: [AsmRegister64; 8] = [rax, rbx, rcx, rdx, rsi, r8, r9, r10];

fn emit(a: &mut CodeAssembler, ops: &[(u8, u8, u8, u32)]) {
    a.mov(rbp, DATA).unwrap();
    for &(k, r1, r2, imm) in ops {
        let (x, y) = (REGS[r1 as usize % 8], REGS[r2 as usize % 8]);
        let off = (imm % 256) as i32 * 8;
        match k % 20 {
            0 => a.add(x, y).unwrap(),
            1 => a.sub(x, y).unwrap(),
            2 => a.adc(x, y).unwrap(),
            3 => a.sbb(x, y).unwrap(),
            4 => a.xor(x, imm as i32).unwrap(),
            5 => a.shl(x, imm % 64).unwrap(),
            6 => a.sar(x, imm % 64).unwrap(),
            7 => a.rcl(x, imm % 5).unwrap(),
            8 => a.imul_2(x, y).unwrap(),
            9 => a.dec(x).unwrap(),
            10 => a.mov(x, qword_ptr(rbp + off)).unwrap(),
            11 => a.mov(qword_ptr(rbp + off), x).unwrap(),
            12 => {
                a.push(x).unwrap();
                a.pop(y).unwrap();
            }
            13 => {
                let mut l = a.create_label();
                a.cmp(x, y).unwrap();
                a.jl(l).unwrap();
                a.inc(x).unwrap();
                a.set_label(&mut l).unwrap();
                a.nop().unwrap();
            }
            14 => {
                a.lea(rdi, qword_ptr(rbp + 0x800 + off)).unwrap();
                a.mov(ecx, imm % 9).unwrap();
                a.rep().stosb().unwrap();
            }
            15 => a.cmovg(x, y).unwrap(),
            16 => a.bt(x, y).unwrap(),
            17 => {
                a.mov(ecx, 1 + imm % 4).unwrap();
                let mut top = a.create_label();
                a.set_label(&mut top).unwrap();
                a.add(r11, rcx).unwrap();
                a.xor(r11, x).unwrap();
                a.loop_(top).unwrap();
            }
            18 => a.xchg(qword_ptr(rbp + off), x).unwrap(),
            _ => a.popcnt(x, y).unwrap(),
        }
    }
    a.hlt().unwrap();
}

fn snapshot(vm: &Vm) -> (vcpu::Regs, (u64, u64), Vec<u64>) {
    let mem = (0..0x300).map(|i| vm.read_u64(DATA + 8 * i)).collect();
    (vm.regs(), vm.counts(), mem)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn mtf_stepping_equals_free_running(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>()), 1..60),
        seed in any::<u64>(),
    ) {
        let setup = |vm: &mut Vm| {
            vm.asm(CODE, |a| emit(a, &ops));
            let mut r = vm.regs();
            let mut s = seed;
            let mut g = r.gprs();
            for (i, x) in g.iter_mut().enumerate() {
                if i != 4 && i != 5 {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    *x = s;
                }
            }
            r.set_gprs(g);
            vm.vcpu.set_regs(&r).unwrap();
        };
        let mut free = Vm::long64();
        setup(&mut free);
        free.run_to_hlt();
        let mut stepped = Vm::long64();
        setup(&mut stepped);
        stepped.controls(|c| c.monitor_trap_flag = true);
        let mut steps = 0u64;
        loop {
            let x = stepped.vcpu.run().unwrap();
            match x.reason {
                ExitReason::MonitorTrapFlag => steps += 1,
                ExitReason::Hlt => {
                    stepped.vcpu.complete(vcpu::Completion::Retire).unwrap();
                    break;
                }
                r => panic!("{r:?}"),
            }
        }
        prop_assert!(steps + 1 >= free.counts().0, "one MTF exit per instruction but the HLT");
        prop_assert_eq!(snapshot(&free), snapshot(&stepped));
    }
}
