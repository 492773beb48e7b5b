//! CPUID leaf 0AH: what the architectural PMU offers.

use serde::{Deserialize, Serialize};

use crate::error::DriverError;

/// The architectural performance-monitoring capabilities (CPUID.0AH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmuCaps {
    /// `EAX[7:0]`: architectural performance monitoring version.
    pub version: u8,
    /// `EAX[15:8]`: general-purpose counters per logical processor.
    pub gp_counters: u8,
    /// `EAX[23:16]`: bit width of the general-purpose counters.
    pub gp_width: u8,
    /// `EAX[31:24]`: length of the EBX event-availability vector.
    pub ebx_len: u8,
    /// EBX: bit i set = architectural event i is *not* available.
    pub unavailable: u32,
    /// `EDX[4:0]` (version 2+): fixed-function counters.
    pub fixed_counters: u8,
    /// `EDX[12:5]` (version 2+): bit width of the fixed-function counters.
    pub fixed_width: u8,
}

/// EBX bit of the architectural event "branch instructions retired" (C4H).
const EBX_BRANCHES_RETIRED: u8 = 5;
/// EBX bit of "instructions retired" (C0H).
const EBX_INSTRUCTIONS_RETIRED: u8 = 1;

impl PmuCaps {
    /// Decode CPUID.0AH (EAX, EBX, ECX, EDX).
    pub fn from_cpuid_0a(r: [u32; 4]) -> Self {
        let [eax, ebx, _ecx, edx] = r;
        let version = eax as u8;
        PmuCaps {
            version,
            gp_counters: (eax >> 8) as u8,
            gp_width: (eax >> 16) as u8,
            ebx_len: (eax >> 24) as u8,
            unavailable: ebx,
            fixed_counters: if version >= 2 { (edx & 0x1f) as u8 } else { 0 },
            fixed_width: if version >= 2 { (edx >> 5) as u8 } else { 0 },
        }
    }

    /// Whether architectural event `bit` (EBX numbering) exists: inside the
    /// advertised vector and not marked unavailable.
    pub fn event_available(&self, bit: u8) -> bool {
        bit < self.ebx_len && self.unavailable & (1 << bit) == 0
    }

    /// Whether "branch instructions retired" (C4H) can be counted.
    pub fn branches_available(&self) -> bool {
        self.event_available(EBX_BRANCHES_RETIRED)
    }

    /// Whether "instructions retired" (C0H) can be counted.
    pub fn instructions_available(&self) -> bool {
        self.event_available(EBX_INSTRUCTIONS_RETIRED)
    }

    /// All-ones over the general-purpose counter width.
    pub fn counter_mask(&self) -> u64 {
        if self.gp_width >= 64 {
            u64::MAX
        } else {
            (1u64 << self.gp_width) - 1
        }
    }

    /// Check that the driver can count branches with overflow on this PMU.
    pub fn check_usable(&self) -> Result<(), DriverError> {
        if self.version < 2 {
            return Err(DriverError::UnsupportedVersion(self.version));
        }
        if self.gp_counters == 0 {
            return Err(DriverError::NoCounters);
        }
        if !(32..=64).contains(&self.gp_width) {
            return Err(DriverError::BadWidth(self.gp_width));
        }
        if !self.branches_available() {
            return Err(DriverError::NoBranchEvent {
                ebx_len: self.ebx_len,
            });
        }
        Ok(())
    }

    /// Encode back to CPUID.0AH registers (what a model reports).
    pub fn to_cpuid_0a(&self) -> [u32; 4] {
        let eax = self.version as u32
            | (self.gp_counters as u32) << 8
            | (self.gp_width as u32) << 16
            | (self.ebx_len as u32) << 24;
        let edx = (self.fixed_counters as u32 & 0x1f) | (self.fixed_width as u32) << 5;
        [eax, self.unavailable, 0, edx]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_skylake_like_leaf() {
        // Version 4, 4 counters of 48 bits, 7 events all available, 3 fixed of 48 bits.
        let c = PmuCaps::from_cpuid_0a([0x0730_0404, 0, 0, 0x0603]);
        assert_eq!(c.version, 4);
        assert_eq!(c.gp_counters, 4);
        assert_eq!(c.gp_width, 48);
        assert_eq!(c.ebx_len, 7);
        assert_eq!(c.fixed_counters, 3);
        assert_eq!(c.fixed_width, 48);
        assert!(c.branches_available());
        assert_eq!(c.counter_mask(), 0xffff_ffff_ffff);
        assert_eq!(c.check_usable(), Ok(()));
        assert_eq!(PmuCaps::from_cpuid_0a(c.to_cpuid_0a()), c);
    }

    #[test]
    fn refuses_what_it_cannot_drive() {
        // What this AMD host reports: leaf 0AH is all zeros.
        let amd = PmuCaps::from_cpuid_0a([0; 4]);
        assert_eq!(amd.check_usable(), Err(DriverError::UnsupportedVersion(0)));
        let v1 = PmuCaps::from_cpuid_0a([0x0730_0401, 0, 0, 0]);
        assert_eq!(v1.check_usable(), Err(DriverError::UnsupportedVersion(1)));
        let no_branch = PmuCaps::from_cpuid_0a([0x0730_0402, 1 << 5, 0, 0]);
        assert!(matches!(
            no_branch.check_usable(),
            Err(DriverError::NoBranchEvent { .. })
        ));
        let short_vector = PmuCaps::from_cpuid_0a([0x0530_0402, 0, 0, 0]);
        assert!(
            !short_vector.branches_available(),
            "bit 5 beyond a 5-bit vector"
        );
        let narrow = PmuCaps::from_cpuid_0a([0x0710_0402, 0, 0, 0]);
        assert_eq!(narrow.check_usable(), Err(DriverError::BadWidth(16)));
        let none = PmuCaps::from_cpuid_0a([0x0730_0002, 0, 0, 0]);
        assert_eq!(none.check_usable(), Err(DriverError::NoCounters));
    }
}
