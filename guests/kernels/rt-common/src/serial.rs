//! The 16550 UART at 0x3f8 (COM1), IRQ 4.
//!
//! The runtimes differ only in how they wait for the transmitter, which a
//! [`Transmit`] policy says: [`PerByte`] (`rt`) reads the line status before
//! every byte; [`Fifo`] (`urt`, where each port access is a VM exit costing
//! about a hundred microseconds on the nested KVM of the CAS Motion machines)
//! reads it only when the transmit FIFO may be full: once THRE says the FIFO
//! is empty, [`TX_FIFO`] bytes may be written without looking again (16550A
//! with FIFOs on, as [`init`] sets).

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::io::{inb, outb};

/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// COM1's IRQ line.
pub const IRQ: u8 = 4;
/// Depth of the 16550A's transmit FIFO.
pub const TX_FIFO: u8 = 16;

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

/// How a runtime sends one byte.
pub trait Transmit {
    /// Send `b`, waiting for room in the transmitter.
    fn write_byte(b: u8);
}

/// Wait for the transmitter holding register before every byte.
pub struct PerByte;

impl Transmit for PerByte {
    #[inline]
    fn write_byte(b: u8) {
        // SAFETY: as init.
        unsafe {
            while inb(COM1 + LSR) & 0x20 == 0 {}
            outb(COM1 + THR, b);
        }
    }
}

/// Read the line status once per [`TX_FIFO`] bytes.
pub struct Fifo;

/// Bytes that may still be written before the line status must be read.
static TX_ROOM: AtomicU8 = AtomicU8::new(0);

impl Transmit for Fifo {
    #[inline]
    fn write_byte(b: u8) {
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
}

/// Send a string.
pub fn write_str<T: Transmit>(s: &str) {
    for b in s.bytes() {
        T::write_byte(b);
    }
}

struct Writer<T>(PhantomData<T>);

impl<T: Transmit> core::fmt::Write for Writer<T> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_str::<T>(s);
        Ok(())
    }
}

/// Format `args` to the port (what the runtimes' `print!` ends in).
pub fn print<T: Transmit>(args: core::fmt::Arguments<'_>) {
    let _ = core::fmt::write(&mut Writer::<T>(PhantomData), args);
}
