//! Deterministic synthetic recordings for tests, fuzzing and `motion bench
//! log`: record `i` of a stream is a pure function of `i` (and the stream's
//! seed), so a process that only knows how many records were acknowledged
//! can rebuild exactly what must be in the log.

use motion_records::{
    CounterMode, CpuidPolicy, Digest, DmaWrite, Interrupt, MachineInfo, MmioRead, PortIn, Rdrand,
    Rdtsc, Record, SerialInput,
};
use vcpu::{Regs, RetiredCounts, Timepoint};

/// A plausible machine description.
pub fn machine() -> MachineInfo {
    MachineInfo {
        backend: "soft".into(),
        guest_name: "synthetic".into(),
        vcpus: 2,
        memory_bytes: 128 << 20,
        guest_image: *blake3::hash(b"synthetic guest").as_bytes(),
        disk_image: Some(*blake3::hash(b"synthetic disk").as_bytes()),
        cpuid: CpuidPolicy::baseline(),
        counter_mode: CounterMode::Exact,
        untrapped: Vec::new(),
    }
}

/// SplitMix64: a fixed, seedable mixing function (no dependency, stable output).
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn timepoint(i: u64) -> Timepoint {
    Timepoint {
        vcpu: ((i >> 5) & 1) as u32,
        branches: i * 17,
        rip: 0xffff_ffff_8000_0000 + (i % 4096) * 3,
        rcx: i % 7,
    }
}

/// Record `i` of the small-record stream: port reads, RDTSC and interrupts
/// with timepoints, the bulk of a real recording.
pub fn small(seed: u64, i: u64) -> Record {
    let h = mix64(seed ^ mix64(i));
    match h % 10 {
        0..=5 => PortIn {
            port: [0x3fd, 0x60, 0x64, 0x1f7, 0x71][(h >> 8) as usize % 5],
            size: 1,
            value: ((h >> 16) & 0x7f) as u32 | 0x20,
        }
        .into(),
        6..=8 => Rdtsc {
            value: 1_000_000 + i * 2_400 + (h >> 52),
        }
        .into(),
        _ => Interrupt {
            vector: 0x20 + ((h >> 12) & 3) as u8,
            at: timepoint(i),
        }
        .into(),
    }
}

/// Record `i` of the realistic mix: mostly small records, with MMIO reads,
/// RDRAND, serial input, DMA payloads (disk sectors, partly compressible)
/// and a digest every 1000 records.
pub fn mixed(seed: u64, i: u64) -> Record {
    let h = mix64(seed ^ mix64(i));
    if i % 1000 == 999 {
        return Digest {
            at: timepoint(i),
            regs: Regs {
                rax: h,
                rbx: i,
                rcx: i % 7,
                rsp: 0xffff_c000_0000_8000 - (h & 0xff0),
                rip: timepoint(i).rip,
                rflags: 0x202,
                ..Regs::default()
            },
            memory_hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            retired: RetiredCounts {
                instructions: i * 90,
                branches: i * 17,
            },
        }
        .into();
    }
    match h % 100 {
        0..=79 => small(seed, i),
        80..=87 => MmioRead::new(0xfee0_0000 + (h >> 40 & 0xff0), &(h as u32).to_le_bytes())
            .map(Record::from)
            .unwrap_or_else(|_| small(seed, i)),
        88..=91 => Rdrand {
            value: mix64(h),
            ok: true,
        }
        .into(),
        92..=95 => SerialInput {
            bytes: format!("line {i}\n").into_bytes(),
        }
        .into(),
        _ => {
            // A 512-byte sector: a text-like half and a random half.
            let mut bytes = Vec::with_capacity(512);
            for k in 0..64u64 {
                let w = if k < 32 {
                    0x2020_6174_6164_0a00 | (k & 0xff)
                } else {
                    mix64(h ^ k)
                };
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            DmaWrite {
                gpa: 0x10_0000 + (h >> 20 & 0xfff000),
                bytes,
                at: Some(timepoint(i)),
            }
            .into()
        }
    }
}
