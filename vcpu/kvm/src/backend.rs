//! The kvm backend: [`vcpu::Vcpu`] on Linux KVM, with no in-kernel irqchip
//! or PIT, so the monitor decides every injection and sees every port access.
//!
//! See the crate docs (and README.md beside Cargo.toml) for which controls and
//! exits this backend offers.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use kvm_bindings::{
    KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_UNKNOWN, Msrs, kvm_enable_cap, kvm_interrupt,
    kvm_msr_entry,
};
use kvm_bindings::{kvm_regs, kvm_run, kvm_sregs, kvm_vcpu_events};
use kvm_ioctls::{
    Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuExit,
    VcpuFd, VmFd,
};
#[cfg(test)]
use vcpu::IoBitmap;
use vcpu::{
    Completion, EptQualification, Event, Exception, ExecControls, ExitInfo, ExitReason, FpuState,
    HOST_KICK_VECTOR, IoDirection, IoQualification, Kicker, MsrBitmap, PmuBank, Regs,
    RetiredCounts, SpecialRegs, Vcpu, VcpuError, VmExit,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::conv::{
    fpu_from_xsave, fpu_to_xsave, regs_from_kvm, regs_to_kvm, sregs_from_kvm, sregs_to_kvm,
};
use crate::cpuid::{CpuidEntry, from_kvm, hide_unrecordable, to_kvm};
use crate::decode::{decode_io, out_ending_at};
use crate::kick::{RunGuard, gettid, install_handler, kick_thread};
use crate::state::{FastPath, IoctlCounts, StateCache};
use crate::vm::{KvmSetupError, open_kvm, register_memory, supported_cpuid};

const BACKEND: &str = "kvm";

vmm_sys_util::ioctl_iow_nr!(KVM_INTERRUPT, kvm_bindings::KVMIO, 0x86, kvm_interrupt);
// KVM_RUN issued directly, for finishing an instruction from `&self`
// queries (kvm-ioctls' `VcpuFd::run` needs `&mut`).
vmm_sys_util::ioctl_io_nr!(KVM_RUN, kvm_bindings::KVMIO, 0x80);

fn unsupported(what: impl Into<String>) -> VcpuError {
    VcpuError::Unsupported {
        backend: BACKEND,
        what: what.into(),
    }
}

fn ioctl_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |e| VcpuError::Backend(format!("{what}: {e}"))
}

/// A KVM virtual machine over caller-owned guest memory, without an
/// in-kernel irqchip or PIT. Create vCPUs from it.
pub struct KvmVm {
    kvm: Kvm,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    user_space_msr: bool,
}

impl KvmVm {
    /// Create the VM and register every region of `mem` as a memory slot.
    /// Guest-physical addresses outside `mem` are MMIO.
    pub fn new(mem: GuestMemoryMmap) -> Result<Self, KvmSetupError> {
        let kvm = open_kvm()?;
        let vm = kvm
            .create_vm()
            .map_err(KvmSetupError::ioctl("KVM_CREATE_VM"))?;
        // Only needed for real-mode guests on Intel hosts without unrestricted
        // guest support; harmless elsewhere. Placed just below 4 GiB, where
        // guests of this project have no RAM.
        vm.set_tss_address(0xfffb_d000)
            .map_err(KvmSetupError::ioctl("KVM_SET_TSS_ADDR"))?;
        register_memory(&vm, &mem)?;
        let user_space_msr = kvm.check_extension_raw(kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR as _)
            > 0
            && kvm.check_extension_raw(kvm_bindings::KVM_CAP_X86_MSR_FILTER as _) > 0;
        if user_space_msr {
            let cap = kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
                args: [
                    (KVM_MSR_EXIT_REASON_FILTER | KVM_MSR_EXIT_REASON_UNKNOWN) as u64,
                    0,
                    0,
                    0,
                ],
                ..Default::default()
            };
            vm.enable_cap(&cap)
                .map_err(KvmSetupError::ioctl("KVM_ENABLE_CAP(X86_USER_SPACE_MSR)"))?;
        }
        Ok(KvmVm {
            kvm,
            vm: Arc::new(vm),
            mem,
            user_space_msr,
        })
    }

    /// The CPUID KVM supports on this host, with RDRAND and RDSEED hidden: a
    /// starting point for a CPUID policy.
    pub fn host_cpuid(&self) -> Result<Vec<CpuidEntry>, KvmSetupError> {
        let mut e = from_kvm(&supported_cpuid(&self.kvm)?);
        hide_unrecordable(&mut e);
        Ok(e)
    }

    /// Whether MSR accesses can be sent to user space (the MSR bitmap control).
    pub fn has_msr_exits(&self) -> bool {
        self.user_space_msr
    }

    /// The guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Create vCPU `id` with the given CPUID (RDRAND and RDSEED are hidden
    /// whatever the policy says: this backend cannot record them).
    pub fn create_vcpu(&self, id: u32, cpuid: &[CpuidEntry]) -> Result<KvmVcpu, VcpuError> {
        install_handler().map_err(|e| VcpuError::Backend(format!("kick signal handler: {e}")))?;
        let mut fd = self
            .vm
            .create_vcpu(id as u64)
            .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        let mut entries = cpuid.to_vec();
        hide_unrecordable(&mut entries);
        let kvm_cpuid = to_kvm(&entries).map_err(VcpuError::InvalidState)?;
        fd.set_cpuid2(&kvm_cpuid)
            .map_err(ioctl_err("KVM_SET_CPUID2"))?;
        // Read back what KVM will really answer: some KVMs (the nested one
        // here) keep host values for some leaves whatever was set.
        let effective = from_kvm(
            &fd.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .map_err(ioctl_err("KVM_GET_CPUID2"))?,
        );
        let sync_fields = crate::probe::sync_regs_fields(&self.kvm);
        let run_ptr = KvmRunPtr(NonNull::from(fd.get_kvm_run()));
        let mut v = KvmVcpu {
            effective_cpuid: effective,
            vm: Arc::clone(&self.vm),
            fd,
            run_ptr,
            sync_fields,
            fast: FastPath::NONE,
            state: StateCache::default(),
            unfinished: Cell::new(false),
            counts: Cell::new(IoctlCounts::default()),
            mem: self.mem.clone(),
            user_space_msr: self.user_space_msr,
            controls: KvmVcpu::backend_default_controls(),
            kicker: Arc::new(KvmKicker::default()),
            pending: Pending::None,
            awaiting: None,
            exits: 0,
        };
        v.apply_msr_filter(&MsrBitmap::default())?;
        v.set_fast_path(FastPath::ALL);
        Ok(v)
    }
}

/// Forces `KvmVcpu::run` out of the guest (see [`crate::kick`]).
#[derive(Default)]
pub struct KvmKicker {
    kicked: AtomicBool,
    /// Thread currently inside `run`, 0 if none.
    tid: AtomicI32,
}

impl Kicker for KvmKicker {
    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        let tid = self.tid.load(Ordering::SeqCst);
        if tid != 0 {
            kick_thread(tid);
        }
    }
}

/// An I/O instruction KVM exited on, handed to the monitor one element at a time.
#[derive(Debug, Clone, Copy)]
struct IoState {
    qual: IoQualification,
    /// Elements in this KVM exit (KVM batches string I/O).
    count: u32,
    /// Offset of the data in the kvm_run page.
    data_offset: u64,
    /// Elements answered so far.
    answered: u32,
    insn_len: u8,
    rip: u64,
    /// KVM has already finished this (single-element OUT) instruction;
    /// `regs_before` are the registers from before it did.
    finished: bool,
    regs_before: Regs,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    None,
    Io(IoState),
    Mmio {
        read: bool,
        len: usize,
        rip: u64,
    },
    /// KVM retired HLT before exiting; `rip` is the HLT's address.
    Hlt {
        rip: u64,
    },
    Msr {
        read: bool,
    },
}

/// One virtual CPU on KVM.
pub struct KvmVcpu {
    effective_cpuid: Vec<CpuidEntry>,
    vm: Arc<VmFd>,
    fd: VcpuFd,
    mem: GuestMemoryMmap,
    user_space_msr: bool,
    controls: ExecControls,
    kicker: Arc<KvmKicker>,
    pending: Pending,
    /// The exit waiting for `complete`.
    awaiting: Option<ExitReason>,
    exits: u64,
    /// `fd`'s kvm_run mapping, for setting `immediate_exit` from `&self`.
    run_ptr: KvmRunPtr,
    /// KVM_SYNC_X86_* fields this host's KVM_CAP_SYNC_REGS offers.
    sync_fields: u32,
    fast: FastPath,
    state: StateCache,
    /// KVM holds a completed instruction the next KVM_RUN will finish
    /// (`FastPath::merge_completion`); queries finish it first.
    unfinished: Cell<bool>,
    counts: Cell<IoctlCounts>,
}

/// The kvm_run mapping of a vCPU fd.
struct KvmRunPtr(NonNull<kvm_run>);

// SAFETY: the pointer refers to the kvm_run mapping owned by the `VcpuFd`
// stored beside it in the same `KvmVcpu`; it moves between threads with
// that fd and is only dereferenced by the `KvmVcpu`'s own methods.
unsafe impl Send for KvmRunPtr {}

/// EFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Bytes of operand-size prefix an I/O access of `size` needs.
fn opsize16_prefix(size: u8, opsize16: bool) -> u8 {
    match size {
        2 => !opsize16 as u8,
        4 => opsize16 as u8,
        _ => 0,
    }
}

impl KvmVcpu {
    /// The execution controls this backend starts with and can honour: the
    /// recording defaults minus RDTSC/RDRAND/RDSEED exiting, which stock KVM
    /// cannot do.
    pub fn backend_default_controls() -> ExecControls {
        ExecControls {
            rdtsc_exiting: false,
            rdrand_exiting: false,
            rdseed_exiting: false,
            ..ExecControls::default()
        }
    }

    /// The CPUID KVM holds for this vCPU (read back after setting the policy).
    pub fn effective_cpuid(&self) -> &[CpuidEntry] {
        &self.effective_cpuid
    }

    /// Whether the guest can see RDRAND or RDSEED in CPUID despite the
    /// policy hiding them (KVM did not honour the policy). A recording made
    /// so must be marked: the guest may use randomness this backend cannot
    /// record.
    pub fn unrecordable_visible(&self) -> bool {
        crate::cpuid::shows_unrecordable(&self.effective_cpuid)
    }

    /// Exits that carried a guest instruction (those needing a completion),
    /// since creation: the deterministic clock of exit-synchronous mode.
    /// Kicks and interrupt-window exits are not counted: their position in
    /// the guest's execution depends on host timing.
    pub fn exit_count(&self) -> u64 {
        self.exits
    }

    /// The per-exit shortcuts in use.
    pub fn fast_path(&self) -> FastPath {
        self.fast
    }

    /// Choose the per-exit shortcuts (all are on after creation). Results
    /// do not depend on the choice, only the number of ioctls does; the
    /// exit-cost benchmark and the tests compare the two.
    pub fn set_fast_path(&mut self, fast: FastPath) {
        self.settle_mut();
        self.fast = fast;
        let valid = if self.sync_active() {
            self.sync_fields as u64
        } else {
            0
        };
        let run = self.fd.get_kvm_run();
        run.kvm_valid_regs = valid;
        run.kvm_dirty_regs = 0;
        self.state.invalidate();
    }

    /// Whether KVM fills kvm_run's sync area at every exit (the host offers
    /// KVM_CAP_SYNC_REGS and `FastPath::sync_regs` is on).
    pub fn sync_regs_active(&self) -> bool {
        self.sync_active()
    }

    /// vCPU ioctls made since creation.
    pub fn ioctl_counts(&self) -> IoctlCounts {
        self.counts.get()
    }

    fn sync_active(&self) -> bool {
        self.fast.sync_regs && self.sync_fields != 0
    }

    fn count(&self, f: impl FnOnce(&mut IoctlCounts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    /// Registers as KVM holds them now, without finishing a pending
    /// instruction (see `settle`).
    fn raw_regs(&self) -> Result<kvm_regs, VcpuError> {
        if let Some(r) = self.state.regs.get() {
            return Ok(r);
        }
        let r = if self.state.sync_fresh.get()
            && self.sync_fields & kvm_bindings::KVM_SYNC_X86_REGS != 0
        {
            self.fd.sync_regs().regs
        } else {
            self.count(|c| c.get_regs += 1);
            self.fd.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?
        };
        if self.fast.cache {
            self.state.regs.set(Some(r));
        }
        Ok(r)
    }

    /// Special registers as KVM holds them now (a pending instruction
    /// cannot change them).
    fn raw_sregs(&self) -> Result<kvm_sregs, VcpuError> {
        if let Some(r) = self.state.sregs.get() {
            return Ok(r);
        }
        let r = if self.state.sync_fresh.get()
            && self.sync_fields & kvm_bindings::KVM_SYNC_X86_SREGS != 0
        {
            self.fd.sync_regs().sregs
        } else {
            self.count(|c| c.get_sregs += 1);
            self.fd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?
        };
        if self.fast.cache {
            self.state.sregs.set(Some(r));
        }
        Ok(r)
    }

    /// vCPU events, after finishing any pending instruction.
    fn events(&self) -> Result<kvm_vcpu_events, VcpuError> {
        self.settle()?;
        if let Some(r) = self.state.events.get() {
            return Ok(r);
        }
        let r = if self.state.sync_fresh.get()
            && self.sync_fields & kvm_bindings::KVM_SYNC_X86_EVENTS != 0
        {
            self.fd.sync_regs().events
        } else {
            self.count(|c| c.get_events += 1);
            self.fd
                .get_vcpu_events()
                .map_err(ioctl_err("KVM_GET_VCPU_EVENTS"))?
        };
        if self.fast.cache {
            self.state.events.set(Some(r));
        }
        Ok(r)
    }

    /// Finish the instruction the monitor completed, if its KVM_RUN was
    /// put off (`FastPath::merge_completion`): every query and setter calls
    /// this first, so what they see is exactly what they saw when `complete`
    /// finished instructions itself.
    fn settle(&self) -> Result<(), VcpuError> {
        if self.unfinished.replace(false) {
            self.finish_in_kernel()?;
        }
        Ok(())
    }

    /// `settle` for callers that cannot return an error (changing the fast
    /// path): a failing KVM_RUN here will fail again at the next `run`.
    fn settle_mut(&mut self) {
        let _ = self.settle();
    }

    /// The instruction KVM exited on has been completed by the monitor:
    /// finish it now, or leave it for the next KVM_RUN.
    fn finish_completed(&mut self) -> Result<(), VcpuError> {
        if self.fast.merge_completion {
            self.unfinished.set(true);
            Ok(())
        } else {
            self.finish_in_kernel()
        }
    }

    /// A setter or injection is about to change the vCPU: finish any
    /// pending instruction first, and forget what was read.
    fn before_change(&self) -> Result<(), VcpuError> {
        self.settle()?;
        self.state.invalidate();
        self.count(|c| c.other += 1);
        Ok(())
    }

    fn apply_msr_filter(&mut self, bitmap: &MsrBitmap) -> Result<(), VcpuError> {
        if !self.user_space_msr {
            if bitmap.read.is_empty() && bitmap.write.is_empty() && !bitmap.unknown_exit {
                return Ok(());
            }
            return Err(unsupported(
                "msr_bitmap (this KVM lacks KVM_CAP_X86_USER_SPACE_MSR / KVM_CAP_X86_MSR_FILTER)",
            ));
        }
        let mut bitmaps: Vec<(MsrFilterRangeFlags, u32, Vec<u8>)> = Vec::new();
        for (flags, list) in [
            (MsrFilterRangeFlags::READ, &bitmap.read),
            (MsrFilterRangeFlags::WRITE, &bitmap.write),
        ] {
            let mut msrs = list.clone();
            msrs.sort_unstable();
            msrs.dedup();
            // Group MSRs within 0x4000 of the group's first into one range
            // whose bitmap allows everything but the listed ones.
            let mut i = 0;
            while i < msrs.len() {
                let base = msrs[i];
                let mut j = i;
                while j + 1 < msrs.len() && msrs[j + 1] - base < 0x4000 {
                    j += 1;
                }
                let count = msrs[j] - base + 1;
                let mut bits = vec![0xFFu8; count.div_ceil(8) as usize];
                for &m in &msrs[i..=j] {
                    let k = (m - base) as usize;
                    bits[k / 8] &= !(1 << (k % 8));
                }
                bitmaps.push((flags, base, bits));
                i = j + 1;
            }
        }
        if bitmaps.len() > kvm_bindings::KVM_MSR_FILTER_MAX_RANGES as usize {
            return Err(unsupported(format!(
                "msr_bitmap needing {} filter ranges (KVM allows {})",
                bitmaps.len(),
                kvm_bindings::KVM_MSR_FILTER_MAX_RANGES
            )));
        }
        let ranges: Vec<MsrFilterRange<'_>> = bitmaps
            .iter()
            .map(|(flags, base, bits)| MsrFilterRange {
                flags: *flags,
                base: *base,
                msr_count: (bits.len() * 8) as u32,
                bitmap: bits,
            })
            .collect();
        self.vm
            .set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
            .map_err(ioctl_err("KVM_X86_SET_MSR_FILTER"))
    }

    /// Up to 15 instruction bytes at the guest's current RIP (fewer where
    /// the bytes are not RAM or not mapped), and whether CS is 64-bit.
    fn insn_bytes(&self, regs: &Regs) -> Result<(Vec<u8>, bool), VcpuError> {
        let sregs = self.raw_sregs()?;
        Ok((self.code_bytes(&sregs, regs.rip, 15), sregs.cs.l != 0))
    }

    /// KVM_TRANSLATE, counted.
    fn translate(&self, linear: u64) -> Result<kvm_bindings::kvm_translation, kvm_ioctls::Error> {
        self.count(|c| c.translate += 1);
        self.fd.translate_gva(linear)
    }

    /// `n` code bytes from CS:`ip`, stopping early at unmapped or non-RAM bytes.
    fn code_bytes(&self, sregs: &kvm_sregs, ip: u64, n: u64) -> Vec<u8> {
        let linear = if sregs.cs.l != 0 {
            ip
        } else {
            sregs.cs.base.wrapping_add(ip) & 0xffff_ffff
        };
        let mut out = Vec::with_capacity(n as usize);
        // One KVM_TRANSLATE per 4 KiB page, not per byte: each ioctl costs
        // microseconds (on the nested KVM here about 8 µs, and this runs on
        // every I/O exit), and a page's bytes share one translation.
        let mut page: Option<(u64, u64)> = None; // (linear page, physical page)
        for i in 0..n {
            let la = linear.wrapping_add(i);
            let pa = if sregs.cr0 & (1 << 31) != 0 {
                let lpage = la & !0xfff;
                let ppage = match page {
                    Some((l, p)) if l == lpage => p,
                    _ => match self.translate(lpage) {
                        Ok(t) if t.valid != 0 => {
                            let p = t.physical_address & !0xfff;
                            page = Some((lpage, p));
                            p
                        }
                        _ => break,
                    },
                };
                ppage | (la & 0xfff)
            } else {
                la
            };
            match self.mem.read_obj::<u8>(GuestAddress(pa)) {
                Ok(b) => out.push(b),
                Err(_) => break,
            }
        }
        out
    }

    /// For an OUT that KVM exited on: finish it in the kernel now (it needs
    /// nothing from the monitor) and work out where it started. KVM's fast
    /// path leaves RIP at the OUT until completion; its instruction emulator
    /// (all ring-0 code on the nested KVM here) steps over it before exiting.
    /// Returns (instruction address, length, immediate form).
    fn settle_out(
        &mut self,
        regs: &Regs,
        port: u16,
        size: u8,
    ) -> Result<(u64, u8, bool), VcpuError> {
        let sregs = self.raw_sregs()?;
        let opsize16 = sregs.cs.l == 0 && sregs.cs.db == 0;
        let long = sregs.cs.l != 0;
        if self.fast.merge_completion {
            // Which path KVM took shows in the bytes when only one is
            // possible: an OUT of this port and size starting at RIP but
            // none ending there means RIP is still at it (the fast path),
            // so its finishing can wait for the next KVM_RUN; no such OUT at
            // RIP means the emulator has stepped over it. Both (say two
            // equal OUTs in a row) is decided by finishing it, as below.
            let dx = regs.rdx as u16;
            // One read (one translation per page) for both sides of RIP.
            let around = self.code_bytes(&sregs, regs.rip.wrapping_sub(15), 30);
            let (before, at) = around.split_at(around.len().min(15));
            let starts = crate::decode::out_at(at, port, size, dx, long, opsize16);
            // Bytes before RIP that cannot be read leave it undecided.
            let ends = before.len() < 15
                || (1..=15usize).any(|k| {
                    // Any port I/O instruction at all, to stay on the safe side.
                    decode_io(&before[15 - k..], long).is_some_and(|i| i.len as usize == k)
                });
            if let (Some(insn), false) = (starts, ends) {
                self.unfinished.set(true);
                return Ok((regs.rip, insn.len, insn.immediate));
            }
        }
        self.finish_in_kernel()?;
        let after = self.regs()?.rip;
        if after != regs.rip {
            let bytes = self.code_bytes(&sregs, regs.rip, 15);
            let insn = decode_io(&bytes, sregs.cs.l != 0);
            return Ok((
                regs.rip,
                insn.map_or(0, |i| i.len),
                insn.is_some_and(|i| i.immediate),
            ));
        }
        let start = regs.rip.wrapping_sub(3);
        let b = self.code_bytes(&sregs, start, 3);
        match <[u8; 3]>::try_from(b.as_slice())
            .ok()
            .and_then(|b| out_ending_at(b, port, size, regs.rdx as u16, opsize16))
        {
            Some(len) => Ok((
                regs.rip - len as u64,
                len,
                len - opsize16_prefix(size, opsize16) == 2,
            )),
            // Unrecognised encoding: report the address after it, length unknown.
            None => Ok((regs.rip, 0, false)),
        }
    }

    fn internal(&self, what: String) -> VcpuError {
        let regs = self.regs().unwrap_or_default();
        let bytes = self.insn_bytes(&regs).map(|b| b.0).unwrap_or_default();
        VcpuError::Internal {
            rip: regs.rip,
            bytes,
            what,
        }
    }

    /// The kvm_run bytes of element `i` of the pending I/O.
    fn io_element(&mut self, io: &IoState, i: u32) -> Result<&mut [u8], VcpuError> {
        let size = io.qual.size as usize;
        let run_size = self.vm.run_size();
        let start = io.data_offset as usize + i as usize * size;
        if start + size > run_size {
            return Err(VcpuError::Backend(format!(
                "KVM I/O data at {start:#x}+{size} lies outside the {run_size}-byte kvm_run mapping"
            )));
        }
        let base: *mut u8 = (self.fd.get_kvm_run() as *mut kvm_run).cast();
        // SAFETY: the kvm_run mapping is `run_size` bytes long and lives as
        // long as `self.fd`; the range was checked against it above, and the
        // returned slice borrows `self` mutably, so nothing else touches it.
        Ok(unsafe { std::slice::from_raw_parts_mut(base.add(start), size) })
    }

    /// The exit handing element `answered` of the pending I/O to the monitor.
    fn io_exit(&mut self, io: IoState) -> Result<VmExit, VcpuError> {
        let out_value = if io.qual.direction == IoDirection::Out {
            let data = self.io_element(&io, io.answered)?;
            let mut v = [0u8; 4];
            let n = data.len().min(4);
            v[..n].copy_from_slice(&data[..n]);
            Some(u32::from_le_bytes(v))
        } else {
            None
        };
        self.awaiting = Some(ExitReason::IoInstruction);
        self.exits += 1;
        Ok(VmExit {
            reason: ExitReason::IoInstruction,
            qualification: io.qual.encode(),
            instruction_len: io.insn_len,
            rip: io.rip,
            info: ExitInfo::Io {
                qual: io.qual,
                out_value,
            },
        })
    }

    /// KVM_RUN with immediate_exit set: KVM finishes the instruction it
    /// exited on (writes IN/MMIO data, advances RIP) without entering the guest.
    fn finish_in_kernel(&self) -> Result<(), VcpuError> {
        self.unfinished.set(false);
        let immediate_exit = self
            .run_ptr
            .0
            .as_ptr()
            .cast::<u8>()
            .wrapping_byte_add(std::mem::offset_of!(kvm_run, immediate_exit));
        // SAFETY: `run_ptr` is this vCPU's live kvm_run mapping (owned by
        // `self.fd`); a volatile byte store to it races with nothing but the
        // kernel, which reads it during KVM_RUN only.
        unsafe { std::ptr::write_volatile(immediate_exit, 1) };
        self.count(|c| c.run += 1);
        // SAFETY: KVM_RUN takes no argument; the fd is a vCPU fd whose
        // kvm_run mapping is live, and the result is checked below.
        let rc = unsafe { vmm_sys_util::ioctl::ioctl(&self.fd, KVM_RUN()) };
        let err = std::io::Error::last_os_error();
        // SAFETY: as for the store above.
        unsafe { std::ptr::write_volatile(immediate_exit, 0) };
        self.state.after_run(self.sync_active());
        if rc == 0 || err.raw_os_error() == Some(libc::EINTR) {
            Ok(())
        } else {
            Err(VcpuError::Backend(format!(
                "KVM_RUN (completing an exit): {err}"
            )))
        }
    }

    /// Abandon the pending instruction and deliver `exception` at it: let KVM
    /// finish it, then put the registers back and inject. Only for
    /// instructions whose sole effects are registers (not string I/O).
    fn fault_pending(&mut self, exception: Exception, rip: u64) -> Result<(), VcpuError> {
        let mut saved = self.regs()?;
        self.finish_in_kernel()?;
        saved.rip = rip;
        self.set_regs(&saved)?;
        self.inject(Event::Exception(exception))
    }

    fn inject_exception(&mut self, e: Exception) -> Result<(), VcpuError> {
        if e.vector >= 32 {
            return Err(VcpuError::InvalidState(format!(
                "exception vector {} is not below 32",
                e.vector
            )));
        }
        let mut ev = self.events()?;
        ev.exception.injected = 1;
        ev.exception.pending = 0;
        ev.exception.nr = e.vector;
        // Real mode pushes no error codes.
        let protected = self.raw_sregs()?.cr0 & 1 != 0;
        ev.exception.has_error_code = (protected && e.error_code.is_some()) as u8;
        ev.exception.error_code = e.error_code.unwrap_or(0);
        ev.flags = 0;
        self.before_change()?;
        self.fd
            .set_vcpu_events(&ev)
            .map_err(ioctl_err("KVM_SET_VCPU_EVENTS"))
    }

    /// One KVM_RUN, translated. `Ok(None)` means "handled here, run again".
    fn run_once(&mut self) -> Result<Option<VmExit>, VcpuError> {
        let run = self.fd.get_kvm_run();
        run.request_interrupt_window = self.controls.interrupt_window_exiting as u8;
        let immediate_exit: *mut u8 = &mut run.immediate_exit;
        self.kicker.tid.store(gettid(), Ordering::SeqCst);
        // SAFETY: immediate_exit points into self.fd's kvm_run mapping, which
        // outlives the guard; the guard is dropped below on this thread.
        let guard = unsafe { RunGuard::new(immediate_exit) };
        let kicked_before = self.kicker.kicked.swap(false, Ordering::SeqCst);
        let raw = if kicked_before {
            Err(libc::EINTR)
        } else {
            // This KVM_RUN also finishes a completed instruction left for it
            // (KVM does that before entering the guest, even when kicked).
            self.unfinished.set(false);
            let mut c = self.counts.get();
            c.run += 1;
            self.counts.set(c);
            let r = match self.fd.run() {
                Ok(exit) => Ok(RawExit::from(exit)),
                Err(e) => Err(e.errno()),
            };
            self.state.after_run(self.sync_active());
            r
        };
        self.kicker.tid.store(0, Ordering::SeqCst);
        drop(guard);
        self.fd.set_kvm_immediate_exit(0);

        let raw = match raw {
            Ok(RawExit::IoInKvmRun) => {
                // SAFETY: the last KVM_RUN returned KVM_EXIT_IO (that is what
                // produced IoInKvmRun), so `io` is the valid union member.
                let io = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.io };
                RawExit::Io {
                    port: io.port,
                    size: io.size,
                    out: io.direction as u32 == kvm_bindings::KVM_EXIT_IO_OUT,
                    count: io.count,
                    data_offset: io.data_offset,
                }
            }
            Ok(r) => r,
            Err(libc::EINTR) => {
                if kicked_before || self.kicker.kicked.swap(false, Ordering::SeqCst) {
                    let rip = self.regs()?.rip;
                    return Ok(Some(VmExit {
                        reason: ExitReason::ExternalInterrupt,
                        qualification: 0,
                        instruction_len: 0,
                        rip,
                        info: ExitInfo::ExternalInterrupt {
                            vector: HOST_KICK_VECTOR,
                        },
                    }));
                }
                return Ok(None); // another signal: run on
            }
            Err(errno) => {
                return Err(VcpuError::Backend(format!(
                    "KVM_RUN: {}",
                    std::io::Error::from_raw_os_error(errno)
                )));
            }
        };

        match raw {
            RawExit::Io {
                port,
                size,
                out,
                count,
                data_offset,
            } => {
                let regs = self.regs()?;
                let (bytes, long) = self.insn_bytes(&regs)?;
                let mut insn = decode_io(&bytes, long);
                // A string instruction is always restarted by KVM, so RIP is
                // at it; a plain OUT may already be stepped over.
                let plain_out = out && count == 1 && !insn.is_some_and(|i| i.string);
                let mut rip = regs.rip;
                if plain_out {
                    let (at, len, immediate) = self.settle_out(&regs, port, size)?;
                    rip = at;
                    insn = Some(crate::decode::IoInsn {
                        len,
                        string: false,
                        rep: false,
                        immediate,
                    });
                }
                let io = IoState {
                    qual: IoQualification {
                        size,
                        direction: if out {
                            IoDirection::Out
                        } else {
                            IoDirection::In
                        },
                        string: insn.map_or(count > 1, |i| i.string),
                        rep: insn.map_or(count > 1, |i| i.rep),
                        immediate: insn.is_some_and(|i| i.immediate),
                        port,
                    },
                    count,
                    data_offset,
                    answered: 0,
                    insn_len: insn.map_or(0, |i| i.len),
                    rip,
                    finished: plain_out,
                    regs_before: regs,
                };
                if !self.controls.io_bitmap.access_exits(port, size) {
                    // No device: reads float high, writes vanish.
                    if !out {
                        for i in 0..count {
                            self.io_element(&io, i)?.fill(0xFF);
                        }
                    }
                    if !io.finished {
                        self.finish_completed()?;
                    }
                    return Ok(None);
                }
                self.pending = Pending::Io(io);
                self.io_exit(io).map(Some)
            }
            RawExit::Mmio {
                gpa,
                len,
                write_data,
            } => {
                // For reads RIP is at the instruction (KVM restarts it with
                // the data); for writes KVM has already stepped over it.
                let rip = self.regs()?.rip;
                let read = write_data.is_none();
                self.pending = Pending::Mmio { read, len, rip };
                self.awaiting = Some(ExitReason::EptViolation);
                self.exits += 1;
                let qual = EptQualification {
                    read,
                    write: !read,
                    fetch: false,
                    linear_valid: false,
                    translated_access: false,
                };
                Ok(Some(VmExit {
                    reason: ExitReason::EptViolation,
                    qualification: qual.encode(),
                    instruction_len: 0,
                    rip,
                    info: ExitInfo::Mmio {
                        gpa,
                        linear: None,
                        size: len as u8,
                        write_data,
                        fetch: false,
                    },
                }))
            }
            RawExit::Hlt => {
                // KVM has already stepped over the (1-byte) HLT.
                let rip = self.regs()?.rip.wrapping_sub(1);
                self.pending = Pending::Hlt { rip };
                self.awaiting = Some(ExitReason::Hlt);
                self.exits += 1;
                Ok(Some(VmExit {
                    reason: ExitReason::Hlt,
                    qualification: 0,
                    instruction_len: 1,
                    rip,
                    info: ExitInfo::None,
                }))
            }
            RawExit::Msr {
                read,
                index,
                value,
                filtered,
            } => {
                if !filtered && !self.controls.msr_bitmap.unknown_exit {
                    // An MSR KVM does not implement and the monitor did not
                    // ask for: #GP, as on hardware.
                    self.fd.get_kvm_run().__bindgen_anon_1.msr.error = 1;
                    return Ok(None);
                }
                let rip = self.regs()?.rip;
                self.pending = Pending::Msr { read };
                let (reason, info) = if read {
                    (ExitReason::Rdmsr, ExitInfo::Rdmsr { index })
                } else {
                    (ExitReason::Wrmsr, ExitInfo::Wrmsr { index, value })
                };
                self.awaiting = Some(reason);
                self.exits += 1;
                Ok(Some(VmExit {
                    reason,
                    qualification: 0,
                    instruction_len: 2,
                    rip,
                    info,
                }))
            }
            RawExit::IrqWindowOpen => {
                if !self.controls.interrupt_window_exiting {
                    return Ok(None);
                }
                let rip = self.regs()?.rip;
                Ok(Some(VmExit {
                    reason: ExitReason::InterruptWindow,
                    qualification: 0,
                    instruction_len: 0,
                    rip,
                    info: ExitInfo::None,
                }))
            }
            RawExit::Shutdown => {
                let rip = self.regs()?.rip;
                Ok(Some(VmExit {
                    reason: ExitReason::TripleFault,
                    qualification: 0,
                    instruction_len: 0,
                    rip,
                    info: ExitInfo::None,
                }))
            }
            RawExit::Other(what) => Err(self.internal(what)),
            RawExit::IoInKvmRun => Err(VcpuError::Backend("I/O exit not decoded".into())),
        }
    }
}

/// The parts of a KVM exit this backend uses, copied out of kvm_run.
enum RawExit {
    /// An I/O exit whose details are still to be read from kvm_run.
    IoInKvmRun,
    Io {
        port: u16,
        size: u8,
        out: bool,
        count: u32,
        data_offset: u64,
    },
    Mmio {
        gpa: u64,
        len: usize,
        write_data: Option<[u8; 16]>,
    },
    Hlt,
    Msr {
        read: bool,
        index: u32,
        value: u64,
        filtered: bool,
    },
    IrqWindowOpen,
    Shutdown,
    Other(String),
}

impl RawExit {
    fn from(exit: VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => RawExit::IoInKvmRun,
            VcpuExit::MmioRead(gpa, data) => RawExit::Mmio {
                gpa,
                len: data.len(),
                write_data: None,
            },
            VcpuExit::MmioWrite(gpa, data) => {
                let mut w = [0u8; 16];
                let n = data.len().min(16);
                w[..n].copy_from_slice(&data[..n]);
                RawExit::Mmio {
                    gpa,
                    len: n,
                    write_data: Some(w),
                }
            }
            VcpuExit::Hlt => RawExit::Hlt,
            VcpuExit::X86Rdmsr(m) => RawExit::Msr {
                read: true,
                index: m.index,
                value: 0,
                filtered: m.reason.contains(MsrExitReason::Filter),
            },
            VcpuExit::X86Wrmsr(m) => RawExit::Msr {
                read: false,
                index: m.index,
                value: m.data,
                filtered: m.reason.contains(MsrExitReason::Filter),
            },
            VcpuExit::IrqWindowOpen => RawExit::IrqWindowOpen,
            VcpuExit::Shutdown => RawExit::Shutdown,
            VcpuExit::InternalError => RawExit::Other("KVM_EXIT_INTERNAL_ERROR".into()),
            VcpuExit::FailEntry(reason, cpu) => RawExit::Other(format!(
                "KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}, cpu {cpu})"
            )),
            other => RawExit::Other(format!("unexpected KVM exit {other:?}")),
        }
    }
}

impl Vcpu for KvmVcpu {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn run(&mut self) -> Result<VmExit, VcpuError> {
        if let Some(reason) = self.awaiting {
            return Err(VcpuError::ExitNotCompleted(reason));
        }
        // Hand out the remaining elements of a batched string I/O first.
        if let Pending::Io(io) = self.pending {
            if io.answered < io.count {
                return self.io_exit(io);
            }
            self.pending = Pending::None;
        }
        loop {
            if let Some(exit) = self.run_once()? {
                return Ok(exit);
            }
        }
    }

    fn complete(&mut self, completion: Completion) -> Result<(), VcpuError> {
        let Some(reason) = self.awaiting else {
            return Err(VcpuError::BadCompletion {
                pending: None,
                completion: completion.name(),
            });
        };
        let bad = || VcpuError::BadCompletion {
            pending: Some(reason),
            completion: completion.name(),
        };
        match (self.pending, completion) {
            (Pending::Io(mut io), Completion::Retire) if io.qual.direction == IoDirection::Out => {
                io.answered += 1;
                self.pending = Pending::Io(io);
                if io.answered == io.count {
                    if !io.finished {
                        self.finish_completed()?;
                    }
                    self.pending = Pending::None;
                }
            }
            (Pending::Io(mut io), Completion::IoIn(v)) if io.qual.direction == IoDirection::In => {
                let bytes = v.to_le_bytes();
                let el = self.io_element(&io, io.answered)?;
                let n = el.len().min(4);
                el[..n].copy_from_slice(&bytes[..n]);
                io.answered += 1;
                self.pending = Pending::Io(io);
                if io.answered == io.count {
                    self.finish_completed()?;
                    self.pending = Pending::None;
                }
            }
            (Pending::Io(io), Completion::Fault(e)) => {
                if io.qual.string || io.answered > 0 {
                    return Err(unsupported(
                        "Completion::Fault of string I/O (KVM has already moved data for the \
                         batch)",
                    ));
                }
                self.pending = Pending::None;
                if io.finished {
                    let mut r = io.regs_before;
                    r.rip = io.rip;
                    self.set_regs(&r)?;
                    self.inject(Event::Exception(e))?;
                } else {
                    self.fault_pending(e, io.rip)?;
                }
            }
            (
                Pending::Mmio {
                    read: true, len, ..
                },
                Completion::MmioRead(data),
            ) => {
                let run = self.fd.get_kvm_run();
                // SAFETY: the pending exit is KVM_EXIT_MMIO, so `mmio` is the
                // valid union member; `len` came from it and is at most 8.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let n = len.min(mmio.data.len());
                mmio.data[..n].copy_from_slice(&data[..n]);
                self.pending = Pending::None;
                self.finish_completed()?;
            }
            (Pending::Mmio { read: false, .. }, Completion::Retire) => {
                self.pending = Pending::None;
                self.finish_completed()?;
            }
            (
                Pending::Mmio {
                    read: true, rip, ..
                },
                Completion::Fault(e),
            ) => {
                self.pending = Pending::None;
                self.fault_pending(e, rip)?;
            }
            (Pending::Mmio { read: false, .. }, Completion::Fault(_)) => {
                return Err(unsupported(
                    "Completion::Fault of an MMIO write (KVM retired the instruction before \
                     exiting, so its start is unknown)",
                ));
            }
            (Pending::Hlt { .. }, Completion::Retire) => self.pending = Pending::None,
            (Pending::Hlt { rip }, Completion::Fault(e)) => {
                self.pending = Pending::None;
                let mut r = self.regs()?;
                r.rip = rip;
                self.set_regs(&r)?;
                self.inject(Event::Exception(e))?;
            }
            (Pending::Msr { read: true }, Completion::Rdmsr(v)) => {
                let run = self.fd.get_kvm_run();
                // SAFETY: the pending exit is KVM_EXIT_X86_RDMSR, so `msr` is
                // the valid union member.
                let msr = unsafe { &mut run.__bindgen_anon_1.msr };
                msr.data = v;
                msr.error = 0;
                self.pending = Pending::None;
                self.finish_completed()?;
            }
            (Pending::Msr { read: false }, Completion::Retire) => {
                // Writing a union field is safe; the exit was KVM_EXIT_X86_WRMSR.
                self.fd.get_kvm_run().__bindgen_anon_1.msr.error = 0;
                self.pending = Pending::None;
                self.finish_completed()?;
            }
            (Pending::Msr { .. }, Completion::Fault(e)) => {
                if e != Exception::GP0 {
                    return Err(unsupported(format!(
                        "faulting RDMSR/WRMSR with {e:?} (KVM can only raise #GP(0) there)"
                    )));
                }
                // Writing a union field is safe; the exit was an MSR exit.
                self.fd.get_kvm_run().__bindgen_anon_1.msr.error = 1;
                self.pending = Pending::None;
                self.finish_completed()?;
            }
            _ => return Err(bad()),
        }
        self.awaiting = None;
        Ok(())
    }

    fn regs(&self) -> Result<Regs, VcpuError> {
        self.settle()?;
        self.raw_regs().map(|r| regs_from_kvm(&r))
    }

    // Setters write through at once (and forget what was read): they are
    // off the per-exit path (boot, faulting completions), and a read after
    // one must see KVM's normalised state, not the value the monitor wrote.
    fn set_regs(&mut self, regs: &Regs) -> Result<(), VcpuError> {
        self.before_change()?;
        self.fd
            .set_regs(&regs_to_kvm(regs))
            .map_err(ioctl_err("KVM_SET_REGS"))
    }

    fn special_regs(&self) -> Result<SpecialRegs, VcpuError> {
        self.settle()?;
        self.raw_sregs().map(|s| sregs_from_kvm(&s))
    }

    fn set_special_regs(&mut self, sregs: &SpecialRegs) -> Result<(), VcpuError> {
        self.before_change()?;
        self.fd
            .set_sregs(&sregs_to_kvm(sregs))
            .map_err(ioctl_err("KVM_SET_SREGS"))
    }

    fn fpu(&self) -> Result<FpuState, VcpuError> {
        self.settle()?;
        self.count(|c| c.other += 1);
        self.fd
            .get_xsave()
            .map(|x| fpu_from_xsave(&x))
            .map_err(ioctl_err("KVM_GET_XSAVE"))
    }

    fn set_fpu(&mut self, fpu: &FpuState) -> Result<(), VcpuError> {
        self.before_change()?;
        let mut x = self.fd.get_xsave().map_err(ioctl_err("KVM_GET_XSAVE"))?;
        fpu_to_xsave(fpu, &mut x, false);
        // SAFETY: no XSAVE features are enabled dynamically in this process
        // (no arch_prctl(ARCH_REQ_XCOMP_PERM)), so the kernel reads no more
        // than the 4096-byte kvm_xsave.
        unsafe { self.fd.set_xsave(&x) }.map_err(ioctl_err("KVM_SET_XSAVE"))
    }

    fn msr(&mut self, index: u32) -> Result<u64, VcpuError> {
        self.settle()?;
        self.count(|c| c.other += 1);
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|e| VcpuError::Backend(format!("MSR list: {e:?}")))?;
        let n = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(ioctl_err("KVM_GET_MSRS"))?;
        if n != 1 {
            return Err(VcpuError::InvalidState(format!(
                "MSR {index:#x} is not readable through KVM"
            )));
        }
        Ok(msrs.as_slice()[0].data)
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError> {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data: value,
            ..Default::default()
        }])
        .map_err(|e| VcpuError::Backend(format!("MSR list: {e:?}")))?;
        self.before_change()?;
        let n = self.fd.set_msrs(&msrs).map_err(ioctl_err("KVM_SET_MSRS"))?;
        if n != 1 {
            return Err(VcpuError::InvalidState(format!(
                "MSR {index:#x} cannot be set to {value:#x} through KVM"
            )));
        }
        Ok(())
    }

    fn controls(&self) -> &ExecControls {
        &self.controls
    }

    fn set_controls(&mut self, controls: ExecControls) -> Result<(), VcpuError> {
        if controls.rdtsc_exiting {
            return Err(unsupported(
                "rdtsc_exiting (stock KVM cannot make RDTSC/RDTSCP exit)",
            ));
        }
        if controls.rdrand_exiting {
            return Err(unsupported(
                "rdrand_exiting (stock KVM cannot make RDRAND exit; it is hidden in CPUID instead)",
            ));
        }
        if controls.rdseed_exiting {
            return Err(unsupported(
                "rdseed_exiting (stock KVM cannot make RDSEED exit; it is hidden in CPUID instead)",
            ));
        }
        if controls.monitor_trap_flag {
            return Err(unsupported(
                "monitor_trap_flag (KVM offers no MTF to user space)",
            ));
        }
        if controls.preemption_timer.is_some() {
            return Err(unsupported(
                "preemption_timer (KVM offers no VMX-preemption timer to user space)",
            ));
        }
        if !controls.hlt_exiting {
            return Err(unsupported(
                "hlt_exiting = false (without an in-kernel irqchip KVM always exits on HLT)",
            ));
        }
        if controls.msr_bitmap != self.controls.msr_bitmap {
            self.settle()?;
            self.apply_msr_filter(&controls.msr_bitmap)?;
        }
        self.controls = controls;
        Ok(())
    }

    fn interruptible(&self) -> Result<bool, VcpuError> {
        // Finishing an instruction leaves RFLAGS.IF as it is, so with IF = 0
        // the answer needs neither the finishing KVM_RUN nor the events.
        let rflags = self.raw_regs()?.rflags;
        if rflags & RFLAGS_IF == 0 && self.fast.merge_completion {
            return Ok(false);
        }
        let rflags = self.regs()?.rflags;
        let ev = self.events()?;
        Ok(rflags & RFLAGS_IF != 0
            && ev.interrupt.shadow == 0
            && ev.interrupt.injected == 0
            && ev.exception.injected == 0)
    }

    fn inject(&mut self, event: Event) -> Result<(), VcpuError> {
        match event {
            Event::ExternalInterrupt(vector) => {
                if vector < 32 {
                    return Err(VcpuError::InvalidState(format!(
                        "external interrupt vector {vector} is below 32"
                    )));
                }
                if !self.interruptible()? {
                    return Err(VcpuError::CannotInject {
                        event,
                        why: "the guest is not interruptible (RFLAGS.IF = 0, an interrupt \
                              shadow, or an event already queued)",
                    });
                }
                self.before_change()?;
                let irq = kvm_interrupt { irq: vector as u32 };
                // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from the
                // pointer, which refers to a live local of that type.
                let rc =
                    unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
                if rc != 0 {
                    return Err(VcpuError::Backend(format!(
                        "KVM_INTERRUPT: {}",
                        std::io::Error::last_os_error()
                    )));
                }
                Ok(())
            }
            Event::Nmi => {
                self.before_change()?;
                self.fd.nmi().map_err(ioctl_err("KVM_NMI"))
            }
            Event::Exception(e) => self.inject_exception(e),
        }
    }

    fn kicker(&self) -> Arc<dyn Kicker> {
        Arc::clone(&self.kicker) as Arc<dyn Kicker>
    }

    fn retired(&self) -> Option<RetiredCounts> {
        None
    }

    fn host_pmu(&mut self) -> Option<&mut dyn PmuBank> {
        None
    }

    fn default_controls(&self) -> ExecControls {
        KvmVcpu::backend_default_controls()
    }

    fn deterministic_exits(&self) -> Option<u64> {
        Some(self.exit_count())
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
