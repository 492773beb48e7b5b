//! Every exit reason the soft vCPU produces: SDM number, qualification,
//! instruction length, and the completion protocol.
mod support;

use std::time::Duration;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{
    Completion, EptQualification, ExitInfo, ExitReason, IoDirection, IoQualification, Vcpu,
    VcpuError,
};

/// Guest-physical address outside RAM, mapped at PAGED + 0x3000.
const MMIO_GPA: u64 = 0xfed0_0000;
const MMIO_LIN: u64 = PAGED + 0x3000;

fn vm_with_mmio() -> Vm {
    let vm = Vm::long64();
    vm.write_u64(PT + 3 * 8, MMIO_GPA | 3);
    vm
}

#[test]
fn exit_numbers() {
    for (r, n) in [
        (ExitReason::ExternalInterrupt, 1),
        (ExitReason::TripleFault, 2),
        (ExitReason::InterruptWindow, 7),
        (ExitReason::Cpuid, 10),
        (ExitReason::Hlt, 12),
        (ExitReason::Rdtsc, 16),
        (ExitReason::IoInstruction, 30),
        (ExitReason::Rdmsr, 31),
        (ExitReason::Wrmsr, 32),
        (ExitReason::MonitorTrapFlag, 37),
        (ExitReason::EptViolation, 48),
        (ExitReason::Rdtscp, 51),
        (ExitReason::PreemptionTimer, 52),
        (ExitReason::Rdrand, 57),
        (ExitReason::Rdseed, 61),
    ] {
        assert_eq!(r.number(), n);
    }
}

#[test]
fn cpuid_exits_with_leaf_and_length_and_retires_with_the_answer() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.mov(eax, 7).unwrap();
        a.mov(ecx, 1).unwrap();
        a.cpuid().unwrap();
        a.hlt().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::Cpuid);
    assert_eq!(x.instruction_len, 2);
    assert_eq!(x.rip, CODE + 10);
    assert_eq!(
        x.info,
        ExitInfo::Cpuid {
            leaf: 7,
            subleaf: 1
        }
    );
    assert_eq!(vm.counts().0, 2, "CPUID has not retired yet");
    assert!(matches!(
        vm.vcpu.run(),
        Err(VcpuError::ExitNotCompleted(ExitReason::Cpuid))
    ));
    assert!(
        vm.vcpu.complete(Completion::Rdtsc(1)).is_err(),
        "wrong completion kind"
    );
    vm.vcpu
        .complete(Completion::Cpuid {
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        })
        .unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len, x.rip),
        (ExitReason::Hlt, 1, CODE + 12)
    );
    let r = vm.regs();
    assert_eq!((r.rax, r.rbx, r.rcx, r.rdx), (1, 2, 3, 4));
    assert_eq!(vm.counts().0, 3);
}

#[test]
fn io_exits_carry_the_sdm_qualification() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.in_(al, 0x60).unwrap();
        a.mov(dx, 0x3f8).unwrap();
        a.mov(eax, 0x1234_5678).unwrap();
        a.out(dx, eax).unwrap();
        a.hlt().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len),
        (ExitReason::IoInstruction, 2)
    );
    let q = IoQualification {
        size: 1,
        direction: IoDirection::In,
        string: false,
        rep: false,
        immediate: true,
        port: 0x60,
    };
    assert_eq!(x.qualification, q.encode());
    assert_eq!(
        x.info,
        ExitInfo::Io {
            qual: q,
            out_value: None
        }
    );
    vm.vcpu.complete(Completion::IoIn(0xab)).unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len),
        (ExitReason::IoInstruction, 1)
    );
    let q = IoQualification::decode(x.qualification).unwrap();
    assert_eq!(
        (q.size, q.direction, q.immediate, q.port),
        (4, IoDirection::Out, false, 0x3f8)
    );
    assert_eq!(
        x.info,
        ExitInfo::Io {
            qual: q,
            out_value: Some(0x1234_5678)
        }
    );
    assert!(
        vm.vcpu.complete(Completion::IoIn(0)).is_err(),
        "OUT takes Retire"
    );
    vm.vcpu.complete(Completion::Retire).unwrap();
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 0x1234_5678);
    let mut vm2 = Vm::long64();
    vm2.asm(CODE, |a| {
        a.in_(al, 0x60).unwrap();
        a.hlt().unwrap();
    });
    vm2.vcpu.run().unwrap();
    vm2.vcpu.complete(Completion::IoIn(0xab)).unwrap();
    vm2.run_to_hlt();
    assert_eq!(vm2.regs().rax & 0xff, 0xab);
}

#[test]
fn rep_ins_exits_once_per_element_and_retires_after_the_last() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.mov(rdi, DATA).unwrap();
        a.mov(ecx, 3).unwrap();
        a.mov(dx, 0x71).unwrap();
        a.rep().insw().unwrap();
        a.hlt().unwrap();
    });
    for i in 0..3u32 {
        let x = vm.vcpu.run().unwrap();
        assert_eq!(
            (x.reason, x.instruction_len),
            (ExitReason::IoInstruction, 3),
            "rep insw is 66 f3 6d"
        );
        let q = IoQualification::decode(x.qualification).unwrap();
        assert!(
            q.string && q.rep && q.direction == IoDirection::In && q.size == 2 && q.port == 0x71
        );
        assert_eq!(vm.regs().rcx, 3 - i as u64, "RCX counts remaining elements");
        assert_eq!(vm.counts().0, 3, "not retired until the last element");
        vm.vcpu.complete(Completion::IoIn(0x1100 + i)).unwrap();
    }
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(DATA) & 0xffff_ffff_ffff, 0x1102_1101_1100);
    assert_eq!(vm.counts().0, 5, "four instructions and the HLT");
}

#[test]
fn hlt_rdtsc_rdtscp_rdrand_rdseed_exits() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        a.rdtsc().unwrap();
        a.mov(r8, rax).unwrap();
        a.rdtscp().unwrap();
        a.mov(r9, rcx).unwrap();
        a.rdrand(rbx).unwrap();
        a.setc(r10b).unwrap();
        a.rdseed(esi).unwrap();
        a.setc(r11b).unwrap();
        a.hlt().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len, x.rip),
        (ExitReason::Rdtsc, 2, CODE)
    );
    vm.vcpu.complete(Completion::Rdtsc(0x1_0000_0005)).unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!((x.reason, x.instruction_len), (ExitReason::Rdtscp, 3));
    vm.vcpu
        .complete(Completion::Rdtscp { tsc: 9, aux: 42 })
        .unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len, x.info.clone()),
        (ExitReason::Rdrand, 4, ExitInfo::Random { size: 8 })
    );
    vm.vcpu
        .complete(Completion::Random {
            value: 77,
            valid: true,
        })
        .unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len, x.info.clone()),
        (ExitReason::Rdseed, 3, ExitInfo::Random { size: 4 })
    );
    vm.vcpu
        .complete(Completion::Random {
            value: 5,
            valid: false,
        })
        .unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!((x.reason, x.instruction_len), (ExitReason::Hlt, 1));
    vm.vcpu.complete(Completion::Retire).unwrap();
    let r = vm.regs();
    assert_eq!(r.r8, 5);
    assert_eq!(r.rdx, 0);
    assert_eq!(r.r9, 42);
    assert_eq!((r.rbx, r.r10 & 0xff), (77, 1));
    assert_eq!(
        (r.rsi, r.r11 & 0xff),
        (0, 0),
        "invalid: CF = 0 and zero destination"
    );
}

#[test]
fn controls_off_means_no_exit() {
    let mut vm = Vm::long64();
    vm.controls(|c| {
        c.rdtsc_exiting = false;
        c.rdrand_exiting = false;
        c.io_bitmap = vcpu::IoBitmap::none();
    });
    vm.asm(CODE, |a| {
        a.rdtsc().unwrap();
        a.rdrand(rbx).unwrap();
        a.in_(al, 0x60).unwrap();
        a.hlt().unwrap();
    });
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax & 0xff, 0xff, "no device: all ones");
}

#[test]
fn msr_bitmap_selects_rdmsr_and_wrmsr_exits() {
    let mut vm = Vm::long64();
    vm.controls(|c| {
        c.msr_bitmap.read.push(0x1234);
        c.msr_bitmap.write.push(0xc000_0080);
        c.msr_bitmap.unknown_exit = false;
    });
    vm.asm(HANDLERS, |a| {
        a.hlt().unwrap();
    });
    vm.gate(13, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.mov(ecx, 0x1234).unwrap();
        a.rdmsr().unwrap();
        a.mov(ecx, 0xc000_0080u32 as i32).unwrap();
        a.mov(eax, 0x501).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.mov(ecx, 0x4321).unwrap();
        a.rdmsr().unwrap(); // unknown, not selected: #GP
        a.hlt().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len, x.info.clone()),
        (ExitReason::Rdmsr, 2, ExitInfo::Rdmsr { index: 0x1234 })
    );
    vm.vcpu
        .complete(Completion::Rdmsr(0xaaaa_bbbb_cccc_dddd))
        .unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::Wrmsr);
    assert_eq!(
        x.info,
        ExitInfo::Wrmsr {
            index: 0xc000_0080,
            value: 0x501
        }
    );
    vm.vcpu.complete(Completion::Retire).unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::Hlt);
    assert_eq!(vm.regs().rip, HANDLERS, "#GP for the unknown MSR");
    assert_eq!(vm.read_u64(STACK - 48), 0, "#GP(0)");
    assert_eq!(
        vm.read_u64(STACK - 40),
        CODE + 0x1a,
        "at the faulting RDMSR"
    );
}

#[test]
fn completion_fault_delivers_instead_of_retiring() {
    let mut vm = Vm::long64();
    vm.controls(|c| c.msr_bitmap.write.push(0x10));
    vm.asm(HANDLERS, |a| {
        a.hlt().unwrap();
    });
    vm.gate(13, HANDLERS, 0, 0, false);
    vm.asm(CODE, |a| {
        a.mov(ecx, 0x10).unwrap();
        a.wrmsr().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::Wrmsr);
    vm.vcpu
        .complete(Completion::Fault(vcpu::Exception::GP0))
        .unwrap();
    vm.run_to_hlt();
    assert_eq!(vm.read_u64(STACK - 40), CODE + 5);
    assert_eq!(
        vm.counts().0,
        2,
        "the MOV and the handler's HLT: the WRMSR did not retire"
    );
}

#[test]
fn mmio_read_write_fetch_and_read_modify_write() {
    let mut vm = vm_with_mmio();
    vm.asm(CODE, |a| {
        a.mov(rsi, MMIO_LIN).unwrap();
        a.mov(eax, dword_ptr(rsi + 0x10)).unwrap();
        a.mov(word_ptr(rsi + 0x20), 0x5566).unwrap();
        a.add(dword_ptr(rsi + 0x30), eax).unwrap();
        a.hlt().unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    assert_eq!(
        (x.reason, x.instruction_len, x.rip),
        (ExitReason::EptViolation, 3, CODE + 10)
    );
    let q = EptQualification::decode(x.qualification);
    assert!(q.read && !q.write && !q.fetch && q.linear_valid && q.translated_access);
    assert_eq!(
        x.info,
        ExitInfo::Mmio {
            gpa: MMIO_GPA + 0x10,
            linear: Some(MMIO_LIN + 0x10),
            size: 4,
            write_data: None,
            fetch: false
        }
    );
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&7u32.to_le_bytes());
    vm.vcpu.complete(Completion::MmioRead(b)).unwrap();
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::EptViolation);
    assert!(EptQualification::decode(x.qualification).write);
    match x.info {
        ExitInfo::Mmio {
            gpa,
            size: 2,
            write_data: Some(d),
            ..
        } => {
            assert_eq!(gpa, MMIO_GPA + 0x20);
            assert_eq!(&d[..2], &[0x66, 0x55]);
        }
        other => panic!("{other:?}"),
    }
    vm.vcpu.complete(Completion::Retire).unwrap();
    // add [mmio], eax: a read exit, then a write exit with the sum.
    let x = vm.vcpu.run().unwrap();
    assert!(matches!(
        x.info,
        ExitInfo::Mmio {
            write_data: None,
            size: 4,
            ..
        }
    ));
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&100u32.to_le_bytes());
    vm.vcpu.complete(Completion::MmioRead(b)).unwrap();
    let x = vm.vcpu.run().unwrap();
    match x.info {
        ExitInfo::Mmio {
            write_data: Some(d),
            size: 4,
            ..
        } => assert_eq!(u32::from_le_bytes([d[0], d[1], d[2], d[3]]), 107),
        other => panic!("{other:?}"),
    }
    vm.vcpu.complete(Completion::Retire).unwrap();
    vm.run_to_hlt();
    assert_eq!(vm.counts().0, 5);
    // Instruction fetch from MMIO.
    let mut vm = vm_with_mmio();
    vm.asm(CODE, |a| {
        a.mov(rax, MMIO_LIN + 0x40).unwrap();
        a.jmp(rax).unwrap();
    });
    let x = vm.vcpu.run().unwrap();
    let q = EptQualification::decode(x.qualification);
    assert_eq!(x.reason, ExitReason::EptViolation);
    assert!(q.fetch && !q.read && !q.write);
    assert_eq!(x.rip, MMIO_LIN + 0x40);
    assert_eq!(x.instruction_len, 0);
}

#[test]
fn preemption_timer_counts_retired_instructions_exactly() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.inc(rax).unwrap();
        a.jmp(top).unwrap();
    });
    vm.controls(|c| c.preemption_timer = Some(1001));
    let x = vm.vcpu.run().unwrap();
    assert_eq!(x.reason, ExitReason::PreemptionTimer);
    assert_eq!(vm.counts().0, 1001);
    assert_eq!(vm.regs().rax, 501);
    assert_eq!(
        vm.vcpu.controls().preemption_timer,
        Some(0),
        "saved value counts down"
    );
    vm.controls(|c| c.preemption_timer = Some(10));
    vm.vcpu.run().unwrap();
    assert_eq!(vm.counts().0, 1011);
}

#[test]
fn kick_from_another_thread_exits_with_the_kick_vector() {
    let mut vm = Vm::long64();
    vm.asm(CODE, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.jmp(top).unwrap();
    });
    let k = vm.vcpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        k.kick();
    });
    let x = vm.vcpu.run().unwrap();
    t.join().unwrap();
    assert_eq!(x.reason, ExitReason::ExternalInterrupt);
    assert_eq!(
        x.info,
        ExitInfo::ExternalInterrupt {
            vector: vcpu::HOST_KICK_VECTOR
        }
    );
    // A kick while not running makes the next run return at once.
    vm.vcpu.kicker().kick();
    let n = vm.counts().0;
    assert_eq!(vm.vcpu.run().unwrap().reason, ExitReason::ExternalInterrupt);
    assert_eq!(vm.counts().0, n);
}

#[test]
fn halted_vcpu_without_hlt_exiting_waits_for_a_kick() {
    let mut vm = Vm::long64();
    vm.controls(|c| c.hlt_exiting = false);
    vm.asm(CODE, |a| {
        a.hlt().unwrap();
    });
    let k = vm.vcpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        k.kick();
    });
    let x = vm.vcpu.run().unwrap();
    t.join().unwrap();
    assert_eq!(x.reason, ExitReason::ExternalInterrupt);
    assert_eq!(vm.regs().rip, CODE + 1);
}

#[test]
fn idt_in_mmio_is_an_internal_error_not_a_panic() {
    let mut vm = Vm::long64();
    let mut s = vm.vcpu.special_regs().unwrap();
    s.idt = vcpu::DescriptorTable {
        base: MMIO_LIN,
        limit: 0xfff,
    };
    vm.vcpu.set_special_regs(&s).unwrap();
    vm.write_u64(PT + 3 * 8, MMIO_GPA | 3);
    vm.asm(CODE, |a| {
        a.ud2().unwrap();
    });
    match vm.vcpu.run() {
        Err(VcpuError::Internal { rip, bytes, what }) => {
            assert_eq!(rip, CODE);
            assert_eq!(bytes, vec![0x0f, 0x0b], "the instruction's bytes");
            assert!(what.contains("non-RAM"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_writes_to_code_are_seen_after_host_wrote() {
    let mut vm = Vm::long64();
    vm.write(CODE, &[0xb8, 1, 0, 0, 0, 0xf4]); // mov eax, 1; hlt
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 1);
    vm.write(CODE, &[0xb8, 2, 0, 0, 0, 0xf4]);
    vm.vcpu.host_wrote(CODE, 6);
    vm.set_rip(CODE);
    vm.run_to_hlt();
    assert_eq!(vm.regs().rax, 2);
}
