//! The 16550 UART at 0x3f8 (COM1), IRQ 4: `rt_common::serial`, waiting for
//! the transmitter holding register before every byte.

pub use rt_common::serial::{COM1, IRQ, init, set_rx_interrupt, try_read_byte};
use rt_common::serial::{PerByte, Transmit};

/// Send one byte, waiting for the transmitter holding register.
// `#[inline]` here and on `write_str`: the guests' output loops (serial-echo)
// inline them, as rustc did on its own while the body was in this crate; the
// call into `rt_common` would otherwise stop that and change their code.
#[inline]
pub fn write_byte(b: u8) {
    PerByte::write_byte(b);
}

/// Send a string.
#[inline]
pub fn write_str(s: &str) {
    rt_common::serial::write_str::<PerByte>(s);
}

#[doc(hidden)]
pub fn _print(args: core::fmt::Arguments<'_>) {
    rt_common::serial::print::<PerByte>(args);
}
