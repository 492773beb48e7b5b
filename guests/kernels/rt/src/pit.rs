//! The 8254 PIT, channel 0 on IRQ 0.

use crate::io::outb;

/// The PIT's input clock in Hz.
pub const FREQUENCY: u32 = 1_193_182;

/// Program channel 0 as a rate generator (mode 2) at about `hz` interrupts
/// per second; returns the divisor used.
pub fn set_periodic(hz: u32) -> u16 {
    let divisor = (FREQUENCY / hz.max(19)).clamp(1, 65535) as u16;
    // SAFETY: programming the PIT; no memory effects.
    unsafe {
        outb(0x43, 0x34);
        outb(0x40, divisor as u8);
        outb(0x40, (divisor >> 8) as u8);
    }
    divisor
}
