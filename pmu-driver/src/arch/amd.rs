//! The AMD equivalents of what the driver programs on Intel, and where they
//! differ. CAS Motion's development hosts are AMD EPYC Zen 5 (family 1AH)
//! under a hypervisor that hides the PMU (CPUID 8000_0001H:`ECX[23]` = 0,
//! 8000_0022H all zero, no `cpu` perf PMU): nothing here can be exercised
//! against real AMD counters on them, which is why the model in
//! [`crate::model`] is Intel's and the AMD side is the encoding below,
//! tested for its bit layout.
//!
//! | | Intel (architectural, v2+) | AMD (core PMC) |
//! |---|---|---|
//! | discovery | CPUID 0AH: version, #counters, width, event vector | fixed: 4 legacy counters (K7+); 6 with PerfCtrExtCore (CPUID 8000_0001H:`ECX[23]`); PerfMonV2: CPUID 8000_0022H (`EAX[0]`, `EBX[3:0]` = #counters) |
//! | event select | IA32_PERFEVTSELx = 186H + x | legacy PerfEvtSel0-3 = C001_0000H + x; extended PerfEvtSel0-5 = C001_0200H + 2x |
//! | counter | IA32_PMCx = C1H + x (A_PMCx = 4C1H + x full width) | legacy PerfCtr0-3 = C001_0004H + x; extended PerfCtr0-5 = C001_0201H + 2x; 48 bits, writes are full width |
//! | branches | C4H umask 00H "branch instructions retired" (architectural) | C2H "retired branch instructions" (all, incl. far/interrupt returns); D1H "retired conditional branches" (rr's choice on Zen: deterministic where C2H counts some far transfers inconsistently) |
//! | event bits | event 7:0, umask 15:8, USR 16, OS 17, E 18, INT 20, EN 22, INV 23, CMASK 31:24 | the same low 32 bits, plus event 11:8 in bits 35:32 and HostOnly 41 / GuestOnly 40 (what perf's `exclude_host` sets) |
//! | global enable | IA32_PERF_GLOBAL_CTRL 38FH | PerfMonV2 only: PerfCntrGlobalCtl C000_0301H; older parts: none, each counter's EN bit is the only switch |
//! | overflow status | IA32_PERF_GLOBAL_STATUS 38EH, cleared by writing IA32_PERF_GLOBAL_OVF_CTRL 390H | PerfMonV2: PerfCntrGlobalStatus C000_0300H, cleared by PerfCntrGlobalStatusClr C000_0302H; older parts: none — an overflow is seen as the counter's bit 47 dropping to 0 (it was armed with −n, top bit set) |
//! | PMI | LVT performance counter entry, skid ~100-125 branches (rr) | same LVT entry; skid on Zen is much larger and not bounded: rr uses 10,000 and still marks it "unbounded" |
//! | guest/host | VM-entry/exit MSR-load lists switch counters | GuestOnly/HostOnly bits in PerfEvtSel, with EFER.SVME set |
//!
//! The driver's overflow bookkeeping (arm at −n, fold the count into a
//! 64-bit total, re-arm across a wrap, save/restore a vCPU's context) carries
//! over unchanged; only the register numbers and the two status mechanisms
//! above differ.

use serde::{Deserialize, Serialize};

/// Legacy PerfEvtSel0 (PerfEvtSeln = this + n, n < 4).
pub const PERF_EVT_SEL0_LEGACY: u32 = 0xC001_0000;
/// Legacy PerfCtr0 (PerfCtrn = this + n, n < 4).
pub const PERF_CTR0_LEGACY: u32 = 0xC001_0004;
/// Core-extension PerfEvtSel0 (PerfEvtSeln = this + 2n, n < 6).
pub const PERF_EVT_SEL0: u32 = 0xC001_0200;
/// Core-extension PerfCtr0 (PerfCtrn = this + 2n, n < 6).
pub const PERF_CTR0: u32 = 0xC001_0201;
/// PerfMonV2 PerfCntrGlobalStatus.
pub const PERF_CNTR_GLOBAL_STATUS: u32 = 0xC000_0300;
/// PerfMonV2 PerfCntrGlobalCtl.
pub const PERF_CNTR_GLOBAL_CTL: u32 = 0xC000_0301;
/// PerfMonV2 PerfCntrGlobalStatusClr.
pub const PERF_CNTR_GLOBAL_STATUS_CLR: u32 = 0xC000_0302;

/// Retired branch instructions (PPR: Core::X86::Pmc::Core::ExRetBrn).
pub const EVENT_RETIRED_BRANCHES: u16 = 0xC2;
/// Retired conditional branch instructions (ExRetCond).
pub const EVENT_RETIRED_CONDITIONAL_BRANCHES: u16 = 0xD1;
/// Retired instructions (ExRetInstr).
pub const EVENT_RETIRED_INSTRUCTIONS: u16 = 0xC0;

/// PerfEvtSel bit: count only in guest mode.
pub const GUEST_ONLY: u64 = 1 << 40;
/// PerfEvtSel bit: count only in host mode.
pub const HOST_ONLY: u64 = 1 << 41;

/// Which MSR layout a part has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AmdLayout {
    /// K7-era four counters at C001_0000H/C001_0004H, no global control.
    Legacy,
    /// Six interleaved counters at C001_0200H (PerfCtrExtCore), no global
    /// control.
    CoreExtension,
    /// PerfMonV2 (Zen 4 and later): core-extension counters plus global
    /// control and status MSRs.
    PerfMonV2,
}

impl AmdLayout {
    /// (PerfEvtSel, PerfCtr) MSRs of counter `n`.
    pub fn msrs(self, n: u32) -> (u32, u32) {
        match self {
            AmdLayout::Legacy => (PERF_EVT_SEL0_LEGACY + n, PERF_CTR0_LEGACY + n),
            AmdLayout::CoreExtension | AmdLayout::PerfMonV2 => {
                (PERF_EVT_SEL0 + 2 * n, PERF_CTR0 + 2 * n)
            }
        }
    }

    /// (global control, status, status clear) where the part has them.
    pub fn global_msrs(self) -> Option<(u32, u32, u32)> {
        match self {
            AmdLayout::PerfMonV2 => Some((
                PERF_CNTR_GLOBAL_CTL,
                PERF_CNTR_GLOBAL_STATUS,
                PERF_CNTR_GLOBAL_STATUS_CLR,
            )),
            _ => None,
        }
    }

    /// Whether an overflow of a counter armed at −n shows only in the
    /// counter itself (bit 47 clear again) — parts without a status MSR.
    pub fn overflow_from_counter_top_bit(self) -> bool {
        self.global_msrs().is_none()
    }
}

/// An AMD PerfEvtSel value: 12-bit event (bits 7:0 and 35:32), unit mask,
/// USR/OS, INT, EN, and guest/host-only.
pub fn perf_evt_sel(
    event: u16,
    umask: u8,
    user: bool,
    kernel: bool,
    pmi: bool,
    guest_only: bool,
) -> u64 {
    let mut v =
        (event as u64 & 0xff) | ((event as u64 >> 8) & 0xf) << 32 | (umask as u64) << 8 | 1 << 22;
    if user {
        v |= 1 << 16;
    }
    if kernel {
        v |= 1 << 17;
    }
    if pmi {
        v |= 1 << 20;
    }
    if guest_only {
        v |= GUEST_ONLY;
    }
    v
}

/// What an AMD host's CPUID says about its core counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmdPmuInfo {
    /// CPUID 8000_0001H:`ECX[23]` PerfCtrExtCore.
    pub perf_ctr_ext_core: bool,
    /// CPUID 8000_0022H:`EAX[0]` PerfMonV2.
    pub perfmon_v2: bool,
    /// CPUID 8000_0022H:`EBX[3:0]`: core counters (PerfMonV2 only).
    pub v2_counters: u8,
}

impl AmdPmuInfo {
    /// Decode from CPUID 8000_0001H:ECX and 8000_0022H EAX/EBX.
    pub fn from_cpuid(ecx_8000_0001: u32, eax_8000_0022: u32, ebx_8000_0022: u32) -> Self {
        AmdPmuInfo {
            perf_ctr_ext_core: ecx_8000_0001 & (1 << 23) != 0,
            perfmon_v2: eax_8000_0022 & 1 != 0,
            v2_counters: (ebx_8000_0022 & 0xf) as u8,
        }
    }

    /// The layout these bits imply. Every AMD64 part has the four legacy
    /// counters architecturally, but a hypervisor that hides the PMU leaves
    /// all bits clear and the MSRs #GP: this says what the *bits* claim.
    pub fn layout(&self) -> AmdLayout {
        if self.perfmon_v2 {
            AmdLayout::PerfMonV2
        } else if self.perf_ctr_ext_core {
            AmdLayout::CoreExtension
        } else {
            AmdLayout::Legacy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_evt_sel_splits_the_12_bit_event() {
        // rr's Zen "ticks" raw config 0x5100d1 is D1H with USR|INT|EN (rr
        // records user space only); a whole VM adds OS. The low 32 bits have
        // Intel's PERFEVTSEL layout.
        assert_eq!(perf_evt_sel(0xD1, 0, true, false, true, false), 0x51_00d1);
        assert_eq!(perf_evt_sel(0xD1, 0, true, true, true, false), 0x53_00d1);
        assert_eq!(
            perf_evt_sel(EVENT_RETIRED_BRANCHES, 0, true, false, false, true),
            0x41_00c2 | GUEST_ONLY
        );
        // A 12-bit event puts bits 11:8 at 35:32.
        assert_eq!(
            perf_evt_sel(0x1C2, 0, false, false, false, false),
            0x40_00c2 | 1 << 32
        );
    }

    #[test]
    fn layouts_place_counters_where_the_ppr_says() {
        assert_eq!(AmdLayout::Legacy.msrs(3), (0xC001_0003, 0xC001_0007));
        assert_eq!(AmdLayout::CoreExtension.msrs(5), (0xC001_020A, 0xC001_020B));
        assert!(AmdLayout::Legacy.overflow_from_counter_top_bit());
        assert_eq!(
            AmdLayout::PerfMonV2.global_msrs(),
            Some((0xC000_0301, 0xC000_0300, 0xC000_0302))
        );
    }

    #[test]
    fn this_hosts_cpuid_bits_decode() {
        // Measured on the development host (EPYC Zen 5 under nested KVM):
        // 8000_0001H:ECX = 0x004003f3, 8000_0022H = 0.
        let i = AmdPmuInfo::from_cpuid(0x0040_03f3, 0, 0);
        assert!(!i.perf_ctr_ext_core && !i.perfmon_v2);
        assert_eq!(i.layout(), AmdLayout::Legacy);
        let zen4 = AmdPmuInfo::from_cpuid(1 << 23, 1, 6);
        assert_eq!(zen4.layout(), AmdLayout::PerfMonV2);
        assert_eq!(zen4.v2_counters, 6);
    }
}
