//! The ring-3 oracle: run a block of x86-64 code natively in ring 3 under KVM
//! and report the final registers, flags and changed memory.
//!
//! On the nested KVM of the machines here ring-3 guest code runs natively on
//! the host CPU while ring-0 code is emulated, so the real CPU can serve as the
//! reference for the soft vCPU's differential tests: the block runs in ring 3,
//! ends with an `out` that exits to user space (the TSS I/O permission bitmap
//! allows that one port in ring 3), and any exception the block raises goes
//! through the guest IDT to a ring-0 stub that also does an `out`, so a fault
//! is a result, not a hang. A watchdog timer ends blocks that never finish.
//!
//! One VM and vCPU serve any number of blocks: registers, the code area and
//! the pages a block wrote are reset before each run. See [`layout`] for the
//! addresses, which a second implementation must reproduce exactly.
//!
//! ```no_run
//! use vcpu_kvm::ring3::{layout, Ring3Block, Ring3End, Ring3Runner};
//! let mut runner = Ring3Runner::new()?;
//! let mut block = Ring3Block::new(vec![0x48, 0x01, 0xd8]); // add rax, rbx
//! block.regs.rax = 2;
//! block.regs.rbx = 3;
//! let out = runner.run(&block)?;
//! assert_eq!(out.end, Ring3End::Completed);
//! assert_eq!(out.regs.rax, 5);
//! # Ok::<(), vcpu_kvm::ring3::Ring3Error>(())
//! ```

pub mod layout;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_xsave};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vcpu::{Exception, FpuState, Regs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::conv::{fpu_from_xsave, fpu_to_xsave, regs_from_kvm, regs_to_kvm};
use crate::kick::{RunGuard, Watchdog, gettid};
use crate::vm::{KvmSetupError, open_kvm, register_memory, supported_cpuid};
use layout::*;

/// Why the oracle could not run a block (as opposed to the block faulting,
/// which is a normal [`Ring3End::Fault`] outcome).
#[derive(Debug, thiserror::Error)]
pub enum Ring3Error {
    /// KVM is missing or unusable; the message says why.
    #[error("KVM unusable: {0}")]
    Setup(#[from] KvmSetupError),
    /// The block does not fit the layout.
    #[error("bad block: {0}")]
    BadBlock(String),
    /// A KVM ioctl failed while running.
    #[error("{what} failed: {err}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The OS error.
        err: kvm_ioctls::Error,
    },
    /// KVM stopped the guest for a reason the oracle cannot explain.
    #[error("unexpected KVM exit: {0}")]
    UnexpectedExit(String),
    /// The watchdog timer could not be set up.
    #[error("watchdog timer: {0}")]
    Watchdog(#[from] std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Ring3Error {
    move |err| Ring3Error::Kvm { what, err }
}

/// One block to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring3Block {
    /// The code, placed at [`layout::CODE_BASE`]; execution starts at its
    /// first byte and the block ends when it falls through its last byte.
    pub code: Vec<u8>,
    /// Initial GPRs. `rip` is ignored (always `CODE_BASE`); of `rflags` only
    /// [`layout::RFLAGS_SETTABLE`] bits are taken.
    pub regs: Regs,
    /// Initial x87/SSE state.
    pub fpu: FpuState,
    /// Initial memory: (address, bytes) inside the data or stack area. Every
    /// other data and stack byte starts as zero.
    pub memory: Vec<(u64, Vec<u8>)>,
}

impl Ring3Block {
    /// A block with zeroed registers, RSP at [`layout::STACK_TOP`], default
    /// FPU state and zeroed memory.
    pub fn new(code: Vec<u8>) -> Self {
        Ring3Block {
            code,
            regs: Regs {
                rsp: STACK_TOP,
                ..Regs::default()
            },
            fpu: FpuState::default(),
            memory: Vec::new(),
        }
    }
}

/// How a block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring3End {
    /// Fell through its last byte. `regs.rip` is `CODE_BASE + code.len()`.
    Completed,
    /// Raised an exception. `regs` are at the faulting (or, for traps, the
    /// next) instruction: RIP, RSP and RFLAGS are taken from the exception
    /// frame (RFLAGS as pushed, so RF may be set), the other GPRs as they
    /// were when the exception was delivered.
    Fault {
        /// The exception, with its error code where the vector has one.
        exception: Exception,
        /// CR2 for #PF (vector 14), else 0.
        cr2: u64,
    },
    /// The block executed an I/O instruction of its own to [`layout::END_PORT`]
    /// (the only port ring 3 may use; others are #GP(0)). `regs` are as KVM
    /// reported them.
    Io {
        /// The port.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// OUT (true) or IN.
        out: bool,
    },
    /// Still running when the timeout expired; `regs` are where it was stopped.
    Timeout,
    /// The guest triple-faulted (should not happen: the fault path is
    /// always mapped). The vCPU was recreated.
    TripleFault,
    /// KVM reported a debug exit (only with [`GuestDebug`] enabled).
    DebugExit {
        /// The exception KVM reports (1 = #DB, 3 = #BP).
        exception: u32,
        /// Guest RIP KVM reports.
        pc: u64,
        /// DR6 at the exit.
        dr6: u64,
    },
}

/// KVM guest-debug modes the oracle can turn on (for probing the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestDebug {
    /// No guest debugging (the default).
    Off,
    /// KVM_GUESTDBG_SINGLESTEP: a debug exit after every guest instruction.
    SingleStep,
    /// KVM_GUESTDBG_USE_HW_BP with an execute breakpoint at this address.
    HwBreakpoint(u64),
}

/// The result of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring3Outcome {
    /// How it ended.
    pub end: Ring3End,
    /// Final GPRs, RIP and RFLAGS (see [`Ring3End`] for what RIP means).
    pub regs: Regs,
    /// Final x87/SSE state.
    pub fpu: FpuState,
    /// Every 4 KiB page of the data and stack areas whose final contents
    /// differ from its initial contents, as (page address, 4096 bytes), in
    /// address order.
    pub memory: Vec<(u64, Vec<u8>)>,
}

impl Ring3Outcome {
    /// Read `len` bytes of final memory at `addr` from the changed pages,
    /// or `None` if any byte lies on a page that did not change.
    pub fn changed_bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        (0..len as u64)
            .map(|i| {
                let a = addr.checked_add(i)?;
                let page = a & !(PAGE_SIZE - 1);
                let (_, bytes) = self.memory.iter().find(|(p, _)| *p == page)?;
                Some(bytes[(a - page) as usize])
            })
            .collect()
    }
}

/// Runs ring-3 blocks on one VM with one vCPU, resetting state between runs.
pub struct Ring3Runner {
    kvm: Kvm,
    vm: VmFd,
    vcpu: VcpuFd,
    mem: GuestMemoryMmap,
    base_sregs: kvm_sregs,
    /// The vCPU's XSAVE image at creation; each run patches its legacy area.
    base_xsave: Box<kvm_xsave>,
    /// The vCPU's segment state was changed by the last run (a fault entered ring 0).
    sregs_dirty: bool,
    watchdog: Option<Watchdog>,
    timeout: Duration,
    /// Length of the previous block's code plus terminator (bytes to refill).
    last_code_end: u64,
    /// Writable pages that may hold non-zero bytes.
    dirty_pages: Vec<u64>,
    page_buf: Vec<u8>,
}

/// `out END_PORT, al`.
const TERMINATOR: [u8; 2] = [0xE6, END_PORT as u8];

impl Ring3Runner {
    /// Create the VM, its memory (see [`layout`]) and one vCPU in ring 3.
    /// Fails with a reason when /dev/kvm is missing or unusable.
    pub fn new() -> Result<Self, Ring3Error> {
        let kvm = open_kvm()?;
        let vm = kvm
            .create_vm()
            .map_err(KvmSetupError::ioctl("KVM_CREATE_VM"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM_SIZE as usize)])
            .map_err(|e| KvmSetupError::Memory(e.to_string()))?;
        register_memory(&vm, &mem)?;
        for (addr, bytes) in system_image() {
            mem.write_slice(&bytes, GuestAddress(addr))
                .map_err(|e| KvmSetupError::Memory(e.to_string()))?;
        }
        mem.write_slice(
            &vec![CODE_FILL; CODE_SIZE as usize],
            GuestAddress(CODE_BASE),
        )
        .map_err(|e| KvmSetupError::Memory(e.to_string()))?;
        let vcpu = Self::new_vcpu(&kvm, &vm)?;
        let base_sregs = user_sregs(vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?);
        let base_xsave = Box::new(vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?);
        Ok(Ring3Runner {
            kvm,
            vm,
            vcpu,
            mem,
            base_sregs,
            base_xsave,
            sregs_dirty: true,
            watchdog: None,
            timeout: Duration::from_secs(2),
            last_code_end: 0,
            dirty_pages: Vec::new(),
            page_buf: vec![0; PAGE_SIZE as usize],
        })
    }

    fn new_vcpu(kvm: &Kvm, vm: &VmFd) -> Result<VcpuFd, Ring3Error> {
        let vcpu = vm
            .create_vcpu(0)
            .map_err(KvmSetupError::ioctl("KVM_CREATE_VCPU"))?;
        let cpuid = supported_cpuid(kvm)?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(KvmSetupError::ioctl("KVM_SET_CPUID2"))?;
        Ok(vcpu)
    }

    /// Give the vCPU this CPUID table (KVM_SET_CPUID2) instead of the host's
    /// supported one. Call before the first run: KVM may refuse changes
    /// after the vCPU has run.
    pub fn set_cpuid(&mut self, entries: &[crate::cpuid::CpuidEntry]) -> Result<(), Ring3Error> {
        let cpuid = crate::cpuid::to_kvm(entries)
            .map_err(|e| Ring3Error::BadBlock(format!("CPUID table: {e}")))?;
        self.vcpu
            .set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2"))
    }

    /// The host's supported CPUID entries (KVM_GET_SUPPORTED_CPUID).
    pub fn supported_cpuid(&self) -> Result<Vec<crate::cpuid::CpuidEntry>, Ring3Error> {
        Ok(crate::cpuid::from_kvm(&supported_cpuid(&self.kvm)?))
    }

    /// Turn KVM guest debugging on or off for the following runs.
    pub fn set_guest_debug(&mut self, mode: GuestDebug) -> Result<(), Ring3Error> {
        use kvm_bindings::{
            KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, kvm_guest_debug,
        };
        let mut dbg = kvm_guest_debug::default();
        match mode {
            GuestDebug::Off => {}
            GuestDebug::SingleStep => {
                dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
            }
            GuestDebug::HwBreakpoint(addr) => {
                dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
                dbg.arch.debugreg[0] = addr;
                // DR7: L0 enabled, R/W0 = 00 (execute), LEN0 = 00.
                dbg.arch.debugreg[7] = 1;
            }
        }
        self.vcpu
            .set_guest_debug(&dbg)
            .map_err(kvm_err("KVM_SET_GUEST_DEBUG"))
    }

    /// How long a block may run before it is stopped with [`Ring3End::Timeout`]
    /// (default 2 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn check(block: &Ring3Block) -> Result<(), Ring3Error> {
        if block.code.len() as u64 > CODE_SIZE - TERMINATOR.len() as u64 {
            return Err(Ring3Error::BadBlock(format!(
                "code is {} bytes, at most {} fit",
                block.code.len(),
                CODE_SIZE - TERMINATOR.len() as u64
            )));
        }
        for (addr, bytes) in &block.memory {
            let end = addr.checked_add(bytes.len() as u64);
            let inside =
                |base: u64, size: u64| *addr >= base && end.is_some_and(|e| e <= base + size);
            if !inside(DATA_BASE, DATA_SIZE) && !inside(STACK_BASE, STACK_SIZE) {
                return Err(Ring3Error::BadBlock(format!(
                    "memory range {addr:#x}+{:#x} is not inside the data area \
                     {DATA_BASE:#x}+{DATA_SIZE:#x} or the stack area {STACK_BASE:#x}+{STACK_SIZE:#x}",
                    bytes.len()
                )));
            }
        }
        Ok(())
    }

    fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), Ring3Error> {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|e| {
                Ring3Error::UnexpectedExit(format!("guest memory write at {addr:#x}: {e}"))
            })
    }

    fn read_u64(&self, addr: u64) -> Result<u64, Ring3Error> {
        let mut b = [0u8; 8];
        self.mem
            .read_slice(&mut b, GuestAddress(addr))
            .map_err(|e| {
                Ring3Error::UnexpectedExit(format!("guest memory read at {addr:#x}: {e}"))
            })?;
        Ok(u64::from_le_bytes(b))
    }

    /// Load the block's code and memory; returns the initial image of the
    /// pages the block initialised.
    fn load(&mut self, block: &Ring3Block) -> Result<BTreeMap<u64, Vec<u8>>, Ring3Error> {
        let code_end = CODE_BASE + block.code.len() as u64;
        self.write(CODE_BASE, &block.code)?;
        self.write(code_end, &TERMINATOR)?;
        let new_end = code_end + TERMINATOR.len() as u64;
        if self.last_code_end > new_end {
            let fill = vec![CODE_FILL; (self.last_code_end - new_end) as usize];
            self.write(new_end, &fill)?;
        }
        self.last_code_end = new_end;

        let zero = vec![0u8; PAGE_SIZE as usize];
        for page in std::mem::take(&mut self.dirty_pages) {
            self.write(page, &zero)?;
        }
        let mut image: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (addr, bytes) in &block.memory {
            for (i, b) in bytes.iter().enumerate() {
                let a = addr + i as u64;
                let page = a & !(PAGE_SIZE - 1);
                image.entry(page).or_insert_with(|| zero.clone())[(a - page) as usize] = *b;
            }
        }
        for (page, bytes) in &image {
            self.write(*page, bytes)?;
        }
        Ok(image)
    }

    /// Run one block to its end, a fault, or the timeout.
    pub fn run(&mut self, block: &Ring3Block) -> Result<Ring3Outcome, Ring3Error> {
        Self::check(block)?;
        let image = self.load(block)?;
        let code_end = CODE_BASE + block.code.len() as u64;

        if self.sregs_dirty {
            self.vcpu
                .set_sregs(&self.base_sregs)
                .map_err(kvm_err("KVM_SET_SREGS"))?;
            self.sregs_dirty = false;
        }
        let mut regs = block.regs;
        regs.rip = CODE_BASE;
        regs.rflags = (regs.rflags & RFLAGS_SETTABLE) | 2;
        self.vcpu
            .set_regs(&regs_to_kvm(&regs))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        fpu_to_xsave(&block.fpu, &mut self.base_xsave, true);
        // SAFETY: no XSAVE features are enabled dynamically in this process
        // (no arch_prctl(ARCH_REQ_XCOMP_PERM)), so the kernel reads no more
        // than the 4096-byte kvm_xsave.
        unsafe { self.vcpu.set_xsave(&self.base_xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;

        let exit = self.run_vcpu()?;
        let kregs: kvm_regs = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        let mut regs = regs_from_kvm(&kregs);
        let end = match exit {
            RawExit::Io { port, size, out } => {
                // Let KVM finish the I/O instruction it started, so nothing of
                // it is pending into the next block's run.
                self.complete_pending_io()?;
                let stubs = STUBS_BASE..STUBS_BASE + 256 * STUB_SIZE;
                if out && port == END_PORT && (regs.rip == code_end || regs.rip == code_end + 2) {
                    regs.rip = code_end;
                    Ring3End::Completed
                } else if out && port == FAULT_PORT && stubs.contains(&regs.rip) {
                    self.fault(&mut regs)?
                } else {
                    Ring3End::Io { port, size, out }
                }
            }
            RawExit::Interrupted => Ring3End::Timeout,
            RawExit::Debug { exception, pc, dr6 } => {
                self.sregs_dirty = true;
                Ring3End::DebugExit { exception, pc, dr6 }
            }
            RawExit::Shutdown => {
                self.vcpu = Self::new_vcpu(&self.kvm, &self.vm)?;
                self.sregs_dirty = true;
                Ring3End::TripleFault
            }
        };
        let fpu = fpu_from_xsave(&self.vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?);
        let memory = self.changed_pages(&image)?;
        Ok(Ring3Outcome {
            end,
            regs,
            fpu,
            memory,
        })
    }

    /// Decode the exception frame the stub was entered with.
    fn fault(&mut self, regs: &mut Regs) -> Result<Ring3End, Ring3Error> {
        self.sregs_dirty = true;
        let vector = ((regs.rip - STUBS_BASE) / STUB_SIZE) as u8;
        let mut at = regs.rsp;
        let error_code = if Exception::vector_has_error_code(vector) {
            at = at.wrapping_add(8);
            Some(self.read_u64(regs.rsp)? as u32)
        } else {
            None
        };
        let rip = self.read_u64(at)?;
        let cs = self.read_u64(at.wrapping_add(8))?;
        let rflags = self.read_u64(at.wrapping_add(16))?;
        let rsp = self.read_u64(at.wrapping_add(24))?;
        if cs as u16 != USER_CS {
            return Err(Ring3Error::UnexpectedExit(format!(
                "exception {vector} taken with CS {cs:#x}, not from the ring-3 block \
                 (the oracle's own ring-0 stub faulted?)"
            )));
        }
        let cr2 = if vector == 14 {
            self.vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?.cr2
        } else {
            0
        };
        regs.rip = rip;
        regs.rsp = rsp;
        regs.rflags = rflags;
        Ok(Ring3End::Fault {
            exception: Exception { vector, error_code },
            cr2,
        })
    }

    fn changed_pages(
        &mut self,
        image: &BTreeMap<u64, Vec<u8>>,
    ) -> Result<Vec<(u64, Vec<u8>)>, Ring3Error> {
        let mut changed = Vec::new();
        let mut buf = std::mem::take(&mut self.page_buf);
        for page in writable_pages() {
            self.mem
                .read_slice(&mut buf, GuestAddress(page))
                .map_err(|e| Ring3Error::UnexpectedExit(format!("guest memory read: {e}")))?;
            let differs = match image.get(&page) {
                Some(initial) => *initial != buf,
                None => buf.iter().any(|&b| b != 0),
            };
            if differs {
                changed.push((page, buf.clone()));
            }
            if differs || image.contains_key(&page) {
                self.dirty_pages.push(page);
            }
        }
        self.page_buf = buf;
        Ok(changed)
    }

    fn ensure_watchdog(&mut self) -> Result<(), Ring3Error> {
        let tid = gettid();
        if self.watchdog.as_ref().is_none_or(|w| w.tid() != tid) {
            self.watchdog = Some(Watchdog::for_current_thread()?);
        }
        Ok(())
    }

    /// KVM_RUN until a guest exit, with the watchdog armed.
    fn run_vcpu(&mut self) -> Result<RawExit, Ring3Error> {
        self.ensure_watchdog()?;
        let watchdog = self.watchdog.as_ref().expect("ensured above");
        watchdog.arm(self.timeout)?;
        let immediate_exit: *mut u8 = &mut self.vcpu.get_kvm_run().immediate_exit;
        // SAFETY: the kvm_run mapping belongs to self.vcpu, which outlives the
        // guard (dropped at the end of this function, on this thread).
        let guard = unsafe { RunGuard::new(immediate_exit) };
        let result = match self.vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => Ok(RawExit::Io {
                port,
                size: data.len() as u8,
                out: true,
            }),
            Ok(VcpuExit::IoIn(port, data)) => Ok(RawExit::Io {
                port,
                size: data.len() as u8,
                out: false,
            }),
            Ok(VcpuExit::Shutdown) => Ok(RawExit::Shutdown),
            Ok(VcpuExit::Debug(d)) => Ok(RawExit::Debug {
                exception: d.exception,
                pc: d.pc,
                dr6: d.dr6,
            }),
            Ok(other) => Err(Ring3Error::UnexpectedExit(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR => Ok(RawExit::Interrupted),
            Err(e) => Err(Ring3Error::Kvm {
                what: "KVM_RUN",
                err: e,
            }),
        };
        drop(guard);
        watchdog.disarm()?;
        self.vcpu.set_kvm_immediate_exit(0);
        if result.is_err() {
            self.sregs_dirty = true;
        }
        result
    }

    /// KVM_RUN with immediate_exit set: completes a pending I/O instruction
    /// without entering the guest.
    fn complete_pending_io(&mut self) -> Result<(), Ring3Error> {
        self.vcpu.set_kvm_immediate_exit(1);
        let r = self.vcpu.run().map(|_| ());
        self.vcpu.set_kvm_immediate_exit(0);
        match r {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Ok(()) => Ok(()),
            Err(e) => Err(Ring3Error::Kvm {
                what: "KVM_RUN (completing I/O)",
                err: e,
            }),
        }
    }

    /// Run a block and time it, for native-speed measurements. The time
    /// includes one user-space exit and the register set-up (tens of µs
    /// here), so time blocks that run for milliseconds at least.
    pub fn time_block(
        &mut self,
        block: &Ring3Block,
    ) -> Result<(Ring3Outcome, Duration), Ring3Error> {
        let start = Instant::now();
        let out = self.run(block)?;
        Ok((out, start.elapsed()))
    }

    /// Native MIPS of [`LOOP_CODE`] (`dec rcx; jnz` back, two instructions
    /// per iteration) run `iterations` times in ring 3.
    pub fn native_mips_loop(&mut self, iterations: u64) -> Result<LoopBench, Ring3Error> {
        let mut block = Ring3Block::new(LOOP_CODE.to_vec());
        block.regs.rcx = iterations.max(1);
        let saved = self.timeout;
        self.timeout = Duration::from_secs(60);
        let timed = self.time_block(&block);
        self.timeout = saved;
        let (out, elapsed) = timed?;
        if out.end != Ring3End::Completed || out.regs.rcx != 0 {
            return Err(Ring3Error::UnexpectedExit(format!(
                "benchmark loop ended with {:?}, rcx {}",
                out.end, out.regs.rcx
            )));
        }
        let instructions = 2 * iterations.max(1);
        Ok(LoopBench {
            instructions,
            seconds: elapsed.as_secs_f64(),
            mips: instructions as f64 / elapsed.as_secs_f64() / 1e6,
        })
    }
}

/// The benchmark loop: `L: dec rcx; jnz L` (runs RCX times).
pub const LOOP_CODE: [u8; 5] = [0x48, 0xFF, 0xC9, 0x75, 0xFB];

/// A native loop measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopBench {
    /// Instructions retired by the loop.
    pub instructions: u64,
    /// Wall time of the run, including one exit.
    pub seconds: f64,
    /// Millions of instructions per second.
    pub mips: f64,
}

enum RawExit {
    Io { port: u16, size: u8, out: bool },
    Debug { exception: u32, pc: u64, dr6: u64 },
    Interrupted,
    Shutdown,
}

/// The oracle's ring-3 segment and control state, starting from the vCPU's
/// reset sregs (which carry KVM's APIC base).
fn user_sregs(mut s: kvm_sregs) -> kvm_sregs {
    use kvm_bindings::kvm_segment;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: USER_CS,
        type_: 11,
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: USER_DS,
        type_: 3,
        db: 1,
        l: 0,
        ..code
    };
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = kvm_segment {
        base: TSS_BASE,
        limit: TSS_LIMIT,
        selector: TSS_SEL,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.ldt = kvm_segment {
        unusable: 1,
        present: 0,
        type_: 2,
        ..s.tr
    };
    s.ldt.selector = 0;
    s.ldt.base = 0;
    s.ldt.limit = 0;
    s.gdt.base = GDT_BASE;
    s.gdt.limit = 7 * 8 - 1;
    s.idt.base = IDT_BASE;
    s.idt.limit = 256 * 16 - 1;
    s.cr0 = CR0;
    s.cr3 = PML4_BASE;
    s.cr4 = CR4;
    s.efer = EFER;
    s.cr2 = 0;
    s.cr8 = 0;
    s.interrupt_bitmap = [0; 4];
    s
}

#[cfg(test)]
mod tests;
