//! The 16550 UART at 0x3f8 (COM1), IRQ 4: `rt::serial` with fewer exits.
//!
//! Each port access of ring-3 code is a VM exit, so output reads the line
//! status only once per transmit FIFO's worth of bytes
//! ([`rt_common::serial::Fifo`]).

pub use rt_common::serial::{COM1, IRQ, TX_FIFO, init, set_rx_interrupt, try_read_byte};
use rt_common::serial::{Fifo, Transmit};

/// Send one byte, waiting for room in the transmit FIFO.
pub fn write_byte(b: u8) {
    Fifo::write_byte(b);
}

/// Send a string.
pub fn write_str(s: &str) {
    rt_common::serial::write_str::<Fifo>(s);
}

#[doc(hidden)]
pub fn _print(args: core::fmt::Arguments<'_>) {
    rt_common::serial::print::<Fifo>(args);
}
