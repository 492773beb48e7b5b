//! Benchmark workloads: position-independent 64-bit code blobs that run the
//! same at CPL 0 in the soft vCPU and at CPL 3 natively (they touch only
//! registers and the data area at 0x200000, 64 KiB — the ring-3 oracle's
//! layout). A blob ends by falling through its last byte; each runner
//! appends its own terminator (`out`).
//!
//! The encodings are written out by hand so the library needs no assembler.

use std::time::{Duration, Instant};

use vcpu::{Completion, ExitReason, Regs, Segment, SpecialRegs, Vcpu, VcpuError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::SoftVcpu;

/// A workload: code, its entry registers and the instructions it retires.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Name for reports.
    pub name: &'static str,
    /// The code (falls through its last byte when done).
    pub code: Vec<u8>,
    /// Initial RSI/RDI (data addresses relative to the data area base, which the runner adds).
    pub data_offsets: (u64, u64),
    /// Bytes of data area the workload touches.
    pub data_len: u64,
    /// Instructions retired by the code (not counting a terminator).
    pub instructions: u64,
}

fn imm32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// Loop-heavy: six ALU instructions per iteration, `iters` iterations.
pub fn loop_workload(iters: u32) -> Workload {
    let mut c = vec![0x48, 0xc7, 0xc1];
    c.extend_from_slice(&imm32(iters)); // mov rcx, iters
    c.extend_from_slice(&[0x31, 0xc0]); // xor eax, eax
    c.extend_from_slice(&[0x31, 0xd2]); // xor edx, edx
    let top = c.len();
    c.extend_from_slice(&[0x48, 0x01, 0xc8]); // add rax, rcx
    c.extend_from_slice(&[0x48, 0x31, 0xc2]); // xor rdx, rax
    c.extend_from_slice(&[0x48, 0x8d, 0x04, 0x40]); // lea rax, [rax+rax*2]
    c.extend_from_slice(&[0x48, 0xc1, 0xe8, 0x03]); // shr rax, 3
    c.extend_from_slice(&[0x48, 0xff, 0xc9]); // dec rcx
    let rel = top as i64 - (c.len() as i64 + 2);
    c.extend_from_slice(&[0x75, rel as i8 as u8]); // jnz top
    Workload {
        name: "loop",
        code: c,
        data_offsets: (0, 0),
        data_len: 0,
        instructions: 3 + 6 * iters as u64,
    }
}

/// Memory-heavy: copy-and-transform a 32 KiB array of u64 into another,
/// back and forth, `passes` times (load, add, store, xor, dec, jnz per element).
pub fn mem_workload(passes: u32) -> Workload {
    const N: u32 = 4096; // u64 elements
    let mut c = vec![0x41, 0xb8];
    c.extend_from_slice(&imm32(passes)); // mov r8d, passes
    let outer = c.len();
    c.extend_from_slice(&[0xb9]);
    c.extend_from_slice(&imm32(N)); // mov ecx, N
    let inner = c.len();
    c.extend_from_slice(&[0x48, 0x8b, 0x44, 0xce, 0xf8]); // mov rax, [rsi+rcx*8-8]
    c.extend_from_slice(&[0x48, 0x01, 0xc8]); // add rax, rcx
    c.extend_from_slice(&[0x48, 0x89, 0x44, 0xcf, 0xf8]); // mov [rdi+rcx*8-8], rax
    c.extend_from_slice(&[0x48, 0x31, 0xc2]); // xor rdx, rax
    c.extend_from_slice(&[0x48, 0xff, 0xc9]); // dec rcx
    let rel = inner as i64 - (c.len() as i64 + 2);
    c.extend_from_slice(&[0x75, rel as i8 as u8]); // jnz inner
    c.extend_from_slice(&[0x48, 0x87, 0xf7]); // xchg rdi, rsi
    c.extend_from_slice(&[0x41, 0xff, 0xc8]); // dec r8d
    let rel = outer as i64 - (c.len() as i64 + 6);
    c.extend_from_slice(&[0x0f, 0x85]);
    c.extend_from_slice(&(rel as i32).to_le_bytes()); // jnz outer
    Workload {
        name: "mem",
        code: c,
        data_offsets: (0, 8 * N as u64),
        data_len: 16 * N as u64,
        instructions: 1 + passes as u64 * (1 + 6 * N as u64 + 3),
    }
}

/// Result of one timed run.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Instructions retired (from the vCPU's exact counter).
    pub instructions: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Measured {
    /// Millions of instructions per second.
    pub fn mips(&self) -> f64 {
        self.instructions as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const PML4: u64 = 0x1000;

/// Run `w` on a fresh soft vCPU in 64-bit mode at CPL 0 and time it.
pub fn run_soft(w: &Workload) -> Result<Measured, VcpuError> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)])
        .map_err(|e| VcpuError::Backend(format!("guest memory: {e}")))?;
    let wr = |a: u64, v: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|e| VcpuError::Backend(format!("guest memory: {e}")))
    };
    wr(PML4, 0x2000 | 3)?;
    wr(0x2000, 0x3000 | 3)?;
    for i in 0..4u64 {
        wr(0x3000 + i * 8, (i << 21) | 0x83)?;
    }
    let mut code = w.code.clone();
    code.extend_from_slice(&[0xe6, 0xf0]); // out 0xf0, al
    mem.write_slice(&code, GuestAddress(CODE))
        .map_err(|e| VcpuError::Backend(format!("guest memory: {e}")))?;
    let mut v = SoftVcpu::new(mem);
    let code = Segment {
        limit: 0xffff_ffff,
        selector: 8,
        type_: 0xb,
        present: true,
        s: true,
        l: true,
        g: true,
        ..Default::default()
    };
    let data = Segment {
        selector: 0x10,
        type_: 3,
        l: false,
        db: true,
        ..code
    };
    v.set_special_regs(&SpecialRegs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            type_: 0xb,
            present: true,
            limit: 0x67,
            ..Default::default()
        },
        ldt: Segment {
            unusable: true,
            ..Default::default()
        },
        cr0: 0x8000_0011,
        cr3: PML4,
        cr4: 0x20,
        efer: 0x500,
        ..Default::default()
    })?;
    v.set_regs(&Regs {
        rip: CODE,
        rsp: 0x8_0000,
        rsi: DATA + w.data_offsets.0,
        rdi: DATA + w.data_offsets.1,
        rflags: 2,
        ..Default::default()
    })?;
    let start = Instant::now();
    let x = v.run()?;
    let elapsed = start.elapsed();
    if x.reason != ExitReason::IoInstruction {
        return Err(VcpuError::Backend(format!(
            "workload {} ended with {x:?}",
            w.name
        )));
    }
    // Counted before completing: the terminating OUT is not part of the workload.
    let n = v.retired().map(|r| r.instructions).unwrap_or(0);
    v.complete(Completion::Retire)?;
    if n != w.instructions {
        return Err(VcpuError::Backend(format!(
            "workload {} retired {n} instructions, expected {}",
            w.name, w.instructions
        )));
    }
    Ok(Measured {
        instructions: n,
        elapsed,
    })
}
