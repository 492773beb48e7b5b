//! PCI host bridge with configuration mechanism #1 (0xcf8 address, 0xcfc-0xcff
//! data) on bus 0: 00:00.0 a host bridge, 00:03.0 the virtio-blk function
//! when a disk is attached (the slot and IRQ QEMU's `pc` machine gives it,
//! so guests see the same topology in both).
//!
//! The firmware's job is done up front: BAR 0 is assigned
//! [`VIRTIO_IO_BASE`] and the interrupt line register says [`VIRTIO_IRQ`]
//! (level-triggered through the PIC's ELCR). Drivers may move the BAR.

use vm_memory::GuestMemoryMmap;

use super::virtio_blk::{DmaOp, Done, REGS_SIZE, Request, VirtioBlk};

/// The I/O base assigned to the virtio-blk BAR 0.
pub const VIRTIO_IO_BASE: u16 = 0xc000;
/// The legacy IRQ the virtio-blk INTx is routed to.
pub const VIRTIO_IRQ: u8 = 11;
/// The virtio-blk function's device number on bus 0.
pub const VIRTIO_SLOT: u8 = 3;

/// The PCI host and its functions.
#[derive(Debug)]
pub struct PciHost {
    address: u32,
    blk: Option<BlkFunction>,
}

#[derive(Debug)]
struct BlkFunction {
    dev: VirtioBlk,
    command: u16,
    bar0: u32,
    int_line: u8,
}

impl BlkFunction {
    fn io_base(&self) -> Option<u16> {
        (self.command & 1 != 0).then_some((self.bar0 & 0xfffc) as u16)
    }

    fn config_dword(&self, reg: u8) -> u32 {
        match reg {
            0x00 => 0x1001_1af4,
            0x04 => self.command as u32,
            0x08 => 0x0100_0000, // class 01 (storage), subclass 00, revision 0
            0x0c => 0,
            0x10 => self.bar0,
            0x2c => 0x0002_1af4, // subsystem: virtio block
            0x3c => 0x0100 | self.int_line as u32,
            _ => 0,
        }
    }

    fn config_write(&mut self, reg: u8, val: u32, mask: u32) {
        let merged = (self.config_dword(reg) & !mask) | (val & mask);
        match reg {
            0x04 => self.command = (merged as u16) & 0x0407,
            0x10 => self.bar0 = (merged & !(REGS_SIZE as u32 - 1) & 0xffff) | 1,
            0x3c => self.int_line = merged as u8,
            _ => {}
        }
    }
}

impl PciHost {
    /// A host with an optional virtio-blk function.
    pub fn new(blk: Option<VirtioBlk>) -> Self {
        PciHost {
            address: 0,
            blk: blk.map(|dev| BlkFunction {
                dev,
                command: 0x0001,
                bar0: VIRTIO_IO_BASE as u32 | 1,
                int_line: VIRTIO_IRQ,
            }),
        }
    }

    /// Whether `port` is the host's or the virtio-blk BAR's.
    pub fn claims(&self, port: u16) -> bool {
        (0xcf8..=0xcff).contains(&port) || self.blk_offset(port).is_some()
    }

    fn blk_offset(&self, port: u16) -> Option<u16> {
        let base = self.blk.as_ref()?.io_base()?;
        (port >= base && port - base < REGS_SIZE).then(|| port - base)
    }

    fn config_dword(&self, bdf_reg: u32) -> u32 {
        let bus = (bdf_reg >> 16) & 0xff;
        let dev = (bdf_reg >> 11) & 0x1f;
        let func = (bdf_reg >> 8) & 7;
        let reg = (bdf_reg & 0xfc) as u8;
        match (bus, dev, func) {
            (0, 0, 0) => match reg {
                0x00 => 0x1237_8086,
                0x08 => 0x0600_0002,
                _ => 0,
            },
            (0, d, 0) if d == VIRTIO_SLOT as u32 => match &self.blk {
                Some(f) => f.config_dword(reg),
                None => u32::MAX,
            },
            _ => u32::MAX,
        }
    }

    /// A port read of `size` bytes.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        let mask = if size >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * size)) - 1
        };
        if let Some(off) = self.blk_offset(port) {
            return self
                .blk
                .as_mut()
                .map_or(u32::MAX, |f| f.dev.read(off, size))
                & mask;
        }
        match port {
            0xcf8 if size == 4 => self.address,
            0xcfc..=0xcff => {
                if self.address & 0x8000_0000 == 0 {
                    return mask;
                }
                let shift = 8 * (port - 0xcfc) as u32;
                (self.config_dword(self.address & 0x00ff_fffc) >> shift) & mask
            }
            _ => mask,
        }
    }

    /// A port write of `size` bytes.
    pub fn write(&mut self, port: u16, size: u8, val: u32) {
        if let Some(off) = self.blk_offset(port) {
            if let Some(f) = self.blk.as_mut() {
                f.dev.write(off, size, val);
            }
            return;
        }
        match port {
            0xcf8 if size == 4 => self.address = val & 0x80ff_fffc,
            0xcfc..=0xcff => {
                if self.address & 0x8000_0000 == 0 {
                    return;
                }
                let bdf = self.address & 0x00ff_ff00;
                let shift = 8 * (port - 0xcfc) as u32;
                let mask = if size >= 4 {
                    u32::MAX
                } else {
                    ((1u32 << (8 * size)) - 1) << shift
                };
                if bdf == (VIRTIO_SLOT as u32) << 11 {
                    if let Some(f) = self.blk.as_mut() {
                        f.config_write((self.address & 0xfc) as u8, val << shift, mask);
                    }
                }
            }
            _ => {}
        }
    }

    /// Take up to `max` requests from the block device's ring (see
    /// [`VirtioBlk::take_requests`]); none while bus mastering is off.
    pub fn take_blk_requests(&mut self, mem: &GuestMemoryMmap, max: usize) -> Vec<Request> {
        let Some(f) = self.blk.as_mut() else {
            return Vec::new();
        };
        let bus_master = f.command & 4 != 0;
        f.dev.take_requests(mem, bus_master, max)
    }

    /// Complete a block request (see [`VirtioBlk::complete`]).
    pub fn complete_blk(&mut self, done: Done) -> Option<Vec<DmaOp>> {
        self.blk.as_mut()?.dev.complete(done)
    }

    /// Whether the block device has requests it could take now.
    pub fn has_work(&self) -> bool {
        self.blk
            .as_ref()
            .is_some_and(|f| f.dev.has_work() && f.command & 4 != 0)
    }

    /// Raise the block device's interrupt (its ISR bit).
    pub fn raise_blk_interrupt(&mut self) {
        if let Some(f) = self.blk.as_mut() {
            f.dev.raise_interrupt();
        }
    }

    /// The level of the block device's INTx line (masked by INTx-disable).
    pub fn blk_line(&self) -> bool {
        self.blk
            .as_ref()
            .is_some_and(|f| f.dev.line() && f.command & 0x400 == 0)
    }

    /// Why the block device stopped, if it broke.
    pub fn blk_broken(&self) -> Option<&str> {
        self.blk.as_ref().and_then(|f| f.dev.broken())
    }
}

#[cfg(test)]
mod tests {
    use super::super::virtio_blk::DiskImage;
    use super::*;

    fn cfg(host: &mut PciHost, dev: u32, reg: u32) -> u32 {
        host.write(0xcf8, 4, 0x8000_0000 | dev << 11 | reg);
        host.read(0xcfc, 4)
    }

    #[test]
    fn enumerates_the_virtio_function() {
        let mut host = PciHost::new(Some(VirtioBlk::new(DiskImage::zeroed(8).geometry())));
        assert_eq!(cfg(&mut host, 0, 0), 0x1237_8086);
        assert_eq!(cfg(&mut host, 3, 0), 0x1001_1af4);
        assert_eq!(cfg(&mut host, 4, 0), u32::MAX);
        assert_eq!(cfg(&mut host, 3, 0x10), 0xc001);
        assert_eq!(cfg(&mut host, 3, 0x3c) & 0xff, 11);
        // BAR sizing.
        host.write(0xcfc, 4, u32::MAX);
        host.write(0xcf8, 4, 0x8000_0000 | 3 << 11 | 0x10);
        host.write(0xcfc, 4, u32::MAX);
        assert_eq!(host.read(0xcfc, 4), 0xffc1);
        host.write(0xcfc, 4, 0xc001);
        // Capacity through the BAR.
        assert_eq!(host.read(0xc014, 4), 8);
    }

    #[test]
    fn byte_access_to_config_space() {
        let mut host = PciHost::new(Some(VirtioBlk::new(DiskImage::zeroed(8).geometry())));
        host.write(0xcf8, 4, 0x8000_0000 | 3 << 11);
        assert_eq!(host.read(0xcfe, 2), 0x1001);
        assert_eq!(host.read(0xcfc, 1), 0xf4);
    }

    #[test]
    fn io_disabled_hides_the_bar() {
        let mut host = PciHost::new(Some(VirtioBlk::new(DiskImage::zeroed(8).geometry())));
        assert!(host.claims(0xc000));
        host.write(0xcf8, 4, 0x8000_0000 | 3 << 11 | 4);
        host.write(0xcfc, 2, 0);
        assert!(!host.claims(0xc000));
    }
}
