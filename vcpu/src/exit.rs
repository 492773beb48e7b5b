//! VM exits: basic exit reasons with the SDM's numbers, qualification layouts,
//! and the completions a monitor answers instruction exits with.

use serde::{Deserialize, Serialize};

use crate::event::Exception;

/// Basic exit reasons (Intel SDM Vol. 3C, Appendix C), the subset CAS Motion uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum ExitReason {
    /// A host interrupt (a [`crate::Kicker`] kick or a host-counter PMI).
    ExternalInterrupt = 1,
    /// The guest triple-faulted; the vCPU is dead until reset.
    TripleFault = 2,
    /// Interrupt-window exiting: the guest can now take an external interrupt.
    InterruptWindow = 7,
    /// CPUID (always exits).
    Cpuid = 10,
    /// HLT with HLT exiting on.
    Hlt = 12,
    /// RDTSC with RDTSC exiting on.
    Rdtsc = 16,
    /// IN/OUT/INS/OUTS on a port selected by the I/O bitmap.
    IoInstruction = 30,
    /// RDMSR of an MSR selected by the MSR bitmap.
    Rdmsr = 31,
    /// WRMSR of an MSR selected by the MSR bitmap.
    Wrmsr = 32,
    /// Monitor trap flag: one instruction (or event delivery) completed.
    MonitorTrapFlag = 37,
    /// Access to guest-physical memory that is not RAM (MMIO or unbacked).
    EptViolation = 48,
    /// RDTSCP with RDTSC exiting on.
    Rdtscp = 51,
    /// The VMX-preemption timer counted down to zero.
    PreemptionTimer = 52,
    /// RDRAND with RDRAND exiting on.
    Rdrand = 57,
    /// RDSEED with RDSEED exiting on.
    Rdseed = 61,
}

impl ExitReason {
    /// The SDM's basic exit reason number.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// The reason for an SDM number, if CAS Motion uses it.
    pub fn from_number(n: u16) -> Option<Self> {
        use ExitReason::*;
        Some(match n {
            1 => ExternalInterrupt,
            2 => TripleFault,
            7 => InterruptWindow,
            10 => Cpuid,
            12 => Hlt,
            16 => Rdtsc,
            30 => IoInstruction,
            31 => Rdmsr,
            32 => Wrmsr,
            37 => MonitorTrapFlag,
            48 => EptViolation,
            51 => Rdtscp,
            52 => PreemptionTimer,
            57 => Rdrand,
            61 => Rdseed,
            _ => return None,
        })
    }

    /// Instruction exits: the guest instruction has not retired and the
    /// monitor must answer with one [`Completion`] before the next run.
    pub fn needs_completion(self) -> bool {
        use ExitReason::*;
        matches!(
            self,
            Cpuid
                | Hlt
                | Rdtsc
                | IoInstruction
                | Rdmsr
                | Wrmsr
                | EptViolation
                | Rdtscp
                | Rdrand
                | Rdseed
        )
    }
}

/// Direction of an I/O instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoDirection {
    /// OUT/OUTS: guest to device.
    Out,
    /// IN/INS: device to guest.
    In,
}

/// The I/O-instruction exit qualification (SDM Table 28-5).
///
/// Bits 2:0 size − 1 (0, 1 or 3), bit 3 direction (1 = IN), bit 4 string,
/// bit 5 REP prefix, bit 6 operand encoding (1 = immediate port), bits 31:16 port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoQualification {
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// IN or OUT.
    pub direction: IoDirection,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefixed.
    pub rep: bool,
    /// Port given as an immediate (else in DX).
    pub immediate: bool,
    /// The port.
    pub port: u16,
}

impl IoQualification {
    /// Encode to the SDM layout.
    pub fn encode(&self) -> u64 {
        (self.size.saturating_sub(1) as u64 & 7)
            | ((matches!(self.direction, IoDirection::In) as u64) << 3)
            | ((self.string as u64) << 4)
            | ((self.rep as u64) << 5)
            | ((self.immediate as u64) << 6)
            | ((self.port as u64) << 16)
    }

    /// Decode from the SDM layout; `None` for an invalid size field.
    pub fn decode(q: u64) -> Option<Self> {
        let size = match q & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        Some(IoQualification {
            size,
            direction: if q & (1 << 3) != 0 {
                IoDirection::In
            } else {
                IoDirection::Out
            },
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            immediate: q & (1 << 6) != 0,
            port: (q >> 16) as u16,
        })
    }
}

/// The EPT-violation exit qualification (SDM Table 28-7), the bits CAS Motion sets.
///
/// Bit 0 data read, bit 1 data write, bit 2 instruction fetch; bits 3..5 (the
/// EPT entry's permissions) are 0 because MMIO has no mapping; bit 7 the guest
/// linear-address field is valid; bit 8 the access was to the translated
/// linear address (not to a paging structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EptQualification {
    /// Data read.
    pub read: bool,
    /// Data write.
    pub write: bool,
    /// Instruction fetch.
    pub fetch: bool,
    /// The guest linear address field is valid.
    pub linear_valid: bool,
    /// The access was to the final translated address (not a page-table walk).
    pub translated_access: bool,
}

impl EptQualification {
    /// Encode to the SDM layout.
    pub fn encode(&self) -> u64 {
        (self.read as u64)
            | ((self.write as u64) << 1)
            | ((self.fetch as u64) << 2)
            | ((self.linear_valid as u64) << 7)
            | (((self.linear_valid && self.translated_access) as u64) << 8)
    }

    /// Decode from the SDM layout.
    pub fn decode(q: u64) -> Self {
        EptQualification {
            read: q & 1 != 0,
            write: q & 2 != 0,
            fetch: q & 4 != 0,
            linear_valid: q & (1 << 7) != 0,
            translated_access: q & (1 << 8) != 0,
        }
    }
}

/// Decoded detail of an exit, beside the raw qualification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitInfo {
    /// Nothing beyond the reason.
    None,
    /// Host interrupt vector ([`crate::HOST_KICK_VECTOR`] or [`crate::HOST_PMI_VECTOR`]).
    ExternalInterrupt {
        /// The vector.
        vector: u8,
    },
    /// One element of an I/O instruction. String I/O exits once per element;
    /// the instruction retires after the element that brings RCX to 0.
    Io {
        /// The qualification fields.
        qual: IoQualification,
        /// For OUT/OUTS: the value written (low `size` bytes).
        out_value: Option<u32>,
    },
    /// An access to guest-physical memory that is not RAM.
    Mmio {
        /// Guest-physical address.
        gpa: u64,
        /// Guest linear address, where the access had one.
        linear: Option<u64>,
        /// Access size in bytes (1..=16).
        size: u8,
        /// For writes: the bytes written (first `size` valid).
        write_data: Option<[u8; 16]>,
        /// Instruction fetch from a non-RAM address.
        fetch: bool,
    },
    /// CPUID leaf and subleaf (EAX, ECX).
    Cpuid {
        /// EAX.
        leaf: u32,
        /// ECX.
        subleaf: u32,
    },
    /// RDMSR of ECX.
    Rdmsr {
        /// The MSR.
        index: u32,
    },
    /// WRMSR of EDX:EAX to ECX.
    Wrmsr {
        /// The MSR.
        index: u32,
        /// The value.
        value: u64,
    },
    /// RDRAND/RDSEED destination width in bytes (2, 4 or 8).
    Random {
        /// Operand size.
        size: u8,
    },
}

/// One VM exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExit {
    /// Basic exit reason.
    pub reason: ExitReason,
    /// Raw exit qualification in the SDM's layout for this reason (0 where none).
    pub qualification: u64,
    /// Length of the exiting instruction (0 for non-instruction exits).
    pub instruction_len: u8,
    /// Guest RIP at the exit (of the exiting instruction for instruction exits).
    pub rip: u64,
    /// Decoded detail.
    pub info: ExitInfo,
}

/// How the monitor answers an instruction exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Completion {
    /// Retire the instruction without a value: OUT/OUTS element, HLT, WRMSR,
    /// MMIO write.
    Retire,
    /// Value read by IN/INS (low `size` bytes used).
    IoIn(u32),
    /// Bytes read by an MMIO load (first `size` used).
    MmioRead([u8; 16]),
    /// CPUID result.
    Cpuid {
        /// EAX.
        eax: u32,
        /// EBX.
        ebx: u32,
        /// ECX.
        ecx: u32,
        /// EDX.
        edx: u32,
    },
    /// RDMSR result.
    Rdmsr(u64),
    /// RDTSC result (EDX:EAX).
    Rdtsc(u64),
    /// RDTSCP result (EDX:EAX and ECX = IA32_TSC_AUX).
    Rdtscp {
        /// Time-stamp counter.
        tsc: u64,
        /// IA32_TSC_AUX.
        aux: u32,
    },
    /// RDRAND/RDSEED result; `valid = false` returns CF = 0 and a zero destination.
    Random {
        /// The random value (truncated to the operand size).
        value: u64,
        /// CF.
        valid: bool,
    },
    /// Do not retire: deliver this exception at the instruction instead
    /// (e.g. #GP(0) for a WRMSR to an MSR the monitor refuses).
    Fault(Exception),
}

impl Completion {
    /// A short name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Completion::Retire => "Retire",
            Completion::IoIn(_) => "IoIn",
            Completion::MmioRead(_) => "MmioRead",
            Completion::Cpuid { .. } => "Cpuid",
            Completion::Rdmsr(_) => "Rdmsr",
            Completion::Rdtsc(_) => "Rdtsc",
            Completion::Rdtscp { .. } => "Rdtscp",
            Completion::Random { .. } => "Random",
            Completion::Fault(_) => "Fault",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualification_round_trips_sdm_layout() {
        let q = IoQualification {
            size: 2,
            direction: IoDirection::In,
            string: true,
            rep: true,
            immediate: false,
            port: 0x3f8,
        };
        let raw = q.encode();
        assert_eq!(raw, 0x03f8_0000 | 1 | 8 | 16 | 32);
        assert_eq!(IoQualification::decode(raw), Some(q));
        assert_eq!(IoQualification::decode(2), None, "size field 2 is reserved");
    }

    #[test]
    fn exit_numbers_match_the_sdm() {
        for n in 0..100u16 {
            if let Some(r) = ExitReason::from_number(n) {
                assert_eq!(r.number(), n);
            }
        }
        assert_eq!(ExitReason::EptViolation.number(), 48);
        assert_eq!(ExitReason::Rdseed.number(), 61);
    }

    #[test]
    fn ept_qualification_linear_bits() {
        let q = EptQualification {
            read: false,
            write: true,
            fetch: false,
            linear_valid: true,
            translated_access: true,
        };
        assert_eq!(q.encode(), 0b1_1000_0010);
        assert_eq!(EptQualification::decode(q.encode()), q);
    }
}
