use super::*;

/// The runner, or `None` after printing why KVM tests are skipped.
fn runner() -> Option<Ring3Runner> {
    match Ring3Runner::new() {
        Ok(r) => Some(r),
        Err(Ring3Error::Setup(e @ (KvmSetupError::NoDevice | KvmSetupError::Open(_)))) => {
            println!("skipped: {e}");
            None
        }
        Err(e) => panic!("/dev/kvm is present but the ring-3 runner failed: {e}"),
    }
}

const CF: u64 = 1;
const ZF: u64 = 1 << 6;
const OF: u64 = 1 << 11;

#[test]
fn add_sets_result_and_flags() {
    let Some(mut r) = runner() else { return };
    let mut b = Ring3Block::new(vec![0x48, 0x01, 0xd8]); // add rax, rbx
    b.regs.rax = u64::MAX;
    b.regs.rbx = 1;
    let out = r.run(&b).unwrap();
    assert_eq!(out.end, Ring3End::Completed);
    assert_eq!(out.regs.rax, 0);
    assert_eq!(out.regs.rip, CODE_BASE + 3);
    assert_eq!(out.regs.rflags & (CF | ZF | OF), CF | ZF);
    assert!(out.memory.is_empty());
}

#[test]
fn initial_flags_are_taken_from_the_block() {
    let Some(mut r) = runner() else { return };
    let mut b = Ring3Block::new(vec![0x48, 0x83, 0xd0, 0x00]); // adc rax, 0
    b.regs.rflags = CF | (1 << 9); // IF is not settable
    let out = r.run(&b).unwrap();
    assert_eq!(out.regs.rax, 1);
    assert_eq!(out.regs.rflags & (1 << 9), 0);
}

#[test]
fn memory_writes_are_reported_and_reset() {
    let Some(mut r) = runner() else { return };
    // mov [rdi], rax; push rbx
    let mut b = Ring3Block::new(vec![0x48, 0x89, 0x07, 0x53]);
    b.regs.rdi = DATA_BASE + 0x1008;
    b.regs.rax = 0x1122_3344_5566_7788;
    b.regs.rbx = 0xdead_beef;
    b.memory.push((DATA_BASE + 0x1000, vec![0xAA; 8]));
    let out = r.run(&b).unwrap();
    assert_eq!(out.end, Ring3End::Completed);
    let pages: Vec<u64> = out.memory.iter().map(|(p, _)| *p).collect();
    assert_eq!(pages, vec![DATA_BASE + 0x1000, STACK_TOP - PAGE_SIZE]);
    assert_eq!(
        out.changed_bytes(DATA_BASE + 0x1000, 16).unwrap(),
        [[0xAA; 8], 0x1122_3344_5566_7788u64.to_le_bytes()].concat()
    );
    assert_eq!(
        out.changed_bytes(STACK_TOP - 8, 8).unwrap(),
        0xdead_beefu64.to_le_bytes()
    );
    assert_eq!(out.regs.rsp, STACK_TOP - 8);

    // A block that only reads sees zeros again: mov rax, [rdi]
    let mut b2 = Ring3Block::new(vec![0x48, 0x8b, 0x07]);
    b2.regs.rdi = DATA_BASE + 0x1008;
    b2.regs.rax = 5;
    let out = r.run(&b2).unwrap();
    assert_eq!(out.regs.rax, 0);
    assert!(out.memory.is_empty());
    let mut b3 = Ring3Block::new(vec![0x48, 0x8b, 0x04, 0x24]); // mov rax, [rsp]
    b3.regs.rsp = STACK_TOP - 8;
    assert_eq!(r.run(&b3).unwrap().regs.rax, 0);
}

#[test]
fn faults_are_reported_with_vector_error_code_and_frame() {
    let Some(mut r) = runner() else { return };

    // div rcx with rcx = 0 -> #DE at the div.
    let mut b = Ring3Block::new(vec![0x90, 0x48, 0xf7, 0xf1]);
    b.regs.rax = 7;
    b.regs.r15 = 0x15;
    let out = r.run(&b).unwrap();
    assert_eq!(
        out.end,
        Ring3End::Fault {
            exception: Exception {
                vector: 0,
                error_code: None
            },
            cr2: 0
        }
    );
    assert_eq!(out.regs.rip, CODE_BASE + 1);
    assert_eq!(out.regs.rsp, STACK_TOP);
    assert_eq!(out.regs.r15, 0x15);

    // ud2 -> #UD.
    let out = r.run(&Ring3Block::new(vec![0x0f, 0x0b])).unwrap();
    assert!(matches!(out.end, Ring3End::Fault { exception, .. } if exception == Exception::UD));

    // Write to an unmapped page -> #PF, error code user|write (not present).
    let mut b = Ring3Block::new(vec![0x48, 0x89, 0x07]);
    b.regs.rdi = 0x50_0000;
    let out = r.run(&b).unwrap();
    assert_eq!(
        out.end,
        Ring3End::Fault {
            exception: Exception {
                vector: 14,
                error_code: Some(6)
            },
            cr2: 0x50_0000
        }
    );

    // Read of a supervisor page -> #PF, protection violation from user mode.
    let mut b = Ring3Block::new(vec![0x48, 0x8b, 0x07]);
    b.regs.rdi = GDT_BASE;
    let out = r.run(&b).unwrap();
    assert_eq!(
        out.end,
        Ring3End::Fault {
            exception: Exception {
                vector: 14,
                error_code: Some(5)
            },
            cr2: GDT_BASE
        }
    );

    // Write to the code area -> #PF protection, user|write.
    let mut b = Ring3Block::new(vec![0x48, 0x89, 0x07]);
    b.regs.rdi = CODE_BASE;
    let out = r.run(&b).unwrap();
    assert!(
        matches!(out.end, Ring3End::Fault { exception: Exception { vector: 14, error_code: Some(7) }, cr2 } if cr2 == CODE_BASE)
    );

    // hlt in ring 3 -> #GP(0).
    let out = r.run(&Ring3Block::new(vec![0xf4])).unwrap();
    assert!(matches!(out.end, Ring3End::Fault { exception, .. } if exception == Exception::GP0));

    // int3 -> #BP, a trap: RIP after the instruction.
    let out = r.run(&Ring3Block::new(vec![0xcc])).unwrap();
    assert!(matches!(
        out.end,
        Ring3End::Fault {
            exception: Exception { vector: 3, .. },
            ..
        }
    ));
    assert_eq!(out.regs.rip, CODE_BASE + 1);

    // After all that the runner is back in ring 3.
    let mut b = Ring3Block::new(vec![0x48, 0xff, 0xc0]); // inc rax
    b.regs.rax = 41;
    let out = r.run(&b).unwrap();
    assert_eq!(out.end, Ring3End::Completed);
    assert_eq!(out.regs.rax, 42);
}

#[test]
fn running_past_the_code_hits_the_fill() {
    let Some(mut r) = runner() else { return };
    r.run(&Ring3Block::new(vec![0x90; 100])).unwrap();
    // jmp +4 skips the terminator (2 bytes) and lands on old code: must be HLT fill.
    let out = r.run(&Ring3Block::new(vec![0xeb, 0x04])).unwrap();
    assert!(matches!(out.end, Ring3End::Fault { exception, .. } if exception == Exception::GP0));
    assert_eq!(out.regs.rip, CODE_BASE + 6);
}

#[test]
fn endless_loop_times_out_and_the_runner_recovers() {
    let Some(mut r) = runner() else { return };
    r.set_timeout(Duration::from_millis(100));
    let out = r.run(&Ring3Block::new(vec![0xeb, 0xfe])).unwrap();
    assert_eq!(out.end, Ring3End::Timeout);
    assert_eq!(out.regs.rip, CODE_BASE);
    let out = r.run(&Ring3Block::new(vec![0x90])).unwrap();
    assert_eq!(out.end, Ring3End::Completed);
}

#[test]
fn sse_state_goes_in_and_out() {
    let Some(mut r) = runner() else { return };
    // movq rax, xmm0; pxor xmm1, xmm1
    let mut b = Ring3Block::new(vec![0x66, 0x48, 0x0f, 0x7e, 0xc0, 0x66, 0x0f, 0xef, 0xc9]);
    b.fpu.xmm[0][..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
    b.fpu.xmm[1] = [0xff; 16];
    let out = r.run(&b).unwrap();
    assert_eq!(out.end, Ring3End::Completed);
    assert_eq!(out.regs.rax, 0x0102_0304_0506_0708);
    assert_eq!(out.fpu.xmm[1], [0; 16]);
}

#[test]
fn blocks_outside_the_layout_are_refused() {
    let Some(mut r) = runner() else { return };
    let mut b = Ring3Block::new(vec![0x90]);
    b.memory.push((DATA_BASE + DATA_SIZE - 4, vec![0; 8]));
    assert!(matches!(r.run(&b), Err(Ring3Error::BadBlock(_))));
    let b = Ring3Block::new(vec![0x90; CODE_SIZE as usize]);
    assert!(matches!(r.run(&b), Err(Ring3Error::BadBlock(_))));
}

#[test]
fn many_blocks_on_one_vm() {
    let Some(mut r) = runner() else { return };
    let start = Instant::now();
    let n = 2000u64;
    for i in 0..n {
        // lea rax, [rax + rbx*1 + 1]
        let mut b = Ring3Block::new(vec![0x48, 0x8d, 0x44, 0x18, 0x01]);
        b.regs.rax = i;
        b.regs.rbx = 2 * i;
        let out = r.run(&b).unwrap();
        assert_eq!(out.regs.rax, 3 * i + 1);
    }
    let per = start.elapsed() / n as u32;
    println!("{n} blocks, {per:?} per block");
}

#[test]
fn native_loop_benchmark_runs() {
    let Some(mut r) = runner() else { return };
    let b = r.native_mips_loop(1_000_000).unwrap();
    assert_eq!(b.instructions, 2_000_000);
    println!(
        "native loop: {:.0} MIPS ({} insns in {:.4} s)",
        b.mips, b.instructions, b.seconds
    );
}

#[test]
fn empty_blocks_and_io_from_the_block() {
    let Some(mut r) = runner() else { return };
    for _ in 0..3 {
        let mut b = Ring3Block::new(vec![]);
        b.regs.rax = 9;
        let out = r.run(&b).unwrap();
        assert_eq!(out.end, Ring3End::Completed);
        assert_eq!((out.regs.rip, out.regs.rax), (CODE_BASE, 9));
    }
    // out 0x80, al: not allowed by the I/O bitmap -> #GP(0), as on bare metal.
    let out = r.run(&Ring3Block::new(vec![0xe6, 0x80])).unwrap();
    assert!(matches!(out.end, Ring3End::Fault { exception, .. } if exception == Exception::GP0));
    // in al, 0xF0: the one allowed port, reported as the block's own I/O.
    let out = r.run(&Ring3Block::new(vec![0xe4, 0xf0, 0x90])).unwrap();
    assert_eq!(
        out.end,
        Ring3End::Io {
            port: END_PORT,
            size: 1,
            out: false
        }
    );
    let mut b = Ring3Block::new(vec![0x48, 0xff, 0xc0]);
    b.regs.rax = 1;
    assert_eq!(r.run(&b).unwrap().regs.rax, 2);
}

#[test]
fn runner_moves_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<Ring3Runner>();
    let Some(mut r) = runner() else { return };
    r.run(&Ring3Block::new(vec![0x90])).unwrap();
    let mut r = std::thread::spawn(move || {
        r.set_timeout(Duration::from_millis(50));
        // The watchdog must follow the runner to the new thread.
        assert_eq!(
            r.run(&Ring3Block::new(vec![0xeb, 0xfe])).unwrap().end,
            Ring3End::Timeout
        );
        r
    })
    .join()
    .unwrap();
    assert_eq!(
        r.run(&Ring3Block::new(vec![0x90])).unwrap().end,
        Ring3End::Completed
    );
}
