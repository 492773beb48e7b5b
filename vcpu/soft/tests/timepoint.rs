//! Record/replay of an asynchronous event at a timepoint (branches, rip, rcx):
//! a kick lands wherever it lands (often between iterations of a REP
//! STOSB); the interrupt injected there is replayed at exactly the same point
//! by counting branches with the host PMU (skid 0), then single-stepping with
//! MTF until RIP and RCX match. Both runs must end in the same state.
mod support;

use std::time::Duration;

use iced_x86::code_asm::*;
use support::*;
use vcpu::pmu::{evtsel, msr};
use vcpu::{Event, ExitInfo, ExitReason, Vcpu};

fn guest(vm: &Vm) {
    // Handler: count interrupts, remember where RCX was, IRET.
    vm.asm(HANDLERS, |a| {
        a.inc(r15).unwrap();
        a.mov(r14, rcx).unwrap();
        a.iretq().unwrap();
    });
    vm.gate(0x40, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        let mut outer = a.create_label();
        a.mov(r8d, 400).unwrap();
        a.set_label(&mut outer).unwrap();
        a.mov(rdi, DATA).unwrap();
        a.mov(ecx, 200_000).unwrap();
        a.mov(eax, r8d).unwrap();
        a.rep().stosb().unwrap();
        a.dec(r8d).unwrap();
        a.jnz(outer).unwrap();
        a.hlt().unwrap();
    });
}

fn start(vm: &mut Vm) {
    let mut r = vm.regs();
    r.rflags = 0x202;
    vm.vcpu.set_regs(&r).unwrap();
}

#[test]
fn an_interrupt_between_rep_iterations_replays_at_the_same_timepoint() {
    // Record.
    let mut rec = Vm::long64();
    guest(&rec);
    start(&mut rec);
    let k = rec.vcpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(15));
        k.kick();
    });
    let x = rec.vcpu.run().unwrap();
    t.join().unwrap();
    if x.reason == ExitReason::Hlt {
        println!("skipped: the guest finished before the kick (machine too fast)");
        return;
    }
    assert_eq!(
        x.info,
        ExitInfo::ExternalInterrupt {
            vector: vcpu::HOST_KICK_VECTOR
        }
    );
    let r = rec.regs();
    let (_, branches) = rec.counts();
    let (at_rip, at_rcx) = (r.rip, r.rcx);
    println!("event at branches {branches}, rip {at_rip:#x}, rcx {at_rcx}");
    assert!(rec.vcpu.interruptible().unwrap());
    rec.vcpu.inject(Event::ExternalInterrupt(0x40)).unwrap();
    rec.run_to_hlt();
    let recorded = (rec.regs(), rec.counts());
    assert_eq!(recorded.0.r15, 1);

    // Replay: overflow after exactly `branches` branches, then MTF to (rip, rcx).
    let mut rep = Vm::long64();
    guest(&rep);
    start(&mut rep);
    if branches > 0 {
        let p = rep.vcpu.host_pmu().unwrap();
        p.wrmsr(0x4c1, (1u64 << 48) - branches).unwrap();
        p.wrmsr(
            msr::IA32_PERFEVTSEL0,
            evtsel::EN | evtsel::USR | evtsel::OS | evtsel::INT | evtsel::EVENT_BRANCHES_RETIRED,
        )
        .unwrap();
        let x = rep.vcpu.run().unwrap();
        assert_eq!(
            x.info,
            ExitInfo::ExternalInterrupt {
                vector: vcpu::HOST_PMI_VECTOR
            }
        );
        assert_eq!(rep.counts().1, branches);
        rep.vcpu
            .host_pmu()
            .unwrap()
            .wrmsr(msr::IA32_PERFEVTSEL0, 0)
            .unwrap();
    }
    rep.controls(|c| c.monitor_trap_flag = true);
    let mut steps = 0u64;
    while !(rep.regs().rip == at_rip && rep.regs().rcx == at_rcx && rep.counts().1 == branches) {
        let x = rep.vcpu.run().unwrap();
        assert_eq!(x.reason, ExitReason::MonitorTrapFlag);
        steps += 1;
        assert!(rep.counts().1 <= branches, "overshot the timepoint");
    }
    rep.controls(|c| c.monitor_trap_flag = false);
    println!("landed after {steps} MTF steps");
    rep.vcpu.inject(Event::ExternalInterrupt(0x40)).unwrap();
    rep.run_to_hlt();
    assert_eq!((rep.regs(), rep.counts()), recorded);
}
