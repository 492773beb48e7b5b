//! The i8259A programmable interrupt controller pair (master at 0x20/0x21,
//! slave at 0xa0/0xa1 cascaded on master IRQ 2) with the PIIX edge/level
//! control registers (ELCR, 0x4d0/0x4d1).
//!
//! The model follows the 8259A data sheet as QEMU's i8259 does: IRR/ISR/IMR,
//! fully nested priorities with rotation, specific and non-specific EOI,
//! auto-EOI, polling, special mask mode, and edge or level triggering per line.
//! Its output (INT) is read by the monitor, which decides when to inject.

/// One 8259A.
#[derive(Debug, Clone, Default)]
struct Chip {
    irr: u8,
    imr: u8,
    isr: u8,
    /// Line levels seen last, for edge detection.
    last_irr: u8,
    priority_add: u8,
    irq_base: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// 0: ready (OCW1), 1: expects ICW2, 2: ICW3, 3: ICW4.
    init_state: u8,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    init4: bool,
    single_mode: bool,
    elcr: u8,
    elcr_mask: u8,
    is_master: bool,
}

impl Chip {
    fn new(is_master: bool, elcr_mask: u8) -> Self {
        Chip {
            is_master,
            elcr_mask,
            ..Default::default()
        }
    }

    fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << irq;
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
    }

    /// Priority (0 highest) of the highest-priority bit in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        let mut p = 0;
        while mask & (1 << ((p + self.priority_add) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// The IRQ this chip would raise now, if any.
    fn pending(&self) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.is_master {
            in_service &= !(1 << 2);
        }
        (p < self.priority(in_service)).then_some((p + self.priority_add) & 7)
    }

    fn intack(&mut self, irq: u8) {
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= 1 << irq;
        }
        if self.elcr & (1 << irq) == 0 {
            self.irr &= !(1 << irq);
        }
    }

    fn reset(&mut self) {
        let (elcr, elcr_mask, is_master) = (self.elcr, self.elcr_mask, self.is_master);
        let irr = self.irr & elcr;
        *self = Chip {
            irr,
            elcr,
            elcr_mask,
            is_master,
            ..Default::default()
        };
    }

    fn write(&mut self, addr: u8, val: u8) {
        if addr & 1 == 0 {
            if val & 0x10 != 0 {
                // ICW1
                self.reset();
                self.init_state = 1;
                self.init4 = val & 1 != 0;
                self.single_mode = val & 2 != 0;
            } else if val & 0x08 != 0 {
                // OCW3
                if val & 0x04 != 0 {
                    self.poll = true;
                }
                if val & 0x02 != 0 {
                    self.read_isr = val & 1 != 0;
                }
                if val & 0x40 != 0 {
                    self.special_mask = val & 0x20 != 0;
                }
            } else {
                // OCW2
                let cmd = val >> 5;
                match cmd {
                    0 | 4 => self.rotate_on_auto_eoi = cmd == 4,
                    1 | 5 => {
                        let p = self.priority(self.isr);
                        if p != 8 {
                            let irq = (p + self.priority_add) & 7;
                            self.isr &= !(1 << irq);
                            if cmd == 5 {
                                self.priority_add = (irq + 1) & 7;
                            }
                        }
                    }
                    3 => self.isr &= !(1 << (val & 7)),
                    6 => self.priority_add = ((val & 7) + 1) & 7,
                    7 => {
                        let irq = val & 7;
                        self.isr &= !(1 << irq);
                        self.priority_add = (irq + 1) & 7;
                    }
                    _ => {}
                }
            }
        } else {
            match self.init_state {
                0 => self.imr = val,
                1 => {
                    self.irq_base = val & 0xf8;
                    self.init_state = match (self.single_mode, self.init4) {
                        (true, true) => 3,
                        (true, false) => 0,
                        (false, _) => 2,
                    };
                }
                2 => self.init_state = if self.init4 { 3 } else { 0 },
                _ => {
                    self.special_fully_nested = val & 0x10 != 0;
                    self.auto_eoi = val & 0x02 != 0;
                    self.init_state = 0;
                }
            }
        }
    }
}

/// The PIC pair.
#[derive(Debug, Clone)]
pub struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// Both chips after power-on (uninitialised, all lines edge-triggered).
    pub fn new() -> Self {
        Pic {
            master: Chip::new(true, 0xf8),
            slave: Chip::new(false, 0xde),
        }
    }

    /// Whether the ports belong to the PIC pair or its ELCR.
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
    }

    /// Drive IRQ line `irq` (0..16) to `level`. Out-of-range lines are ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 => self.master.set_irq(irq, level),
            8..=15 => self.slave.set_irq(irq - 8, level),
            _ => return,
        }
        self.update();
    }

    /// A rising then falling edge on an edge-triggered line.
    pub fn pulse_irq(&mut self, irq: u8) {
        self.set_irq(irq, true);
        self.set_irq(irq, false);
    }

    /// Set which lines are level-triggered (ELCR1 | ELCR2 << 8), as firmware does.
    pub fn set_elcr(&mut self, elcr: u16) {
        self.master.elcr = elcr as u8 & self.master.elcr_mask;
        self.slave.elcr = (elcr >> 8) as u8 & self.slave.elcr_mask;
    }

    fn update(&mut self) {
        let slave_int = self.slave.pending().is_some();
        self.master.set_irq(2, slave_int);
    }

    /// Whether the INT output is asserted (an interrupt awaits acknowledgement).
    pub fn interrupt_pending(&self) -> bool {
        self.master.pending().is_some()
    }

    /// The INTA cycle: the vector to deliver. With nothing pending this is the
    /// spurious IRQ 7 vector, as on hardware.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending() {
            Some(2) => {
                let irq2 = match self.slave.pending() {
                    Some(i) => {
                        self.slave.intack(i);
                        i
                    }
                    None => 7,
                };
                self.master.intack(2);
                self.slave.irq_base.wrapping_add(irq2)
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.irq_base.wrapping_add(irq)
            }
            None => self.master.irq_base.wrapping_add(7),
        };
        self.update();
        vector
    }

    fn poll_read(&mut self, slave: bool) -> u8 {
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        chip.poll = false;
        let r = match chip.pending() {
            Some(irq) => {
                chip.intack(irq);
                irq | 0x80
            }
            None => 0,
        };
        self.update();
        r
    }

    /// A port read.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => {
                let slave = port & 0x80 != 0;
                let chip = if slave { &self.slave } else { &self.master };
                if chip.poll {
                    self.poll_read(slave)
                } else if port & 1 == 0 {
                    if chip.read_isr { chip.isr } else { chip.irr }
                } else {
                    chip.imr
                }
            }
        }
    }

    /// A port write.
    pub fn write(&mut self, port: u16, val: u8) {
        match port {
            0x4d0 => self.master.elcr = val & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = val & self.slave.elcr_mask,
            _ => {
                if port & 0x80 != 0 {
                    self.slave.write(port as u8, val);
                } else {
                    self.master.write(port as u8, val);
                }
                self.update();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard PC initialisation: vectors 0x20/0x28, cascade on 2.
    pub(crate) fn init(pic: &mut Pic) {
        for (p, v) in [
            (0x20, 0x11),
            (0xa0, 0x11),
            (0x21, 0x20),
            (0xa1, 0x28),
            (0x21, 4),
            (0xa1, 2),
            (0x21, 1),
            (0xa1, 1),
            (0x21, 0),
            (0xa1, 0),
        ] {
            pic.write(p, v);
        }
    }

    #[test]
    fn edge_irq_is_delivered_once_and_needs_eoi() {
        let mut pic = Pic::new();
        init(&mut pic);
        assert!(!pic.interrupt_pending());
        pic.pulse_irq(0);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x20);
        assert!(!pic.interrupt_pending());
        // In service: a second IRQ 0 waits for the EOI.
        pic.pulse_irq(0);
        assert!(!pic.interrupt_pending());
        pic.write(0x20, 0x20);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x20);
    }

    #[test]
    fn priority_and_masking() {
        let mut pic = Pic::new();
        init(&mut pic);
        pic.pulse_irq(4);
        pic.pulse_irq(1);
        assert_eq!(pic.acknowledge(), 0x21, "IRQ 1 outranks IRQ 4");
        pic.write(0x20, 0x20);
        pic.write(0x21, 1 << 4);
        assert!(!pic.interrupt_pending(), "IRQ 4 masked");
        pic.write(0x21, 0);
        assert_eq!(pic.acknowledge(), 0x24);
    }

    #[test]
    fn slave_irq_cascades_through_irq2() {
        let mut pic = Pic::new();
        init(&mut pic);
        pic.pulse_irq(11);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x2b);
        pic.write(0x20, 0x0b);
        assert_eq!(pic.read(0x20), 1 << 2, "master ISR has the cascade");
        pic.write(0xa0, 0x0b);
        assert_eq!(pic.read(0xa0), 1 << 3);
    }

    #[test]
    fn level_line_stays_pending_until_lowered() {
        let mut pic = Pic::new();
        pic.set_elcr(1 << 11);
        init(&mut pic);
        pic.set_irq(11, true);
        assert_eq!(pic.acknowledge(), 0x2b);
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        assert!(pic.interrupt_pending(), "still asserted after EOI");
        assert_eq!(pic.acknowledge(), 0x2b);
        // A driver acknowledges the device (line low) before the EOIs.
        pic.set_irq(11, false);
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        assert!(!pic.interrupt_pending());
        assert_eq!(pic.read(0x4d1), 1 << 3);
    }

    #[test]
    fn spurious_acknowledge_gives_irq7() {
        let mut pic = Pic::new();
        init(&mut pic);
        assert_eq!(pic.acknowledge(), 0x27);
    }

    /// Polling (OCW3 with P = 1, then a read) is how a guest that runs with
    /// IF = 0 takes interrupts (the ring-3 runtime `urt`): the read returns
    /// `0x80 | level` and acknowledges it as INTA would, or 0.
    #[test]
    fn poll_command_acknowledges_like_inta_through_the_cascade() {
        let mut pic = Pic::new();
        pic.set_elcr(1 << 11);
        init(&mut pic);
        let poll = |pic: &mut Pic, port: u16| {
            pic.write(port, 0x0c);
            pic.read(port)
        };
        assert_eq!(poll(&mut pic, 0x20), 0, "nothing requested");

        // Edge IRQ 4: acknowledged once, in service until the EOI.
        pic.pulse_irq(4);
        assert_eq!(poll(&mut pic, 0x20), 0x84);
        assert!(!pic.interrupt_pending());
        assert_eq!(poll(&mut pic, 0x20), 0, "edge consumed, IRQ 4 in service");
        pic.write(0x20, 0x0b);
        assert_eq!(pic.read(0x20), 1 << 4, "ISR");
        pic.write(0x20, 0x0a);
        pic.pulse_irq(4);
        assert_eq!(poll(&mut pic, 0x20), 0, "a new IRQ 4 waits for the EOI");
        pic.write(0x20, 0x20);
        assert_eq!(poll(&mut pic, 0x20), 0x84);
        pic.write(0x20, 0x20);

        // The poll is one-shot: the next read is the selected register again.
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), 0);
        pic.pulse_irq(3);
        assert_eq!(pic.read(0x20), 1 << 3, "IRR, not a poll");
        assert_eq!(poll(&mut pic, 0x20), 0x83);
        pic.write(0x20, 0x20);

        // Masked lines are not reported.
        pic.write(0x21, 1 << 5);
        pic.pulse_irq(5);
        assert_eq!(poll(&mut pic, 0x20), 0);
        pic.write(0x21, 0);
        assert_eq!(poll(&mut pic, 0x20), 0x85);
        pic.write(0x20, 0x20);

        // Level IRQ 11 on the slave: the master answers the cascade (2),
        // then the slave its line (3); both are in service.
        pic.set_irq(11, true);
        assert_eq!(poll(&mut pic, 0x20), 0x82);
        assert_eq!(poll(&mut pic, 0xa0), 0x83);
        pic.write(0x20, 0x0b);
        pic.write(0xa0, 0x0b);
        assert_eq!(pic.read(0x20), 1 << 2);
        assert_eq!(pic.read(0xa0), 1 << 3);
        // The driver lowers the line, then sends both EOIs: nothing left.
        pic.set_irq(11, false);
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        assert_eq!(poll(&mut pic, 0x20), 0);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn imr_reads_back() {
        let mut pic = Pic::new();
        init(&mut pic);
        pic.write(0x21, 0xfb);
        assert_eq!(pic.read(0x21), 0xfb);
    }
}
