//! The 16550 UART at 0x3f8 (COM1), IRQ 4: `rt::serial` with fewer exits.
//!
//! Each port access of ring-3 code is a VM exit, and on the nested KVM of the
//! CAS Motion machines an exit costs about a hundred microseconds, so output
//! checks the line status only when the transmit FIFO may be full: once
//! THRE says the FIFO is empty, [`TX_FIFO`] bytes may be written without
//! looking again (16550A with FIFOs on, as [`init`] sets).

use core::sync::atomic::{AtomicU8, Ordering};

use crate::io::{inb, outb};

/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// COM1's IRQ line.
pub const IRQ: u8 = 4;

const THR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;

/// 115200 8N1, FIFOs on, DTR|RTS|OUT2 (OUT2 gates the IRQ on PCs), no interrupts.
pub fn init() {
    // SAFETY: programming COM1; no memory effects.
    unsafe {
        outb(COM1 + IER, 0);
        outb(COM1 + LCR, 0x80);
        outb(COM1, 1);
        outb(COM1 + 1, 0);
        outb(COM1 + LCR, 0x03);
        outb(COM1 + FCR, 0xc7);
        outb(COM1 + MCR, 0x0b);
    }
}

/// Enable or disable the received-data-available interrupt.
pub fn set_rx_interrupt(on: bool) {
    // SAFETY: as init.
    unsafe { outb(COM1 + IER, on as u8) }
}

/// Depth of the 16550A's transmit FIFO.
pub const TX_FIFO: u8 = 16;

/// Bytes that may still be written before the line status must be read.
static TX_ROOM: AtomicU8 = AtomicU8::new(0);

/// Send one byte, waiting for room in the transmit FIFO.
pub fn write_byte(b: u8) {
    let mut room = TX_ROOM.load(Ordering::Relaxed);
    // SAFETY: as init.
    unsafe {
        if room == 0 {
            while inb(COM1 + LSR) & 0x20 == 0 {}
            room = TX_FIFO;
        }
        outb(COM1 + THR, b);
    }
    TX_ROOM.store(room - 1, Ordering::Relaxed);
}

/// A received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    // SAFETY: as init.
    unsafe {
        if inb(COM1 + LSR) & 1 != 0 {
            Some(inb(COM1 + THR))
        } else {
            None
        }
    }
}

/// Send a string.
pub fn write_str(s: &str) {
    for b in s.bytes() {
        write_byte(b);
    }
}

struct Writer;

impl core::fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_str(s);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: core::fmt::Arguments<'_>) {
    let _ = core::fmt::write(&mut Writer, args);
}
