//! What an exit costs the kvm backend, with and without its per-exit
//! shortcuts (`vcpu_kvm::FastPath`), in the same run: vCPU ioctls per exit
//! and wall microseconds per exit.
//!
//! The guest is a real-mode loop of `out 0x80, al; in al, 0x80` driven the
//! way the monitor drives it (complete every exit, ask `interruptible()`
//! before every entry). Real-mode code is emulated by the nested KVM of the
//! development machines, so the absolute figures there include emulation;
//! the ioctl counts and the difference between the rows are the point.
//!
//! `cargo run --release -p vcpu-kvm --example kvm_exit_cost [iterations]`

use std::time::Instant;

use vcpu::ExitInfo;
use vcpu::{Completion, ExitReason, IoDirection, Regs, Vcpu, VmExit};
use vcpu_kvm::{FastPath, KvmVm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE: u64 = 0x1000;

fn main() {
    let iterations: u16 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("iterations: a number up to 65535"))
        .unwrap_or(5000);
    let [lo, hi] = iterations.to_le_bytes();
    let code = [
        0xB9, lo, hi, // mov cx, iterations
        0xE6, 0x80, // out 0x80, al
        0xE4, 0x80, // in al, 0x80
        0xE2, 0xFA, // loop -6
        0xF4, // hlt
    ];
    let configs = [
        ("none (baseline)", FastPath::NONE),
        (
            "cache only",
            FastPath {
                cache: true,
                ..FastPath::NONE
            },
        ),
        (
            "sync_regs only",
            FastPath {
                sync_regs: true,
                ..FastPath::NONE
            },
        ),
        (
            "merge_completion only",
            FastPath {
                merge_completion: true,
                ..FastPath::NONE
            },
        ),
        ("all (default)", FastPath::ALL),
    ];
    println!("{iterations} x (OUT + IN) in real mode, exits driven as the monitor drives them");
    println!(
        "{:<24} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "fast path", "exits", "ioctl/ex", "us/exit", "RUN/ex", "REGS/ex", "SREGS/ex", "EVTS/ex"
    );
    for (name, fast) in configs {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8000)]).unwrap();
        mem.write_slice(&code, GuestAddress(CODE)).unwrap();
        let vm = match KvmVm::new(mem) {
            Ok(vm) => vm,
            Err(e) => {
                println!("skipped: KVM is unusable here: {e}");
                return;
            }
        };
        let cpuid = vm.host_cpuid().unwrap();
        let mut v = vm.create_vcpu(0, &cpuid).unwrap();
        let mut s = v.special_regs().unwrap();
        s.cs.base = 0;
        s.cs.selector = 0;
        v.set_special_regs(&s).unwrap();
        v.set_regs(&Regs {
            rip: CODE,
            rflags: 2,
            rsp: 0x7000,
            ..Regs::default()
        })
        .unwrap();
        v.set_fast_path(fast);
        let sync = v.sync_regs_active();
        let before = v.ioctl_counts();
        let t0 = Instant::now();
        let mut exits = 0u64;
        loop {
            v.interruptible().unwrap();
            let e: VmExit = v.run().unwrap();
            exits += 1;
            match (e.reason, e.info) {
                (ExitReason::IoInstruction, ExitInfo::Io { qual, .. }) => {
                    let c = if qual.direction == IoDirection::In {
                        Completion::IoIn(0)
                    } else {
                        Completion::Retire
                    };
                    v.complete(c).unwrap();
                }
                (ExitReason::Hlt, _) => {
                    v.complete(Completion::Retire).unwrap();
                    break;
                }
                other => panic!("unexpected exit {other:?}"),
            }
        }
        let wall = t0.elapsed();
        let c = v.ioctl_counts();
        let per = |a: u64, b: u64| (a - b) as f64 / exits as f64;
        println!(
            "{:<24} {:>8} {:>10.2} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}{}",
            name,
            exits,
            per(c.total(), before.total()),
            wall.as_secs_f64() * 1e6 / exits as f64,
            per(c.run, before.run),
            per(c.get_regs, before.get_regs),
            per(c.get_sregs, before.get_sregs),
            per(c.get_events, before.get_events),
            if fast.sync_regs && !sync {
                " (no KVM_CAP_SYNC_REGS here)"
            } else {
                ""
            }
        );
    }
}
