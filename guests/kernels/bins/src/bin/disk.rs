//! `disk`: reads a block device by DMA with completion interrupts and prints
//! a checksum of what it read.
//!
//! The device is virtio-blk over PCI, legacy (virtio 0.9.5) interface: found
//! on bus 0 through configuration mechanism #1 (ports 0xcf8/0xcfc), I/O BAR 0
//! and the interrupt line taken from configuration space (SeaBIOS assigns
//! them under QEMU; the CAS Motion monitor's PCI host assigns fixed ones).
//! One virtqueue; each request is a 3-descriptor chain (header, data,
//! status); completion raises INTx through the 8259, acknowledged by reading
//! the ISR status register. Reads up to [`MAX_SECTORS`] sectors,
//! [`SECTORS_PER_REQUEST`] at a time, then prints the capacity, the number of
//! sectors read, the first bytes of sector 0 and an FNV-1a-64 checksum.
//! Exits 0, or 5 when no device is found, 6 on a device error.
//!
//! Reads are double-buffered, as a program overlapping I/O with work would:
//! while request k is in flight, the guest processes the data of request
//! k-1 — the checksum, then [`WORK_PASSES`] passes of further computation
//! ([`work`]), a fixed, bounded amount with interrupts enabled — and then
//! halts until request k's completion interrupt unless it already came. So
//! where in the guest's execution each completion lands depends on how long
//! the host took to serve the request (the non-determinism a recording has
//! to capture), while the output does not: the checksum covers the chunks in
//! order either way.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering, compiler_fence};

use rt::interrupts::{self, Frame};
use rt::io::{inb, inl, inw, outb, outl, outw};
use rt::sync::Global;
use rt::{Dec, cpu, pic, println};

const MAX_SECTORS: u64 = 256;
const SECTORS_PER_REQUEST: u64 = 8;
const EXIT_NO_DEVICE: u8 = 5;
const EXIT_DEVICE_ERROR: u8 = 6;

// Legacy virtio PCI register offsets in BAR 0.
const GUEST_FEATURES: u16 = 0x04;
const HOST_FEATURES: u16 = 0x00;
const QUEUE_PFN: u16 = 0x08;
const QUEUE_SIZE: u16 = 0x0c;
const QUEUE_SELECT: u16 = 0x0e;
const QUEUE_NOTIFY: u16 = 0x10;
const DEVICE_STATUS: u16 = 0x12;
const ISR_STATUS: u16 = 0x13;
const CONFIG_CAPACITY: u16 = 0x14;

const STATUS_ACK: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// The largest queue this driver lays out (3 pages hold a 256-entry legacy ring).
const MAX_QUEUE: usize = 256;

#[repr(C, align(4096))]
struct QueueMem([u8; 4 * 4096]);
static QUEUE: Global<QueueMem> = Global::new(QueueMem([0; 4 * 4096]));

const CHUNK: usize = (SECTORS_PER_REQUEST * 512) as usize;

/// Passes of [`work`] over each chunk, about 14 thousand instructions each:
/// the work overlapping a request (about 0.85 million instructions, 4 ms or
/// more on the soft vCPU) outlasts the host's service time of a read even
/// when every host core is busy and the monitor's disk thread must wait for a
/// scheduler tick (4 ms at HZ=250) to run.
const WORK_PASSES: u64 = 60;

/// One request in flight at a time: one header and status byte, and two
/// data buffers (the device fills one while the guest checksums the other).
#[repr(C, align(4096))]
struct Buffers {
    header: [u8; 16],
    status: [u8; 16],
    data: [[u8; CHUNK]; 2],
}
static BUFFERS: Global<Buffers> = Global::new(Buffers {
    header: [0; 16],
    status: [0; 16],
    data: [[0; CHUNK]; 2],
});

static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static IO_BASE: AtomicU64 = AtomicU64::new(0);
static IRQ: AtomicU64 = AtomicU64::new(0);

fn pci_read(bus: u8, dev: u8, func: u8, off: u8) -> u32 {
    let addr = 0x8000_0000
        | (bus as u32) << 16
        | (dev as u32) << 11
        | (func as u32) << 8
        | (off as u32 & 0xfc);
    // SAFETY: PCI configuration mechanism #1.
    unsafe {
        outl(0xcf8, addr);
        inl(0xcfc)
    }
}

fn pci_write(bus: u8, dev: u8, func: u8, off: u8, v: u32) {
    let addr = 0x8000_0000
        | (bus as u32) << 16
        | (dev as u32) << 11
        | (func as u32) << 8
        | (off as u32 & 0xfc);
    // SAFETY: PCI configuration mechanism #1.
    unsafe {
        outl(0xcf8, addr);
        outl(0xcfc, v);
    }
}

/// Find a legacy virtio-blk function (1af4:1001) on bus 0.
fn find_device() -> Option<(u8, u8)> {
    for dev in 0..32 {
        for func in 0..8 {
            let id = pci_read(0, dev, func, 0);
            if id == 0xffff_ffff {
                if func == 0 {
                    break;
                }
                continue;
            }
            if id == 0x1001_1af4 {
                return Some((dev, func));
            }
            // Single-function device: skip the other functions.
            if func == 0 && pci_read(0, dev, 0, 0x0c) & (0x80 << 16) == 0 {
                break;
            }
        }
    }
    None
}

fn on_irq(frame: *mut Frame) -> *mut Frame {
    let base = IO_BASE.load(Ordering::Relaxed) as u16;
    // SAFETY: reading the ISR status register acknowledges (lowers) the
    // device's interrupt line.
    let isr = unsafe { inb(base + ISR_STATUS) };
    if isr & 1 != 0 {
        INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    }
    pic::eoi(IRQ.load(Ordering::Relaxed) as u8);
    frame
}

struct Queue {
    size: usize,
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    last_used: u16,
}

impl Queue {
    fn layout(size: usize) -> Queue {
        let base = QUEUE.get() as *mut u8;
        let avail_off = 16 * size;
        let used_off = (avail_off + 6 + 2 * size + 4095) & !4095;
        // SAFETY: offsets stay inside QUEUE for size <= MAX_QUEUE (checked by the caller).
        unsafe {
            Queue {
                size,
                desc: base,
                avail: base.add(avail_off),
                used: base.add(used_off),
                last_used: 0,
            }
        }
    }

    fn set_desc(&mut self, i: usize, addr: u64, len: u32, flags: u16, next: u16) {
        // SAFETY: i < 3 <= size; descriptor i lies inside the ring.
        unsafe {
            let d = self.desc.add(16 * i);
            (d as *mut u64).write_volatile(addr);
            (d.add(8) as *mut u32).write_volatile(len);
            (d.add(12) as *mut u16).write_volatile(flags);
            (d.add(14) as *mut u16).write_volatile(next);
        }
    }

    /// Publish descriptor chain 0 in the available ring.
    fn publish(&mut self) {
        // SAFETY: avail ring: flags u16, idx u16, ring[size] u16.
        unsafe {
            let idx_p = self.avail.add(2) as *mut u16;
            let idx = idx_p.read_volatile();
            (self.avail.add(4 + 2 * (idx as usize % self.size)) as *mut u16).write_volatile(0);
            compiler_fence(Ordering::SeqCst);
            idx_p.write_volatile(idx.wrapping_add(1));
        }
    }

    fn used_idx(&self) -> u16 {
        // SAFETY: used ring: flags u16, idx u16, ring[size] of (id u32, len u32).
        unsafe { (self.used.add(2) as *const u16).read_volatile() }
    }
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// What the guest computes from a chunk besides its checksum, standing for
/// an application's processing of the data it read: [`WORK_PASSES`] chained
/// FNV-1a passes. The result is not printed (the output stays comparable
/// with QEMU's and with earlier versions of this guest) nor stored in a
/// static: `black_box` keeps the compiler from skipping the work.
fn work(chunk: &[u8]) {
    let mut acc = 0;
    for pass in 0..WORK_PASSES {
        let mut h = acc ^ pass;
        fnv(&mut h, chunk);
        acc = h;
    }
    core::hint::black_box(acc);
}

#[unsafe(no_mangle)]
fn guest_main(_info: &rt::BootInfo) -> u8 {
    println!("disk: virtio-blk (legacy PCI) read by DMA with completion interrupts");
    let Some((dev, func)) = find_device() else {
        println!("disk: no virtio-blk device on PCI bus 0");
        return EXIT_NO_DEVICE;
    };
    let bar0 = pci_read(0, dev, func, 0x10);
    let irq = pci_read(0, dev, func, 0x3c) & 0xff;
    if bar0 & 1 == 0 || irq >= 16 {
        println!(
            "disk: unusable configuration: bar0 {bar0:#x} irq {}",
            Dec(irq as u64)
        );
        return EXIT_DEVICE_ERROR;
    }
    let base = (bar0 & 0xfffc) as u16;
    IO_BASE.store(base as u64, Ordering::Relaxed);
    IRQ.store(irq as u64, Ordering::Relaxed);
    // Command register: I/O space + bus master.
    let cmd = pci_read(0, dev, func, 0x04);
    pci_write(0, dev, func, 0x04, (cmd & 0xffff) | 0x5);

    // SAFETY: the BAR names the device's legacy virtio registers (this
    // covers the port accesses below too); DMA targets are our own statics.
    let capacity = unsafe {
        outb(base + DEVICE_STATUS, 0);
        outb(base + DEVICE_STATUS, STATUS_ACK);
        outb(base + DEVICE_STATUS, STATUS_ACK | STATUS_DRIVER);
        let _features = inl(base + HOST_FEATURES);
        outl(base + GUEST_FEATURES, 0);
        inl(base + CONFIG_CAPACITY) as u64 | (inl(base + CONFIG_CAPACITY + 4) as u64) << 32
    };
    // SAFETY: as above.
    let qsize = unsafe {
        outw(base + QUEUE_SELECT, 0);
        inw(base + QUEUE_SIZE) as usize
    };
    if !(3..=MAX_QUEUE).contains(&qsize) {
        println!("disk: unusable queue size {}", Dec(qsize as u64));
        return EXIT_DEVICE_ERROR;
    }
    let mut q = Queue::layout(qsize);
    interrupts::set_handler(pic::IRQ_BASE + irq as u8, on_irq);
    // SAFETY: as above; the ring memory is zeroed static memory.
    unsafe {
        outl(base + QUEUE_PFN, (QUEUE.get() as u64 >> 12) as u32);
        outb(
            base + DEVICE_STATUS,
            STATUS_ACK | STATUS_DRIVER | STATUS_DRIVER_OK,
        );
    }
    pic::unmask(irq as u8);
    // Only machine-independent facts go to the output (QEMU and the CAS
    // Motion monitor place the device differently).
    println!("disk: capacity {} sectors", Dec(capacity));

    let total = capacity.min(MAX_SECTORS);
    let bufs = BUFFERS.get();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut first = [0u8; 16];
    // The chunk read last, not yet checksummed: (buffer, bytes).
    let mut unsummed: Option<(usize, usize)> = None;
    let mut sector = 0;
    let mut k = 0usize;
    // Interrupts stay enabled while the guest works, so a completion can
    // land anywhere in the work.
    cpu::sti();
    while sector < total {
        let n = SECTORS_PER_REQUEST.min(total - sector);
        let buf = k % 2;
        // SAFETY: the device only touches the header, the status byte and
        // data buffer `buf` while the request is outstanding (the other
        // buffer is ours), and we wait for its completion below.
        unsafe {
            let hdr = &raw mut (*bufs).header;
            let mut h = [0u8; 16]; // type VIRTIO_BLK_T_IN (0), reserved, sector
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            hdr.write_volatile(h);
            (&raw mut (*bufs).status[0]).write_volatile(0xff);
            q.set_desc(0, hdr as u64, 16, DESC_F_NEXT, 1);
            q.set_desc(
                1,
                (&raw mut (*bufs).data[buf]) as u64,
                (n * 512) as u32,
                DESC_F_NEXT | DESC_F_WRITE,
                2,
            );
            q.set_desc(2, (&raw mut (*bufs).status) as u64, 1, DESC_F_WRITE, 0);
        }
        q.publish();
        compiler_fence(Ordering::SeqCst);
        // SAFETY: notify queue 0.
        unsafe { outw(base + QUEUE_NOTIFY, 0) };
        // Overlap: process the previous chunk while this one is read.
        if let Some((prev, len)) = unsummed.take() {
            // SAFETY: buffer `prev` is not part of the request in flight.
            let chunk = unsafe { &(&(*bufs).data)[prev][..len] };
            fnv(&mut h, chunk);
            work(chunk);
        }
        loop {
            cpu::cli();
            if q.used_idx() != q.last_used {
                break;
            }
            cpu::sti_hlt();
        }
        cpu::sti();
        q.last_used = q.last_used.wrapping_add(1);
        // SAFETY: the request completed; the device is done with the buffers.
        let status = unsafe { (&raw const (*bufs).status[0]).read_volatile() };
        if status != 0 {
            println!(
                "disk: request for sector {} failed with status {}",
                Dec(sector),
                Dec(status as u64)
            );
            return EXIT_DEVICE_ERROR;
        }
        if sector == 0 {
            // SAFETY: as above.
            first.copy_from_slice(unsafe { &(&(*bufs).data)[buf][..16] });
        }
        unsummed = Some((buf, (n * 512) as usize));
        sector += n;
        k += 1;
    }
    // The last chunk, processed like the others.
    if let Some((prev, len)) = unsummed {
        // SAFETY: no request is in flight.
        let chunk = unsafe { &(&(*bufs).data)[prev][..len] };
        fnv(&mut h, chunk);
        work(chunk);
    }
    let shown: [u8; 16] = first.map(|b| {
        if b.is_ascii_graphic() || b == b' ' {
            b
        } else {
            b'.'
        }
    });
    println!(
        "disk: sector 0 begins {:?}",
        core::str::from_utf8(&shown).unwrap_or("?")
    );
    println!("disk: read {total} sectors, checksum {h:#018x}");
    let irqs = INTERRUPTS.load(Ordering::Relaxed);
    let requests = total.div_ceil(SECTORS_PER_REQUEST);
    if irqs < requests {
        println!(
            "disk: only {} completion interrupts for {} requests",
            Dec(irqs),
            Dec(requests)
        );
        return EXIT_DEVICE_ERROR;
    }
    println!("disk: {} requests completed by interrupt", Dec(requests));
    rt::EXIT_SUCCESS
}
