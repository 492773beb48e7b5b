//! COM1: the 16550A UART model from vm-superio at 0x3f8, IRQ 4.
//!
//! vm-superio signals interrupts through a `Trigger`; here the trigger only
//! latches a flag that the environment turns into an IRQ 4 edge on the PIC.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vm_superio::Trigger;
use vm_superio::serial::NoEvents;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's IRQ.
pub const COM1_IRQ: u8 = 4;

/// Where the guest's serial output goes.
pub type SerialSink = Box<dyn Write + Send>;

/// The interrupt flag vm-superio raises.
#[derive(Debug, Clone, Default)]
pub struct IrqLatch(Arc<AtomicBool>);

impl Trigger for IrqLatch {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The UART.
pub struct Uart {
    serial: vm_superio::Serial<IrqLatch, NoEvents, SerialSink>,
    irq: IrqLatch,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart").finish_non_exhaustive()
    }
}

impl Uart {
    /// A UART whose transmitted bytes go to `out`.
    pub fn new(out: SerialSink) -> Self {
        let irq = IrqLatch::default();
        Uart {
            serial: vm_superio::Serial::new(irq.clone(), out),
            irq,
        }
    }

    /// Whether `port` is COM1's.
    pub fn claims(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + 8).contains(&port)
    }

    /// A register read.
    pub fn read(&mut self, port: u16) -> u8 {
        self.serial.read((port - COM1_BASE) as u8)
    }

    /// A register write. A failing sink loses the byte (as a disconnected
    /// line would); the guest is not told.
    pub fn write(&mut self, port: u16, val: u8) {
        if let Err(e) = self.serial.write((port - COM1_BASE) as u8, val) {
            tracing::debug!("serial output lost: {e:?}");
        }
    }

    /// Offer received bytes; returns how many fitted in the receive FIFO.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() || self.serial.fifo_capacity() == 0 {
            return 0;
        }
        self.serial.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Free space in the receive FIFO.
    pub fn rx_space(&self) -> usize {
        self.serial.fifo_capacity()
    }

    /// Whether the UART raised its interrupt since the last call.
    pub fn take_irq(&mut self) -> bool {
        self.irq.0.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmit_and_receive_with_interrupt() {
        let buf = Buf::default();
        let mut u = Uart::new(Box::new(buf.clone()));
        u.write(0x3f8, b'h');
        u.write(0x3f8, b'i');
        assert_eq!(&*buf.0.lock().unwrap(), b"hi");
        u.write(0x3f9, 1); // RX interrupt on
        assert!(!u.take_irq());
        assert_eq!(u.receive(b"ab"), 2);
        assert!(u.take_irq());
        assert_eq!(u.read(0x3fd) & 1, 1);
        assert_eq!(u.read(0x3f8), b'a');
        assert_eq!(u.read(0x3f8), b'b');
        assert_eq!(u.read(0x3fd) & 1, 0);
    }
}
