//! The virtual PMU: exact overflow with and without skid, GLOBAL_STATUS,
//! USR/OS filtering across ring changes, frozen counters, the guest's bank.
mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::pmu::{evtsel, msr};
use vcpu::{ExitInfo, ExitReason, Vcpu};

const A_PMC0: u32 = 0x4c1;
const WRAP: u64 = 1 << 48;

fn spin(vm: &Vm) {
    vm.asm(CODE, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.inc(rax).unwrap();
        a.jmp(top).unwrap();
    });
}

fn program(vm: &mut Vm, ctr: u32, event: u64, start: u64) {
    let p = vm.vcpu.host_pmu().unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0 + ctr,
        evtsel::EN | evtsel::USR | evtsel::OS | evtsel::INT | event,
    )
    .unwrap();
    p.wrmsr(A_PMC0 + ctr, start).unwrap();
}

fn run_to_pmi(vm: &mut Vm) {
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::ExternalInterrupt);
    assert_eq!(
        x.info,
        ExitInfo::ExternalInterrupt {
            vector: vcpu::HOST_PMI_VECTOR
        }
    );
}

#[test]
fn branch_overflow_exits_after_exactly_n_branches_with_skid_zero() {
    for n in [1u64, 2, 7, 1000, 12345] {
        let mut vm = Vm::long64();
        spin(&vm);
        program(&mut vm, 0, evtsel::EVENT_BRANCHES_RETIRED, WRAP - n);
        run_to_pmi(&mut vm);
        assert_eq!(vm.counts(), (2 * n, n), "n = {n}");
        assert_eq!(vm.regs().rip, CODE, "right after the n-th JMP");
        let p = vm.vcpu.host_pmu().unwrap();
        assert_eq!(p.rdmsr(msr::IA32_PERF_GLOBAL_STATUS).unwrap(), 1);
        assert_eq!(p.rdmsr(msr::IA32_PMC0).unwrap(), 0);
        p.wrmsr(msr::IA32_PERF_GLOBAL_OVF_CTRL, 1).unwrap();
        assert_eq!(p.rdmsr(msr::IA32_PERF_GLOBAL_STATUS).unwrap(), 0);
    }
}

#[test]
fn skid_k_lands_k_instructions_later() {
    for k in [1u64, 2, 3, 10] {
        let mut vm = Vm::long64();
        spin(&vm);
        vm.vcpu.set_host_pmi_skid(k);
        program(&mut vm, 1, evtsel::EVENT_BRANCHES_RETIRED, WRAP - 100);
        run_to_pmi(&mut vm);
        let (i, b) = vm.counts();
        assert_eq!(i, 200 + k, "k = {k}");
        assert_eq!(b, 100 + k / 2);
        let p = vm.vcpu.host_pmu().unwrap();
        assert_eq!(
            p.rdmsr(msr::IA32_PERF_GLOBAL_STATUS).unwrap(),
            2,
            "counter 1's bit"
        );
        assert_eq!(
            p.rdmsr(msr::IA32_PMC0 + 1).unwrap(),
            k / 2,
            "the counter kept counting through the skid"
        );
    }
}

#[test]
fn instruction_overflow_is_exact_mid_block() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        for _ in 0..40 {
            a.inc(rax).unwrap();
        }
        a.hlt().unwrap();
    });
    program(&mut vm, 2, evtsel::EVENT_INSTRUCTIONS_RETIRED, WRAP - 17);
    run_to_pmi(&mut vm);
    assert_eq!(vm.counts().0, 17);
    assert_eq!(vm.regs().rax, 17);
}

#[test]
fn usr_and_os_filters_follow_the_ring() {
    let mut vm = Vm::long64();
    let user = CODE + 0x800;
    let lstar = HANDLERS;
    vm.vcpu.set_msr(0xc000_0082, lstar).unwrap();
    vm.asm(CODE, |a| {
        a.mov(rcx, user).unwrap();
        a.mov(r11d, 2).unwrap();
        a.sysretq().unwrap();
    });
    vm.asm(user, |a| {
        for _ in 0..4 {
            a.nop().unwrap();
        }
        a.syscall().unwrap();
    });
    vm.asm(lstar, |a| {
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    let p = vm.vcpu.host_pmu().unwrap();
    let sel = |m: u64, e: u64| evtsel::EN | m | e;
    p.wrmsr(
        msr::IA32_PERFEVTSEL0,
        sel(evtsel::USR, evtsel::EVENT_INSTRUCTIONS_RETIRED),
    )
    .unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0 + 1,
        sel(evtsel::OS, evtsel::EVENT_INSTRUCTIONS_RETIRED),
    )
    .unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0 + 2,
        sel(evtsel::USR, evtsel::EVENT_BRANCHES_RETIRED),
    )
    .unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0 + 3,
        sel(evtsel::OS, evtsel::EVENT_BRANCHES_RETIRED),
    )
    .unwrap();
    vm.run_to_hlt();
    let p = vm.vcpu.host_pmu().unwrap();
    let v: Vec<u64> = (0..4)
        .map(|i| p.rdmsr(msr::IA32_PMC0 + i).unwrap())
        .collect();
    // user: 4 nops + syscall; kernel: mov, mov, sysretq, nop, hlt.
    assert_eq!(v, vec![5, 5, 1, 1]);
}

#[test]
fn counters_are_frozen_while_disabled() {
    let mut vm = Vm::long64();
    spin(&vm);
    let p = vm.vcpu.host_pmu().unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0,
        evtsel::USR | evtsel::OS | evtsel::EVENT_INSTRUCTIONS_RETIRED,
    )
    .unwrap();
    p.wrmsr(A_PMC0, 5).unwrap();
    vm.controls(|c| c.preemption_timer = Some(100));
    assert_eq!(vm.vcpu.run().unwrap().reason, ExitReason::PreemptionTimer);
    assert_eq!(
        vm.vcpu.host_pmu().unwrap().rdmsr(msr::IA32_PMC0).unwrap(),
        5,
        "EN clear"
    );
    let p = vm.vcpu.host_pmu().unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0,
        evtsel::EN | evtsel::USR | evtsel::OS | evtsel::EVENT_INSTRUCTIONS_RETIRED,
    )
    .unwrap();
    p.wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 0).unwrap();
    vm.controls(|c| c.preemption_timer = Some(100));
    vm.vcpu.run().unwrap();
    assert_eq!(
        vm.vcpu.host_pmu().unwrap().rdmsr(msr::IA32_PMC0).unwrap(),
        5,
        "GLOBAL_CTRL clear"
    );
    vm.vcpu
        .host_pmu()
        .unwrap()
        .wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 1)
        .unwrap();
    vm.controls(|c| c.preemption_timer = Some(100));
    vm.vcpu.run().unwrap();
    assert_eq!(
        vm.vcpu.host_pmu().unwrap().rdmsr(msr::IA32_PMC0).unwrap(),
        105
    );
}

#[test]
fn guest_bank_counts_its_own_code_and_is_separate_from_the_host_bank() {
    let mut vm = Vm::long64();
    let p = vm.vcpu.host_pmu().unwrap();
    p.wrmsr(
        msr::IA32_PERFEVTSEL0,
        evtsel::EN | evtsel::OS | evtsel::EVENT_INSTRUCTIONS_RETIRED,
    )
    .unwrap();
    p.wrmsr(A_PMC0, 1000).unwrap();
    let sel = evtsel::EN | evtsel::OS | evtsel::EVENT_INSTRUCTIONS_RETIRED;
    vm.asm(CODE, |a| {
        a.mov(ecx, msr::IA32_PERFEVTSEL0 as i32).unwrap();
        a.mov(eax, sel as i32).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        for _ in 0..10 {
            a.nop().unwrap();
        }
        a.mov(ecx, msr::IA32_PMC0 as i32).unwrap();
        a.rdmsr().unwrap();
        a.mov(r8, rax).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.rdpmc().unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    let r = vm.regs();
    assert_eq!(
        r.r8, 12,
        "wrmsr + 10 nops + mov ecx (RDMSR reads before it retires)"
    );
    assert_eq!(r.rax, 15, "three more: rdmsr, mov, xor");
    assert_eq!(
        vm.vcpu.msr(msr::IA32_PMC0).unwrap(),
        17,
        "guest view after RDPMC and the HLT retired"
    );
    let host = vm.vcpu.host_pmu().unwrap().rdmsr(msr::IA32_PMC0).unwrap();
    assert_eq!(
        host,
        1000 + 20,
        "host counts everything: 4 + 10 + 5 and the HLT"
    );
    assert_eq!(vm.vcpu.guest_cpuid_0a()[0], 0x0730_0402);
}

#[test]
fn guest_counter_overflow_with_int_requests_a_guest_pmi() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        for _ in 0..20 {
            a.nop().unwrap();
        }
        a.hlt().unwrap();
    });
    vm.vcpu
        .set_msr(
            msr::IA32_PERFEVTSEL0,
            evtsel::EN | evtsel::OS | evtsel::INT | evtsel::EVENT_INSTRUCTIONS_RETIRED,
        )
        .unwrap();
    vm.vcpu.set_msr(A_PMC0, WRAP - 5).unwrap();
    vm.run_to_hlt();
    assert!(vm.vcpu.take_guest_pmi());
    assert!(!vm.vcpu.take_guest_pmi());
    assert_eq!(vm.vcpu.msr(msr::IA32_PERF_GLOBAL_STATUS).unwrap(), 1);
    assert_eq!(
        vm.vcpu.msr(msr::IA32_PMC0).unwrap(),
        16,
        "20 nops and the HLT from WRAP - 5"
    );
}

/// The CPU model every backend presents (`CpuidPolicy::baseline`) must
/// describe exactly the PMU the soft vCPU implements.
#[test]
fn baseline_cpuid_leaf_0a_matches_the_virtual_pmu() {
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 0x10000)])
            .expect("guest memory");
    let vcpu = vcpu_soft::SoftVcpu::new(mem);
    assert_eq!(
        vcpu::CpuidPolicy::baseline().lookup(0xA, 0),
        vcpu.guest_cpuid_0a()
    );
}
