//! VM-execution controls, VT-x style.

use serde::{Deserialize, Serialize};

/// One bit per I/O port: set = accesses to that port exit.
#[derive(Clone, PartialEq, Eq)]
pub struct IoBitmap(Box<[u64; 1024]>);

impl IoBitmap {
    /// No port exits.
    pub fn none() -> Self {
        IoBitmap(Box::new([0; 1024]))
    }
    /// Every port exits (unconditional I/O exiting).
    pub fn all() -> Self {
        IoBitmap(Box::new([u64::MAX; 1024]))
    }
    /// Whether `port` exits.
    pub fn exits(&self, port: u16) -> bool {
        self.0[port as usize / 64] & (1 << (port % 64)) != 0
    }
    /// Make `port` exit or not.
    pub fn set(&mut self, port: u16, exit: bool) {
        let (w, b) = (port as usize / 64, port % 64);
        if exit {
            self.0[w] |= 1 << b;
        } else {
            self.0[w] &= !(1 << b);
        }
    }
    /// Whether any byte of an access of `size` bytes at `port` exits (the SDM
    /// checks every port the access touches, wrapping at 0xffff).
    pub fn access_exits(&self, port: u16, size: u8) -> bool {
        (0..size as u16).any(|i| self.exits(port.wrapping_add(i)))
    }
}

impl std::fmt::Debug for IoBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "IoBitmap({n} ports exit)")
    }
}

/// Which MSR reads/writes exit to the monitor. MSRs not selected are handled
/// by the backend (EFER, STAR/LSTAR, FS/GS base, the guest-visible PMU, …).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MsrBitmap {
    /// MSRs whose RDMSR exits.
    pub read: Vec<u32>,
    /// MSRs whose WRMSR exits.
    pub write: Vec<u32>,
    /// Every RDMSR/WRMSR the backend does not implement exits instead of #GP.
    pub unknown_exit: bool,
}

impl MsrBitmap {
    /// Whether RDMSR of `index` exits.
    pub fn read_exits(&self, index: u32) -> bool {
        self.read.contains(&index)
    }
    /// Whether WRMSR of `index` exits.
    pub fn write_exits(&self, index: u32) -> bool {
        self.write.contains(&index)
    }
}

/// The execution controls a monitor sets. CPUID always exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecControls {
    /// HLT exits.
    pub hlt_exiting: bool,
    /// RDTSC exits (and RDTSCP, reason 51).
    pub rdtsc_exiting: bool,
    /// RDRAND exits.
    pub rdrand_exiting: bool,
    /// RDSEED exits.
    pub rdseed_exiting: bool,
    /// Ports whose accesses exit.
    pub io_bitmap: IoBitmap,
    /// MSRs whose accesses exit.
    pub msr_bitmap: MsrBitmap,
    /// Exit as soon as the guest is interruptible.
    pub interrupt_window_exiting: bool,
    /// Exit after each instruction (monitor trap flag).
    pub monitor_trap_flag: bool,
    /// VMX-preemption timer: exit after this many more retired instructions
    /// (the soft backend's unit; hardware uses a TSC-derived rate).
    pub preemption_timer: Option<u64>,
}

impl Default for ExecControls {
    /// What a recording monitor wants: every source of non-determinism exits.
    fn default() -> Self {
        ExecControls {
            hlt_exiting: true,
            rdtsc_exiting: true,
            rdrand_exiting: true,
            rdseed_exiting: true,
            io_bitmap: IoBitmap::all(),
            msr_bitmap: MsrBitmap::default(),
            interrupt_window_exiting: false,
            monitor_trap_flag: false,
            preemption_timer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bitmap_checks_every_byte_of_the_access() {
        let mut b = IoBitmap::none();
        b.set(0x3f9, true);
        assert!(!b.exits(0x3f8));
        assert!(b.access_exits(0x3f8, 2));
        assert!(!b.access_exits(0x3f8, 1));
        b.set(0, true);
        assert!(b.access_exits(0xffff, 2), "wraps at 0xffff");
    }
}
