//! The CPUID policy: a fixed answer per leaf, so the guest sees the same CPU
//! on every host and every backend (and replays need not record CPUID).
//!
//! It describes a plain x86-64 CPU with SSE2 (what the soft vCPU implements),
//! RDRAND/RDSEED (they exit to the monitor), no local APIC, and a hypervisor
//! leaf naming CAS Motion.

fn regs(s: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    [w(0), w(4), w(8)]
}

const BRAND: &[u8; 48] =
    b"CAS Motion virtual CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// CPUID(`leaf`, `subleaf`) as (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        0 => {
            let [b, d, c] = regs(b"GenuineIntel");
            [0xd, b, c, d]
        }
        1 => {
            // Family 6 model 58 stepping 9; CLFLUSH 64 bytes; one logical CPU.
            let eax = 0x0003_06a9;
            let ebx = 8 << 8;
            let ecx = (1 << 30) | (1 << 31); // RDRAND, hypervisor
            let edx = (1 << 0) // FPU
                | (1 << 4) // TSC
                | (1 << 5) // MSR
                | (1 << 6) // PAE
                | (1 << 8) // CX8
                | (1 << 13) // PGE
                | (1 << 15) // CMOV
                | (1 << 16) // PAT
                | (1 << 19) // CLFSH
                | (1 << 23) // MMX
                | (1 << 24) // FXSR
                | (1 << 25) // SSE
                | (1 << 26); // SSE2
            [eax, ebx, ecx, edx]
        }
        7 if subleaf == 0 => [0, 1 << 18, 0, 0], // RDSEED
        0x4000_0000 => {
            let [b, c, d] = regs(b"CASMotionVMM");
            [0x4000_0000, b, c, d]
        }
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        // LAHF/SAHF in 64-bit mode; SYSCALL, NX, long mode.
        0x8000_0001 => [0, 0, 1, (1 << 11) | (1 << 20) | (1 << 29)],
        0x8000_0002..=0x8000_0004 => {
            let i = (leaf - 0x8000_0002) as usize * 16;
            let w = |k: usize| {
                let b = &BRAND[i + 4 * k..i + 4 * k + 4];
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            };
            [w(0), w(1), w(2), w(3)]
        }
        0x8000_0008 => [0x3028, 0, 0, 0], // 40 physical, 48 linear address bits
        _ => [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_and_features() {
        let [max, b, c, d] = cpuid(0, 0);
        assert_eq!(max, 0xd);
        let mut v = Vec::new();
        for r in [b, d, c] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        assert_ne!(cpuid(1, 0)[3] & (1 << 26), 0, "SSE2");
        assert_ne!(cpuid(0x8000_0001, 0)[3] & (1 << 29), 0, "long mode");
        assert_eq!(cpuid(0x1234, 0), [0; 4]);
    }
}
