//! Tiny real-mode guests (KVM emulates ring-0 code here at ~1 µs per
//! instruction, so each guest is a handful of instructions).

use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use super::*;
use crate::state::FastPath;

const CODE: u64 = 0x1000;

/// A vCPU in real mode at CS:IP = 0:0x1000 with `code` there, RAM at
/// 0..`ram`, or `None` after printing why KVM tests are skipped.
fn guest(code: &[u8], ram: u64) -> Option<(KvmVm, KvmVcpu)> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap();
    mem.write_slice(code, GuestAddress(CODE)).unwrap();
    let vm = match KvmVm::new(mem) {
        Ok(vm) => vm,
        Err(e @ (KvmSetupError::NoDevice | KvmSetupError::Open(_))) => {
            println!("skipped: {e}");
            return None;
        }
        Err(e) => panic!("/dev/kvm is present but the VM failed: {e}"),
    };
    let cpuid = vm.host_cpuid().unwrap();
    let mut vcpu = vm.create_vcpu(0, &cpuid).unwrap();
    let mut s = vcpu.special_regs().unwrap();
    s.cs.base = 0;
    s.cs.selector = 0;
    vcpu.set_special_regs(&s).unwrap();
    vcpu.set_regs(&Regs {
        rip: CODE,
        rflags: 2,
        rsp: 0x7000,
        ..Regs::default()
    })
    .unwrap();
    Some((vm, vcpu))
}

fn io(exit: &VmExit) -> (IoQualification, Option<u32>) {
    match exit.info {
        ExitInfo::Io { qual, out_value } => (qual, out_value),
        ref other => panic!("expected an I/O exit, got {other:?} ({exit:?})"),
    }
}

fn set_ivt(vm: &KvmVm, vector: u8, handler: u16) {
    let entry = (handler as u32).to_le_bytes(); // offset, segment 0
    vm.memory()
        .write_slice(&entry, GuestAddress(vector as u64 * 4))
        .unwrap();
}

#[test]
fn port_io_exits_and_completions() {
    let code = [
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xB0, 0x41, // mov al, 0x41
        0xEE, // out dx, al
        0xEC, // in al, dx
        0xE6, 0x80, // out 0x80, al
        0xF4, // hlt
    ];
    let Some((_vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    let e = v.run().unwrap();
    assert_eq!(e.reason, ExitReason::IoInstruction);
    assert_eq!((e.rip, e.instruction_len), (CODE + 5, 1));
    let (q, val) = io(&e);
    assert_eq!(
        (q.port, q.size, q.direction, q.immediate, q.string),
        (0x3f8, 1, IoDirection::Out, false, false)
    );
    assert_eq!(val, Some(0x41));
    assert!(matches!(
        v.run(),
        Err(VcpuError::ExitNotCompleted(ExitReason::IoInstruction))
    ));
    assert!(matches!(
        v.complete(Completion::IoIn(1)),
        Err(VcpuError::BadCompletion { .. })
    ));
    v.complete(Completion::Retire).unwrap();
    assert_eq!(v.regs().unwrap().rip, CODE + 6, "retired at complete()");

    let e = v.run().unwrap();
    let (q, val) = io(&e);
    assert_eq!((q.port, q.direction, val), (0x3f8, IoDirection::In, None));
    v.complete(Completion::IoIn(0x5A)).unwrap();
    assert_eq!(v.regs().unwrap().rax & 0xff, 0x5A);

    let e = v.run().unwrap();
    let (q, val) = io(&e);
    assert_eq!(
        (q.port, q.immediate, val, e.instruction_len),
        (0x80, true, Some(0x5A), 2)
    );
    v.complete(Completion::Retire).unwrap();

    let e = v.run().unwrap();
    assert_eq!((e.reason, e.rip), (ExitReason::Hlt, CODE + 9));
    v.complete(Completion::Retire).unwrap();
    assert_eq!(v.exit_count(), 4);
    assert_eq!(v.retired(), None);
}

#[test]
fn ports_outside_the_bitmap_read_all_ones() {
    let code = [0xE4, 0x60, 0xE6, 0x80, 0xF4]; // in al, 0x60; out 0x80, al; hlt
    let Some((_vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    let mut c = v.controls().clone();
    c.io_bitmap = IoBitmap::none();
    c.io_bitmap.set(0x80, true);
    v.set_controls(c).unwrap();
    let e = v.run().unwrap();
    assert_eq!(io(&e), (io(&e).0, Some(0xFF)));
    assert_eq!(io(&e).0.port, 0x80);
}

#[test]
fn string_io_exits_once_per_element() {
    let code = [
        0xBE, 0x00, 0x20, // mov si, 0x2000
        0xB9, 0x03, 0x00, // mov cx, 3
        0xBA, 0x80, 0x00, // mov dx, 0x80
        0xFC, // cld
        0xF3, 0x6E, // rep outsb
        0xBF, 0x00, 0x30, // mov di, 0x3000
        0xB9, 0x02, 0x00, // mov cx, 2
        0xF3, 0x6C, // rep insb
        0xF4, // hlt
    ];
    let Some((vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    vm.memory()
        .write_slice(b"abc", GuestAddress(0x2000))
        .unwrap();
    for want in b"abc" {
        let e = v.run().unwrap();
        let (q, val) = io(&e);
        assert!(q.string && q.rep, "{q:?}");
        assert_eq!(
            (q.port, val, e.rip, e.instruction_len),
            (0x80, Some(*want as u32), CODE + 10, 2)
        );
        v.complete(Completion::Retire).unwrap();
    }
    for b in [0x11, 0x22] {
        let e = v.run().unwrap();
        let (q, _) = io(&e);
        assert_eq!((q.direction, q.string), (IoDirection::In, true));
        v.complete(Completion::IoIn(b)).unwrap();
    }
    let e = v.run().unwrap();
    assert_eq!(e.reason, ExitReason::Hlt);
    let mut got = [0u8; 2];
    vm.memory()
        .read_slice(&mut got, GuestAddress(0x3000))
        .unwrap();
    assert_eq!(got, [0x11, 0x22]);
    assert_eq!(v.regs().unwrap().rcx, 0);
}

#[test]
fn mmio_reads_and_writes() {
    let code = [
        0xA0, 0x00, 0x90, // mov al, [0x9000]
        0xA2, 0x04, 0x90, // mov [0x9004], al
        0xA1, 0x08, 0x90, // mov ax, [0x9008]
        0xF4,
    ];
    let Some((_vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    let e = v.run().unwrap();
    assert_eq!(e.reason, ExitReason::EptViolation);
    assert!(
        matches!(
            e.info,
            ExitInfo::Mmio {
                gpa: 0x9000,
                size: 1,
                write_data: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(EptQualification::decode(e.qualification).read);
    let mut d = [0u8; 16];
    d[0] = 0x77;
    v.complete(Completion::MmioRead(d)).unwrap();

    let e = v.run().unwrap();
    match e.info {
        ExitInfo::Mmio {
            gpa,
            size,
            write_data: Some(w),
            ..
        } => {
            assert_eq!((gpa, size, w[0]), (0x9004, 1, 0x77));
        }
        other => panic!("{other:?}"),
    }
    assert!(EptQualification::decode(e.qualification).write);
    v.complete(Completion::Retire).unwrap();

    let e = v.run().unwrap();
    assert!(
        matches!(
            e.info,
            ExitInfo::Mmio {
                gpa: 0x9008,
                size: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let mut d = [0u8; 16];
    d[..2].copy_from_slice(&[0x34, 0x12]);
    v.complete(Completion::MmioRead(d)).unwrap();
    assert_eq!(v.regs().unwrap().rax & 0xffff, 0x1234);
    assert_eq!(v.run().unwrap().reason, ExitReason::Hlt);
}

#[test]
fn interrupt_waits_for_the_window() {
    let code = [
        0xFA, // cli
        0xE6, 0x80, // out 0x80, al
        0xFB, // sti
        0x90, // nop
        0xF4, // hlt
        0xE6, 0x83, // out 0x83, al
    ];
    let Some((vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    set_ivt(&vm, 0x20, 0x1100);
    vm.memory()
        .write_slice(&[0xE6, 0x81, 0xCF], GuestAddress(0x1100)) // out 0x81, al; iret
        .unwrap();
    let e = v.run().unwrap();
    assert_eq!(io(&e).0.port, 0x80);
    v.complete(Completion::Retire).unwrap();
    assert!(!v.interruptible().unwrap());
    assert!(matches!(
        v.inject(Event::ExternalInterrupt(0x20)),
        Err(VcpuError::CannotInject { .. })
    ));
    let mut c = v.controls().clone();
    c.interrupt_window_exiting = true;
    v.set_controls(c.clone()).unwrap();
    let e = v.run().unwrap();
    // With hardware interrupt-window exiting the exit comes as soon as the
    // STI shadow ends; KVM's instruction emulator (ring-0 code on the nested
    // KVM here) only notices the window at the next exit, here the HLT.
    let halted = match e.reason {
        ExitReason::InterruptWindow => {
            assert!(
                e.rip == CODE + 4 || e.rip == CODE + 5,
                "after the STI shadow: {e:?}"
            );
            false
        }
        ExitReason::Hlt => {
            println!("note: no prompt interrupt-window exit here (emulated ring 0); got HLT");
            v.complete(Completion::Retire).unwrap();
            true
        }
        other => panic!("unexpected {other:?}"),
    };
    assert!(v.interruptible().unwrap());
    v.inject(Event::ExternalInterrupt(0x20)).unwrap();
    c.interrupt_window_exiting = false;
    v.set_controls(c).unwrap();
    let e = v.run().unwrap();
    assert_eq!((io(&e).0.port, e.rip), (0x81, 0x1100));
    v.complete(Completion::Retire).unwrap();
    let e = v.run().unwrap();
    if halted {
        // IRET returns after the HLT.
        assert_eq!((io(&e).0.port, e.rip), (0x83, CODE + 6));
    } else {
        assert_eq!((e.reason, e.rip), (ExitReason::Hlt, CODE + 5));
    }
}

#[test]
fn kicker_stops_a_spinning_guest() {
    let Some((_vm, mut v)) = guest(&[0xEB, 0xFE], 0x8000) else {
        return;
    };
    let k = v.kicker();
    k.kick();
    let e = v.run().unwrap();
    assert_eq!(
        e.info,
        ExitInfo::ExternalInterrupt {
            vector: HOST_KICK_VECTOR
        }
    );
    assert_eq!(e.rip, CODE);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        k.kick();
    });
    let e = v.run().unwrap();
    assert_eq!(e.reason, ExitReason::ExternalInterrupt);
    assert_eq!(e.rip, CODE);
    t.join().unwrap();
    assert_eq!(v.exit_count(), 0, "kicks are not deterministic exits");
}

#[test]
fn msr_bitmap_sends_selected_msrs_to_the_monitor() {
    let code = [
        0x66, 0xB9, 0x34, 0x12, 0x00, 0x00, // mov ecx, 0x1234
        0x0F, 0x32, // rdmsr
        0x66, 0xB9, 0x35, 0x12, 0x00, 0x00, // mov ecx, 0x1235
        0x66, 0xB8, 0x05, 0x00, 0x00, 0x00, // mov eax, 5
        0x66, 0x31, 0xD2, // xor edx, edx
        0x0F, 0x30, // wrmsr
        0xF4,
    ];
    let Some((vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    if !vm.has_msr_exits() {
        println!("skipped: this KVM cannot send MSR accesses to user space");
        return;
    }
    let mut c = v.controls().clone();
    c.msr_bitmap.read = vec![0x1234];
    c.msr_bitmap.write = vec![0x1235];
    v.set_controls(c).unwrap();
    let e = v.run().unwrap();
    assert_eq!((e.reason, e.rip), (ExitReason::Rdmsr, CODE + 6));
    assert_eq!(e.info, ExitInfo::Rdmsr { index: 0x1234 });
    v.complete(Completion::Rdmsr(0xAABB_CCDD_1122_3344))
        .unwrap();
    let r = v.regs().unwrap();
    assert_eq!((r.rax, r.rdx), (0x1122_3344, 0xAABB_CCDD));
    let e = v.run().unwrap();
    assert_eq!(
        e.info,
        ExitInfo::Wrmsr {
            index: 0x1235,
            value: 5
        }
    );
    v.complete(Completion::Retire).unwrap();
    assert_eq!(v.run().unwrap().reason, ExitReason::Hlt);
}

#[test]
fn faulting_an_io_instruction_delivers_the_exception_at_it() {
    let code = [0xEC, 0xF4]; // in al, dx; hlt
    let Some((vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    set_ivt(&vm, 6, 0x1200);
    vm.memory()
        .write_slice(&[0xE6, 0x82, 0xF4], GuestAddress(0x1200)) // out 0x82, al; hlt
        .unwrap();
    let mut r = v.regs().unwrap();
    r.rax = 0x99;
    v.set_regs(&r).unwrap();
    let e = v.run().unwrap();
    assert_eq!(io(&e).0.direction, IoDirection::In);
    v.complete(Completion::Fault(Exception::UD)).unwrap();
    let e = v.run().unwrap();
    assert_eq!((io(&e).0.port, e.rip, e.instruction_len), (0x82, 0x1200, 2));
    let r = v.regs().unwrap();
    assert_eq!(r.rax & 0xff, 0x99, "IN did not write AL");
    let mut ip = [0u8; 2];
    vm.memory()
        .read_slice(&mut ip, GuestAddress(r.rsp))
        .unwrap();
    assert_eq!(
        u16::from_le_bytes(ip) as u64,
        CODE,
        "the #UD frame points at the IN"
    );
}

#[test]
fn controls_kvm_cannot_honour_are_refused_by_name() {
    let Some((_vm, mut v)) = guest(&[0xF4], 0x8000) else {
        return;
    };
    let err = v.set_controls(ExecControls::default()).unwrap_err();
    assert!(err.to_string().contains("rdtsc_exiting"), "{err}");
    for (c, name) in [
        (
            ExecControls {
                monitor_trap_flag: true,
                ..KvmVcpu::backend_default_controls()
            },
            "monitor_trap_flag",
        ),
        (
            ExecControls {
                preemption_timer: Some(5),
                ..KvmVcpu::backend_default_controls()
            },
            "preemption_timer",
        ),
        (
            ExecControls {
                rdrand_exiting: true,
                ..KvmVcpu::backend_default_controls()
            },
            "rdrand_exiting",
        ),
        (
            ExecControls {
                hlt_exiting: false,
                ..KvmVcpu::backend_default_controls()
            },
            "hlt_exiting",
        ),
    ] {
        let err = v.set_controls(c).unwrap_err();
        assert!(matches!(err, VcpuError::Unsupported { backend: "kvm", .. }));
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(matches!(
        v.complete(Completion::Retire),
        Err(VcpuError::BadCompletion { pending: None, .. })
    ));
}

#[test]
fn cpuid_hides_rdrand_and_rdseed() {
    // CPUID.1 then CPUID.7.0 from the guest, reported with OUT of ECX/EBX.
    let code = [
        0x66, 0xB8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
        0x0F, 0xA2, // cpuid
        0x66, 0x89, 0xC8, // mov eax, ecx
        0x66, 0xE7, 0x80, // out 0x80, eax
        0x66, 0xB8, 0x07, 0x00, 0x00, 0x00, // mov eax, 7
        0x66, 0x31, 0xC9, // xor ecx, ecx
        0x0F, 0xA2, // cpuid
        0x66, 0x89, 0xD8, // mov eax, ebx
        0x66, 0xE7, 0x80, // out 0x80, eax
        0xF4,
    ];
    let Some((_vm, mut v)) = guest(&code, 0x8000) else {
        return;
    };
    let leaf = |l: u32| {
        *v.effective_cpuid()
            .iter()
            .find(|e| e.leaf == l && e.subleaf == 0)
            .unwrap()
    };
    let (l1, l7) = (leaf(1), leaf(7));
    let e = v.run().unwrap();
    assert_eq!(io(&e).0.size, 4);
    let guest_ecx = io(&e).1.unwrap();
    v.complete(Completion::Retire).unwrap();
    let e = v.run().unwrap();
    let guest_ebx = io(&e).1.unwrap();
    // The backend's account of what the guest sees must be the truth.
    assert_eq!(guest_ecx, l1.ecx);
    assert_eq!(guest_ebx, l7.ebx);
    let visible = guest_ecx & crate::cpuid::LEAF1_ECX_RDRAND != 0
        || guest_ebx & crate::cpuid::LEAF7_EBX_RDSEED != 0;
    assert_eq!(v.unrecordable_visible(), visible);
    if visible {
        println!("note: this KVM ignored the CPUID policy; RDRAND/RDSEED stay visible (reported)");
    }
}

/// An I/O instruction whose bytes straddle two linear pages that map to
/// physical pages in the other order: the exit's decode (immediate form,
/// length) reads each byte through its own page's translation.
#[test]
fn io_instruction_straddling_non_contiguous_pages_decodes() {
    // Linear 0x10000 -> physical 0x5000, linear 0x11000 -> physical 0x3000.
    // `in ax, dx` (66 ED) at linear 0x10fff, then HLT. Physical 0x5000 (where
    // the second byte would be read if the first page's translation were
    // reused) holds a NOP, which would make the decode fail.
    let Some((vm, mut v)) = guest(&[], 0x10000) else {
        return;
    };
    let mem = vm.memory();
    let w64 = |pa: u64, v: u64| mem.write_obj(v, GuestAddress(pa)).unwrap();
    w64(0x1000, 0x2000 | 3); // PML4[0] -> PDPT
    w64(0x2000, 0x4000 | 3); // PDPT[0] -> PD
    w64(0x4000, 0x6000 | 3); // PD[0] -> PT
    w64(0x6000 + 8 * 0x10, 0x5000 | 3); // PT[0x10]: 0x10000 -> 0x5000
    w64(0x6000 + 8 * 0x11, 0x3000 | 3); // PT[0x11]: 0x11000 -> 0x3000
    mem.write_slice(&[0x66], GuestAddress(0x5fff)).unwrap();
    mem.write_slice(&[0xED, 0xF4], GuestAddress(0x3000))
        .unwrap();
    mem.write_slice(&[0x90], GuestAddress(0x5000)).unwrap();
    v.host_wrote_memory(0, 0x10000);

    let mut s = v.special_regs().unwrap();
    let code = vcpu::Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_: 11,
        present: true,
        dpl: 0,
        db: false,
        s: true,
        l: true,
        g: true,
        avl: false,
        unusable: false,
    };
    let data = vcpu::Segment {
        selector: 16,
        type_: 3,
        db: true,
        l: false,
        ..code
    };
    s.cs = code;
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.tr = vcpu::Segment {
        base: 0,
        limit: 0x67,
        selector: 24,
        type_: 11,
        s: false,
        l: false,
        g: false,
        ..code
    };
    s.cr0 = 0x8000_0031; // PG, NE, ET, PE
    s.cr3 = 0x1000;
    s.cr4 = 0x20; // PAE
    s.efer = 0x500; // LME, LMA
    v.set_special_regs(&s).unwrap();
    v.set_regs(&Regs {
        rip: 0x10fff,
        rdx: 0x60,
        rflags: 2,
        rsp: 0x8000,
        ..Regs::default()
    })
    .unwrap();

    let e = v.run().unwrap();
    let (q, _) = io(&e);
    assert_eq!(
        (q.port, q.size, q.direction, q.immediate),
        (0x60, 2, IoDirection::In, false)
    );
    assert_eq!(
        (e.rip, e.instruction_len),
        (0x10fff, 2),
        "decoded across the pages"
    );
    v.complete(Completion::IoIn(0x4242)).unwrap();
    assert_eq!(v.regs().unwrap().rax & 0xffff, 0x4242);
    let e = v.run().unwrap();
    assert_eq!((e.reason, e.rip), (ExitReason::Hlt, 0x11001));
}

/// Registers set before a run, changed by the guest, and filled in by a
/// completion are what `regs()` shows, whichever shortcuts are on: a stale
/// cache or sync area, or an unfinished completion, would show old values.
#[test]
fn regs_are_never_stale_with_any_fast_path() {
    let code = [
        0xB8, 0x34, 0x12, // mov ax, 0x1234
        0xE6, 0x80, // out 0x80, al
        0x40, // inc ax
        0xE4, 0x80, // in al, 0x80
        0x43, // inc bx
        0xF4, // hlt
    ];
    let with_sync = |sync_regs| FastPath {
        sync_regs,
        ..FastPath::ALL
    };
    let mut counts = Vec::new();
    for fast in [
        FastPath::ALL,
        FastPath::NONE,
        with_sync(false),
        FastPath {
            cache: false,
            ..FastPath::ALL
        },
        FastPath {
            merge_completion: false,
            ..FastPath::ALL
        },
    ] {
        let Some((_vm, mut v)) = guest(&code, 0x8000) else {
            return;
        };
        v.set_fast_path(fast);
        let mut r = v.regs().unwrap();
        r.rbx = 5;
        r.rax = 0xdead_0000;
        v.set_regs(&r).unwrap();
        assert_eq!(v.regs().unwrap().rbx, 5, "{fast:?}");
        let e = v.run().unwrap();
        assert_eq!(e.rip, CODE + 3, "{fast:?}");
        let r = v.regs().unwrap();
        assert_eq!((r.rax, r.rip), (0xdead_1234, CODE + 5), "{fast:?}");
        v.complete(Completion::Retire).unwrap();
        let mut r = v.regs().unwrap();
        assert_eq!(r.rip, CODE + 5, "{fast:?}");
        r.rbx = 100;
        v.set_regs(&r).unwrap();
        let e = v.run().unwrap();
        assert_eq!(e.rip, CODE + 6, "{fast:?}");
        assert_eq!(v.regs().unwrap().rax, 0xdead_1235, "{fast:?}");
        v.complete(Completion::IoIn(0x77)).unwrap();
        let r = v.regs().unwrap();
        assert_eq!(
            (r.rax, r.rbx, r.rip),
            (0xdead_1277, 100, CODE + 8),
            "{fast:?}"
        );
        // Completed but not looked at: the next run must still finish it.
        let e = v.run().unwrap();
        assert_eq!(e.reason, ExitReason::Hlt, "{fast:?}");
        let r = v.regs().unwrap();
        assert_eq!((r.rax, r.rbx), (0xdead_1277, 101), "{fast:?}");
        assert!(!v.interruptible().unwrap(), "IF is 0 ({fast:?})");
        counts.push((fast, v.ioctl_counts()));
    }
    println!("{counts:#?}");
    let (all, none) = (counts[0].1, counts[1].1);
    assert!(
        all.total() < none.total(),
        "the fast path makes fewer ioctls: {all:?} vs {none:?}"
    );
}
