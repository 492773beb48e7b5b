//! The perf_event backend with a real KVM vCPU thread: an overflow signal
//! routed to the vCPU thread makes KVM_RUN return EINTR, with the signal
//! left pending for `OverflowSignal::poll`. The plumbing is checked with a
//! software event (task clock) wherever /dev/kvm exists; guest-mode branch
//! counting runs only where the host has a hardware PMU and prints
//! "skipped: <reason>" otherwise.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use pmu_driver::perf::{CounterSpec, OverflowSignal, PerfCounter, PerfEvent, Target};

const CODE: u64 = 0x1000;

struct Guest {
    vcpu: VcpuFd,
    _vm: VmFd,
    _mem: Mapping,
}

/// Page-aligned guest memory (KVM refuses unaligned userspace addresses).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous mapping; nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Mapping { ptr: p.cast(), len }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, after the VM (declared
        // before it in Guest) has been closed.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A real-mode guest with `code` at 0x1000, or why there is none.
fn guest(code: &[u8]) -> Result<Guest, String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let mem = Mapping::new(0x10000);
    // SAFETY: CODE + code.len() lies inside the fresh 64 KiB mapping.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.ptr.add(CODE as usize), code.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: mem.len as u64,
        userspace_addr: mem.ptr as u64,
        flags: 0,
    };
    // SAFETY: the mapping outlives the VM (both live in the returned Guest,
    // the VM dropped first).
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("memory: {e}"))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| e.to_string())?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    vcpu.set_regs(&kvm_regs {
        rip: CODE,
        rflags: 2,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(Guest {
        vcpu,
        _vm: vm,
        _mem: mem,
    })
}

/// KVM_SET_SIGNAL_MASK (kvm-ioctls has no wrapper): the mask in force while
/// the thread runs guest code.
fn set_kvm_signal_mask(vcpu: &VcpuFd, mask: u64) {
    #[repr(C)]
    struct KvmSignalMask {
        len: u32,
        sigset: [u8; 8],
    }
    const KVM_SET_SIGNAL_MASK: libc::c_ulong = 0x4004_AE8B; // _IOW(KVMIO, 0x8b, u32)
    let m = KvmSignalMask {
        len: 8,
        sigset: mask.to_le_bytes(),
    };
    // SAFETY: the ioctl reads `len` and then `len` bytes of sigset from the
    // live struct.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_SET_SIGNAL_MASK, &m) };
    assert_eq!(
        r,
        0,
        "KVM_SET_SIGNAL_MASK: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn overflow_signal_interrupts_kvm_run_and_stays_pending() {
    std::thread::spawn(|| {
        // jmp $ : runs until something interrupts KVM_RUN.
        let mut g = match guest(&[0xEB, 0xFE]) {
            Ok(g) => g,
            Err(why) => {
                println!("skipped: {why}");
                return;
            }
        };
        let sig = OverflowSignal::for_current_thread(OverflowSignal::default_signal()).unwrap();
        set_kvm_signal_mask(&g.vcpu, sig.kvm_run_sigmask().unwrap());
        let c = PerfCounter::open(&CounterSpec {
            event: PerfEvent::SoftwareTaskClock,
            target: Target::CallingThread,
            guest_only: false,
            exclude_kernel: false,
            armable: true,
        });
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                println!("skipped: task clock with kernel mode: {e}");
                return;
            }
        };
        c.signal_overflow_to(&sig).unwrap();
        c.arm(5_000_000).unwrap(); // 5 ms of this thread's CPU time
        c.enable().unwrap();
        let r = g.vcpu.run();
        c.disable().unwrap();
        match r {
            Err(e) => assert_eq!(e.errno(), libc::EINTR, "KVM_RUN: {e}"),
            Ok(exit) => panic!("KVM_RUN returned {exit:?} instead of EINTR"),
        }
        let notice = sig.poll(Duration::ZERO).unwrap();
        assert_eq!(notice.map(|n| n.fd), Some(c.as_raw_fd()));
        assert!(c.count().unwrap() >= 5_000_000);
    })
    .join()
    .unwrap();
}

#[test]
fn guest_mode_branches_are_counted_and_overflow_interrupts_kvm_run() {
    std::thread::spawn(|| {
        // mov cx, 1000 ; l: loop l ; hlt   (1000 branches, then HLT exit)
        let code = [0xB9, 0xE8, 0x03, 0xE2, 0xFE, 0xF4, 0xEB, 0xFE];
        let mut g = match guest(&code) {
            Ok(g) => g,
            Err(why) => {
                println!("skipped: {why}");
                return;
            }
        };
        let c = match PerfCounter::open(&CounterSpec::guest_branches(Target::CallingThread)) {
            Ok(c) => c,
            Err(e) => {
                println!("skipped: guest-mode branch counter: {e}");
                return;
            }
        };
        c.enable().unwrap();
        let exit = g.vcpu.run().map(|e| format!("{e:?}"));
        c.disable().unwrap();
        assert_eq!(exit.as_deref(), Ok("Hlt"));
        let n = c.count().unwrap();
        assert!(
            (1000..1100).contains(&n),
            "{n} guest branches for 1000 LOOPs"
        );

        // Now overflow inside a jmp $ loop (rip back to 0x1006).
        let sig = OverflowSignal::for_current_thread(OverflowSignal::default_signal()).unwrap();
        set_kvm_signal_mask(&g.vcpu, sig.kvm_run_sigmask().unwrap());
        c.signal_overflow_to(&sig).unwrap();
        c.reset().unwrap();
        c.arm(100_000).unwrap();
        c.enable().unwrap();
        let r = g.vcpu.run().map(|e| matches!(e, VcpuExit::Hlt));
        c.disable().unwrap();
        assert_eq!(r.map_err(|e| e.errno()), Err(libc::EINTR));
        assert!(sig.poll(Duration::ZERO).unwrap().is_some());
        assert!(c.count().unwrap() >= 100_000);
    })
    .join()
    .unwrap();
}
