//! How many branches early to arm the overflow, per counter backend: the
//! one table of margins.
//!
//! An overflow interrupt arrives some instructions after the counter
//! overflowed (skid). If the counter is armed at `target − margin`, the vCPU
//! stops at most `skid` instructions later, and since every instruction can
//! be a branch, `margin ≥ skid` (in branches) guarantees the stop is at or
//! before the target; single-stepping covers the rest. A margin too small is
//! caught, not hidden: landing reports an overshoot.
//!
//! | counter | margin (branches) | why |
//! |---|---|---|
//! | soft vCPU, exact PMI (skid 0) | 0 | the PMI is taken at the overflowing instruction |
//! | soft vCPU with skid k | k | each skid instruction may be a branch |
//! | Intel Nehalem – Rocket Lake (PMI or perf) | 100 | rr's measured bound for these parts |
//! | Intel Alder Lake and later, Sapphire/Emerald Rapids | 125 | rr raised it for the hybrid/Golden Cove generation |
//! | AMD family 15h (C4H taken branches) | 250 | rr |
//! | AMD Zen 1–5 (C2H/D1H) | 10,000 | rr; skid on Zen is large and, rarely, unbounded — an overshoot is reported as a divergence |
//!
//! This development host is AMD EPYC Zen 5 under nested KVM with the PMU
//! hidden: only the soft vCPU rows apply here.

use serde::{Deserialize, Serialize};

/// A source of overflow interrupts with a known skid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterHardware {
    /// The soft vCPU's virtual PMU with a PMI skid of this many instructions.
    Soft {
        /// Skid in retired instructions (0 = exact).
        skid: u32,
    },
    /// Intel Nehalem through Rocket Lake.
    IntelNehalemToRocketLake,
    /// Intel Alder Lake and later, Sapphire Rapids and Emerald Rapids.
    IntelAlderLakeOnward,
    /// AMD family 15h.
    AmdFamily15h,
    /// AMD Zen 1 to 5 (families 17h, 19h, 1AH).
    AmdZen,
}

impl CounterHardware {
    /// Every fixed row of the table (the soft vCPU shown with skid 0 and 128).
    pub const TABLE: [CounterHardware; 6] = [
        CounterHardware::Soft { skid: 0 },
        CounterHardware::Soft { skid: 128 },
        CounterHardware::IntelNehalemToRocketLake,
        CounterHardware::IntelAlderLakeOnward,
        CounterHardware::AmdFamily15h,
        CounterHardware::AmdZen,
    ];

    /// Branches to arm early.
    pub fn margin(self) -> u64 {
        match self {
            CounterHardware::Soft { skid } => skid as u64,
            CounterHardware::IntelNehalemToRocketLake => 100,
            CounterHardware::IntelAlderLakeOnward => 125,
            CounterHardware::AmdFamily15h => 250,
            CounterHardware::AmdZen => 10_000,
        }
    }

    /// A short name for reports.
    pub fn name(self) -> String {
        match self {
            CounterHardware::Soft { skid: 0 } => "soft vCPU (exact PMI)".into(),
            CounterHardware::Soft { skid } => format!("soft vCPU (skid {skid})"),
            CounterHardware::IntelNehalemToRocketLake => "Intel Nehalem–Rocket Lake".into(),
            CounterHardware::IntelAlderLakeOnward => "Intel Alder Lake+ / SPR / EMR".into(),
            CounterHardware::AmdFamily15h => "AMD family 15h".into(),
            CounterHardware::AmdZen => "AMD Zen 1–5".into(),
        }
    }

    /// The hardware row for a CPU identified by CPUID vendor, family and
    /// model, if the table has one (display family/model, as in
    /// /proc/cpuinfo).
    pub fn for_cpu(vendor: &str, family: u32, model: u32) -> Option<CounterHardware> {
        match vendor {
            "GenuineIntel" if family == 6 => Some(match model {
                // Alder Lake, Raptor Lake, Sapphire/Emerald Rapids, Meteor/
                // Arrow/Lunar Lake.
                0x97 | 0x9A | 0xB7 | 0xBA | 0xBF | 0x8F | 0xCF | 0xAA | 0xAC | 0xC5 | 0xC6
                | 0xBD => CounterHardware::IntelAlderLakeOnward,
                _ => CounterHardware::IntelNehalemToRocketLake,
            }),
            "AuthenticAMD" | "HygonGenuine" => match family {
                0x15 => Some(CounterHardware::AmdFamily15h),
                0x17..=0x1A => Some(CounterHardware::AmdZen),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_match_the_documented_table() {
        let m: Vec<u64> = CounterHardware::TABLE.iter().map(|h| h.margin()).collect();
        assert_eq!(m, [0, 128, 100, 125, 250, 10_000]);
        assert_eq!(CounterHardware::Soft { skid: 64 }.margin(), 64);
    }

    #[test]
    fn this_host_is_zen() {
        // EPYC Zen 5: family 1AH.
        assert_eq!(
            CounterHardware::for_cpu("AuthenticAMD", 0x1A, 0x02),
            Some(CounterHardware::AmdZen)
        );
        assert_eq!(
            CounterHardware::for_cpu("GenuineIntel", 6, 0x55),
            Some(CounterHardware::IntelNehalemToRocketLake)
        );
        assert_eq!(
            CounterHardware::for_cpu("GenuineIntel", 6, 0x8F),
            Some(CounterHardware::IntelAlderLakeOnward)
        );
    }
}
