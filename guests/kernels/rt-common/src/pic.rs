//! The 8259A PIC pair, remapped to vectors 0x20..0x2f.

use crate::io::{inb, outb};

/// Vector of IRQ 0.
pub const IRQ_BASE: u8 = 0x20;

/// Initialise both PICs (edge mode per ICW1; the ELCR set by firmware is kept),
/// vectors 0x20/0x28, cascade on IRQ 2, everything masked.
pub fn init() {
    // SAFETY: programming the PICs; no memory effects.
    unsafe {
        outb(0x20, 0x11);
        outb(0xa0, 0x11);
        outb(0x21, IRQ_BASE);
        outb(0xa1, IRQ_BASE + 8);
        outb(0x21, 4);
        outb(0xa1, 2);
        outb(0x21, 1);
        outb(0xa1, 1);
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}

/// Unmask an IRQ line (and the cascade for lines 8..15).
pub fn unmask(irq: u8) {
    // SAFETY: as init.
    unsafe {
        if irq < 8 {
            outb(0x21, inb(0x21) & !(1 << irq));
        } else {
            outb(0xa1, inb(0xa1) & !(1 << (irq - 8)));
            outb(0x21, inb(0x21) & !(1 << 2));
        }
    }
}

/// Mask an IRQ line.
pub fn mask(irq: u8) {
    // SAFETY: as init.
    unsafe {
        if irq < 8 {
            outb(0x21, inb(0x21) | (1 << irq));
        } else {
            outb(0xa1, inb(0xa1) | (1 << (irq - 8)));
        }
    }
}

/// Non-specific end of interrupt for `irq`.
pub fn eoi(irq: u8) {
    // SAFETY: as init.
    unsafe {
        if irq >= 8 {
            outb(0xa0, 0x20);
        }
        outb(0x20, 0x20);
    }
}

/// In-service register of the master (low byte) and slave (high byte).
pub fn in_service() -> u16 {
    // SAFETY: as init (OCW3 read ISR).
    unsafe {
        outb(0x20, 0x0b);
        outb(0xa0, 0x0b);
        inb(0x20) as u16 | (inb(0xa0) as u16) << 8
    }
}
