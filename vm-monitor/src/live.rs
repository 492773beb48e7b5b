//! The live environment: device models driven by the host's clock, the
//! host's randomness, a disk image served by a worker thread and serial
//! input arriving on a thread. This is where the non-determinism comes from.
//!
//! Threads that produce inputs (the serial reader, the disk worker) ring a
//! doorbell when something arrives: it kicks a running vCPU out to the
//! next delivery point and wakes a halted guest's idle wait.

mod disk_worker;

pub use disk_worker::{DEFAULT_LATENCY as DEFAULT_DISK_LATENCY, DiskTiming, MAX_IN_FLIGHT};

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::{RngCore, SeedableRng};
use vm_memory::GuestMemoryMmap;

use crate::devices::pci::{PciHost, VIRTIO_IRQ};
use crate::devices::pic::Pic;
use crate::devices::pit::Pit;
use crate::devices::rtc::Rtc;
use crate::devices::serial::{COM1_IRQ, SerialSink, Uart};
use crate::devices::virtio_blk::{DiskImage, DmaOp, VirtioBlk};
use crate::env::{AsyncInput, AsyncPoint, EnvError, Environment, Idle, RandomKind};
use disk_worker::DiskBackend;

/// The guest's time-stamp counter rate: TSC = nanoseconds since start × 2.
pub const TSC_HZ: u64 = 2_000_000_000;
/// Serial input arrives at the line rate of 115200 baud 8N1: 11520 bytes/s.
/// Faster than that, a guest's receive loop would never see an empty FIFO
/// and a whole file would arrive inside one interrupt.
pub const RX_BYTES_PER_SEC: u64 = 11_520;
/// Bytes that may arrive back to back (the 16550's receive FIFO).
const RX_BURST: u64 = 16;

/// Rung by threads that produce inputs; waited on by a halted guest.
/// A sequence number, so a wait that starts after a check cannot miss a
/// ring that came between the two.
#[derive(Default)]
struct Doorbell {
    rung: Mutex<u64>,
    cv: Condvar,
    kicker: Mutex<Option<Arc<dyn vcpu::Kicker>>>,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
        let kicker = self
            .kicker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(k) = kicker {
            k.kick();
        }
    }

    /// The ring count, to wait on after checking for work.
    fn seen(&self) -> u64 {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until rung after `seen`, or `until`.
    fn wait(&self, seen: u64, until: Option<Instant>) {
        let mut g = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        while *g == seen {
            match until {
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, t - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    fn set_kicker(&self, kicker: Arc<dyn vcpu::Kicker>) {
        *self.kicker.lock().unwrap_or_else(|p| p.into_inner()) = Some(kicker);
    }
}

#[derive(Default)]
struct FeedState {
    buf: VecDeque<u8>,
    closed: bool,
    doorbell: Option<Arc<Doorbell>>,
}

/// Serial input arriving from a host reader (a file, stdin) on its own
/// thread; the guest sees the bytes when they have arrived and the UART has
/// room, which is host timing: non-deterministic.
#[derive(Clone, Default)]
pub struct InputFeed {
    shared: Arc<Mutex<FeedState>>,
}

impl std::fmt::Debug for InputFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputFeed").finish_non_exhaustive()
    }
}

impl InputFeed {
    /// Bytes that are all there from the start.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let feed = InputFeed::default();
        {
            let mut s = feed.lock();
            s.buf.extend(bytes);
            s.closed = true;
        }
        feed
    }

    /// Read `reader` on a thread until EOF or an error.
    pub fn from_reader(mut reader: impl Read + Send + 'static) -> Self {
        let feed = InputFeed::default();
        let shared = feed.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                let n = reader.read(&mut chunk).unwrap_or(0);
                let doorbell = {
                    let mut s = shared.lock();
                    if n == 0 {
                        s.closed = true;
                    } else {
                        s.buf.extend(&chunk[..n]);
                    }
                    s.doorbell.clone()
                };
                if let Some(d) = doorbell {
                    d.ring();
                }
                if n == 0 {
                    break;
                }
            }
        });
        feed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take up to `max` bytes that have arrived.
    fn take(&self, max: usize) -> Vec<u8> {
        let mut s = self.lock();
        let n = max.min(s.buf.len());
        s.buf.drain(..n).collect()
    }

    /// Put bytes back at the front (the UART had less room than expected).
    fn unget(&self, bytes: &[u8]) {
        let mut s = self.lock();
        for &b in bytes.iter().rev() {
            s.buf.push_front(b);
        }
    }

    fn has_bytes(&self) -> bool {
        !self.lock().buf.is_empty()
    }

    /// Whether more bytes may still arrive.
    fn open(&self) -> bool {
        !self.lock().closed
    }
}

/// What a live machine is connected to.
pub struct LiveConfig {
    /// Where the guest's serial output goes.
    pub serial_out: SerialSink,
    /// Serial input, if any.
    pub input: Option<InputFeed>,
    /// The disk behind virtio-blk, if any.
    pub disk: Option<DiskImage>,
}

/// Devices on the host's clock.
pub struct LiveEnvironment {
    start: Instant,
    start_unix: u64,
    mem: GuestMemoryMmap,
    pic: Pic,
    pit: Pit,
    rtc: Rtc,
    uart: Uart,
    pci: PciHost,
    /// Where the disk's requests run (`None` without a disk).
    disk: Option<DiskBackend>,
    dma: VecDeque<DmaOp>,
    input: Option<InputFeed>,
    doorbell: Arc<Doorbell>,
    /// Line-rate pacing of serial input: bytes that may arrive now, and when
    /// that was computed (ns).
    rx_credit: u64,
    rx_credit_at: u64,
    rng: rand::rngs::StdRng,
    /// Serial input moved into the UART since the last
    /// [`LiveEnvironment::take_serial_arrivals`], when a recorder asked.
    arrivals: Option<Vec<u8>>,
}

impl std::fmt::Debug for LiveEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEnvironment").finish_non_exhaustive()
    }
}

impl LiveEnvironment {
    /// Devices for a guest with memory `mem` (devices read it for DMA
    /// descriptors; they never write it).
    pub fn new(mem: GuestMemoryMmap, cfg: LiveConfig) -> Self {
        let mut pic = Pic::new();
        // What PC firmware leaves behind: the PCI interrupt is level-triggered.
        pic.set_elcr(1 << VIRTIO_IRQ);
        let start_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let doorbell = Arc::new(Doorbell::default());
        if let Some(feed) = &cfg.input {
            feed.lock().doorbell = Some(Arc::clone(&doorbell));
        }
        let blk = cfg.disk.as_ref().map(|d| VirtioBlk::new(d.geometry()));
        let bell = Arc::clone(&doorbell);
        let disk = cfg
            .disk
            .map(|d| DiskBackend::new(d, Arc::new(move || bell.ring())));
        LiveEnvironment {
            start: Instant::now(),
            start_unix,
            mem,
            pic,
            pit: Pit::new(),
            rtc: Rtc::new(),
            uart: Uart::new(cfg.serial_out),
            pci: PciHost::new(blk),
            disk,
            dma: VecDeque::new(),
            input: cfg.input,
            doorbell,
            rx_credit: RX_BURST,
            rx_credit_at: 0,
            rng: rand::rngs::StdRng::from_os_rng(),
            arrivals: None,
        }
    }

    /// Choose when disk requests complete (default: on a worker thread, see
    /// [`DiskTiming`]). Affects requests submitted afterwards.
    pub fn set_disk_timing(&mut self, timing: DiskTiming) {
        if let Some(d) = &mut self.disk {
            d.set_timing(timing);
        }
    }

    /// From now on keep the serial input bytes as they reach the UART, for
    /// [`LiveEnvironment::take_serial_arrivals`].
    pub fn keep_serial_arrivals(&mut self) {
        self.arrivals.get_or_insert_with(Vec::new);
    }

    /// Move the serial input that reached the UART since the last call into `out`.
    pub fn take_serial_arrivals(&mut self, out: &mut Vec<u8>) {
        if let Some(a) = &mut self.arrivals {
            out.append(a);
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn instant(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }

    /// When the next paced input byte may arrive (ns), if bytes are waiting
    /// for line-rate credit and the UART has room for them.
    fn rx_pacing_deadline(&self) -> Option<u64> {
        let waiting = self.input.as_ref().is_some_and(InputFeed::has_bytes);
        (waiting && self.rx_credit == 0 && self.uart.rx_space() > 0)
            .then(|| self.rx_credit_at + 1_000_000_000u64.div_ceil(RX_BYTES_PER_SEC))
    }

    /// Why the block device stopped, if the guest broke it.
    pub fn disk_broken(&self) -> Option<&str> {
        self.pci.blk_broken()
    }

    /// Bring devices up to date: timer ticks, arrived input, IRQ lines.
    fn poll(&mut self) {
        let now = self.now_ns();
        if self.pit.advance(now) > 0 {
            self.pic.pulse_irq(0);
        }
        if let Some(feed) = &self.input {
            let elapsed = now.saturating_sub(self.rx_credit_at);
            let earned = (elapsed as u128 * RX_BYTES_PER_SEC as u128 / 1_000_000_000) as u64;
            if earned > 0 {
                self.rx_credit = (self.rx_credit + earned).min(RX_BURST);
                self.rx_credit_at = now;
            }
            let room = self.uart.rx_space().min(self.rx_credit as usize);
            if room > 0 {
                let bytes = feed.take(room);
                let n = self.uart.receive(&bytes);
                if let Some(a) = &mut self.arrivals {
                    a.extend_from_slice(&bytes[..n]);
                }
                if n < bytes.len() {
                    feed.unget(&bytes[n..]);
                }
                self.rx_credit -= n as u64;
            }
        }
        self.sync_lines();
    }

    /// Hand the requests the guest has made available to the disk, as many
    /// as there is room for in flight.
    fn submit_disk_requests(&mut self) {
        let Some(disk) = &mut self.disk else { return };
        let room = disk.room();
        if room == 0 {
            return;
        }
        for req in self.pci.take_blk_requests(&self.mem, room) {
            disk.submit(req);
        }
    }

    /// Whether the disk has completions to deliver now.
    fn disk_done(&mut self) -> bool {
        self.disk.as_mut().is_some_and(DiskBackend::has_done)
    }

    fn sync_lines(&mut self) {
        if self.uart.take_irq() {
            self.pic.pulse_irq(COM1_IRQ);
        }
        self.pic.set_irq(VIRTIO_IRQ, self.pci.blk_line());
    }

    fn read_byte(&mut self, port: u16) -> u8 {
        let now = self.now_ns();
        match port {
            p if Pic::claims(p) => self.pic.read(p),
            p if Pit::claims(p) => self.pit.read(p, now),
            p if Rtc::claims(p) => self.rtc.read(p, self.start_unix + now / 1_000_000_000),
            p if Uart::claims(p) => self.uart.read(p),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, port: u16, val: u8) {
        let now = self.now_ns();
        match port {
            p if Pic::claims(p) => self.pic.write(p, val),
            p if Pit::claims(p) => self.pit.write(p, val, now),
            p if Rtc::claims(p) => self.rtc.write(p, val),
            p if Uart::claims(p) => self.uart.write(p, val),
            _ => {}
        }
    }
}

impl Environment for LiveEnvironment {
    fn port_in(&mut self, port: u16, size: u8) -> Result<u32, EnvError> {
        let v = if self.pci.claims(port) {
            self.pci.read(port, size)
        } else {
            // 8-bit devices: a wider access is consecutive byte cycles.
            (0..size.min(4) as u16).fold(0u32, |v, i| {
                v | (self.read_byte(port.wrapping_add(i)) as u32) << (8 * i)
            })
        };
        self.sync_lines();
        Ok(v)
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), EnvError> {
        if self.pci.claims(port) {
            self.pci.write(port, size, value);
            // A queue notification: the requests are read from the ring now.
            self.submit_disk_requests();
        } else {
            for i in 0..size.min(4) as u16 {
                self.write_byte(port.wrapping_add(i), (value >> (8 * i)) as u8);
            }
        }
        self.sync_lines();
        Ok(())
    }

    fn mmio_read(&mut self, _gpa: u64, _size: u8) -> Result<[u8; 16], EnvError> {
        // No MMIO devices: an unclaimed read floats high.
        Ok([0xff; 16])
    }

    fn mmio_write(&mut self, _gpa: u64, _data: &[u8]) -> Result<(), EnvError> {
        Ok(())
    }

    fn tsc(&mut self) -> Result<u64, EnvError> {
        Ok((self.now_ns() as u128 * TSC_HZ as u128 / 1_000_000_000) as u64)
    }

    fn random(&mut self, _kind: RandomKind, size: u8) -> Result<Option<u64>, EnvError> {
        let v = self.rng.next_u64();
        Ok(Some(match size {
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            _ => v,
        }))
    }

    fn next_async(&mut self, at: &AsyncPoint<'_>) -> Result<Option<AsyncInput>, EnvError> {
        loop {
            match self.dma.pop_front() {
                Some(DmaOp::Write { gpa, data }) => {
                    return Ok(Some(AsyncInput::DmaWrite { gpa, data }));
                }
                Some(DmaOp::Interrupt) => {
                    self.pci.raise_blk_interrupt();
                    self.sync_lines();
                }
                None => match self.disk.as_mut().and_then(DiskBackend::take_done) {
                    // A completion the driver no longer expects (reset
                    // since) yields nothing.
                    Some(done) => self
                        .dma
                        .extend(self.pci.complete_blk(done).into_iter().flatten()),
                    None => break,
                },
            }
        }
        // Completions made room for requests still in the ring.
        self.submit_disk_requests();
        self.poll();
        if at.interruptible && self.pic.interrupt_pending() {
            return Ok(Some(AsyncInput::Interrupt(self.pic.acknowledge())));
        }
        Ok(None)
    }

    fn interrupt_waiting(&mut self) -> Result<bool, EnvError> {
        self.poll();
        Ok(self.pic.interrupt_pending())
    }

    fn idle(&mut self, limit: Option<Instant>) -> Result<Idle, EnvError> {
        // Before looking, so a ring after the look ends the wait.
        let seen = self.doorbell.seen();
        self.poll();
        if self.pic.interrupt_pending() || !self.dma.is_empty() || self.disk_done() {
            return Ok(Idle::Woke);
        }
        let timer = match (self.pit.next_irq_time(), self.rx_pacing_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|ns| self.instant(ns));
        // Input can only wake the guest if more may arrive and the UART has
        // room (bytes already waiting were moved in by `poll`).
        let input_open = self.input.as_ref().is_some_and(|f| f.open());
        let input_can_wake = input_open && self.uart.rx_space() > 0;
        let disk_can_wake = self.disk.as_ref().is_some_and(|d| d.in_flight() > 0);
        if timer.is_none() && !input_can_wake && !disk_can_wake {
            return Ok(Idle::Never);
        }
        let until = match (timer, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.doorbell.wait(seen, until);
        Ok(Idle::Woke)
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        // Disk completions need no deadline: the worker kicks the vCPU when
        // one is ready (and in exit-synchronous recording it then waits for
        // the next instruction exit, which a deadline must not pre-empt).
        if !self.dma.is_empty() {
            return Some(Instant::now());
        }
        match (self.pit.next_irq_time(), self.rx_pacing_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|ns| self.instant(ns))
    }

    fn set_kicker(&mut self, kicker: Arc<dyn vcpu::Kicker>) {
        self.doorbell.set_kicker(kicker);
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::fuzzing::NullVcpu;

    fn env(
        input: Option<InputFeed>,
        disk: Option<DiskImage>,
    ) -> (GuestMemoryMmap, LiveEnvironment) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let e = LiveEnvironment::new(
            mem.clone(),
            LiveConfig {
                serial_out: Box::new(std::io::sink()),
                input,
                disk,
            },
        );
        (mem, e)
    }

    fn pic_init(e: &mut LiveEnvironment, master_mask: u8, slave_mask: u8) {
        for (p, v) in [
            (0x20, 0x11),
            (0xa0, 0x11),
            (0x21, 0x20),
            (0xa1, 0x28),
            (0x21, 4),
            (0xa1, 2),
            (0x21, 1),
            (0xa1, 1),
            (0x21, master_mask),
            (0xa1, slave_mask),
        ] {
            e.port_out(p, 1, v.into()).unwrap();
        }
    }

    #[test]
    fn serial_input_raises_irq4_and_reads_back() {
        let (_, mut e) = env(Some(InputFeed::from_bytes(b"ok")), None);
        pic_init(&mut e, 0xef, 0xff);
        e.port_out(0x3f9, 1, 1).unwrap();
        let v = NullVcpu::default();
        let at = AsyncPoint::new(&v, 0, true);
        assert_eq!(
            e.next_async(&at).unwrap(),
            Some(AsyncInput::Interrupt(0x24))
        );
        assert_eq!(e.port_in(0x3f8, 1).unwrap(), b'o' as u32);
        assert_eq!(e.port_in(0x3f8, 1).unwrap(), b'k' as u32);
        assert_eq!(e.port_in(0x3fd, 1).unwrap() & 1, 0);
        // Input closed and drained, no timer: nothing can wake a halted guest.
        assert_eq!(e.idle(None).unwrap(), Idle::Never);
    }

    /// A guest that set up the disk and queued one read of sector 3 into
    /// 0x2000 (status at 0x3000), not yet notified.
    fn disk_request(timing: DiskTiming) -> (GuestMemoryMmap, LiveEnvironment) {
        let (mem, mut e) = env(None, Some(DiskImage::zeroed(16)));
        e.set_disk_timing(timing);
        pic_init(&mut e, 0xfb, 0xf7);
        // PCI command: I/O + bus master.
        e.port_out(0xcf8, 4, 0x8000_0000 | 3 << 11 | 4).unwrap();
        e.port_out(0xcfc, 2, 5).unwrap();
        e.port_out(0xc012, 1, 7).unwrap();
        e.port_out(0xc008, 4, 0x10).unwrap(); // ring at 64 KiB
        let ring = 0x10000u64;
        mem.write_obj(0u32, GuestAddress(0x1000)).unwrap();
        mem.write_obj(3u64, GuestAddress(0x1008)).unwrap();
        for (i, (addr, len, flags, next)) in [
            (0x1000u64, 16u32, 1u16, 1u16),
            (0x2000, 512, 3, 2),
            (0x3000, 1, 2, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let d = ring + 16 * i as u64;
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(next, GuestAddress(d + 14)).unwrap();
        }
        let avail = ring + 16 * 256;
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
        (mem, e)
    }

    /// Asynchronous inputs up to and including the first interrupt.
    fn until_interrupt(e: &mut LiveEnvironment) -> Vec<AsyncInput> {
        let v = NullVcpu::default();
        let at = AsyncPoint::new(&v, 0, true);
        let mut got = Vec::new();
        while let Some(a) = e.next_async(&at).unwrap() {
            let irq = matches!(a, AsyncInput::Interrupt(_));
            got.push(a);
            if irq {
                break;
            }
        }
        got
    }

    #[test]
    fn disk_completion_is_dma_writes_then_the_interrupt() {
        let (_mem, mut e) = disk_request(DiskTiming::Inline);
        e.port_out(0xc010, 2, 0).unwrap();
        let got = until_interrupt(&mut e);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(matches!(&got[0], AsyncInput::DmaWrite { gpa: 0x2000, data } if data.len() == 512));
        assert!(matches!(&got[1], AsyncInput::DmaWrite { gpa: 0x3000, data } if data == &[0]));
        assert_eq!(got[4], AsyncInput::Interrupt(0x2b));
        // Reading the ISR lowers the level-triggered line.
        assert_eq!(e.port_in(0xc013, 1).unwrap(), 1);
        e.port_out(0xa0, 1, 0x20).unwrap();
        e.port_out(0x20, 1, 0x20).unwrap();
        assert!(!e.interrupt_waiting().unwrap());
    }

    #[test]
    fn disk_completion_arrives_later_from_the_worker_and_wakes_idle() {
        let latency = Duration::from_millis(30);
        let (_mem, mut e) = disk_request(DiskTiming::Worker { latency });
        let notified = Instant::now();
        e.port_out(0xc010, 2, 0).unwrap();
        assert!(
            until_interrupt(&mut e).is_empty(),
            "nothing is ready right after the notification"
        );
        assert_eq!(e.next_deadline(), None, "no polling deadline for the disk");
        // A halted guest waits for the completion; the worker's doorbell
        // ends the wait (long before the limit).
        let limit = Instant::now() + Duration::from_secs(20);
        while !e.disk_done() {
            assert_eq!(e.idle(Some(limit)).unwrap(), Idle::Woke);
            assert!(Instant::now() < limit, "the completion never came");
        }
        assert!(notified.elapsed() >= latency);
        let got = until_interrupt(&mut e);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(matches!(&got[0], AsyncInput::DmaWrite { gpa: 0x2000, data } if data.len() == 512));
        assert_eq!(got[4], AsyncInput::Interrupt(0x2b));
    }

    /// A guest that publishes more requests than may be in flight: the
    /// rest wait in its ring and are taken as completions make room; all
    /// complete, in order.
    #[test]
    fn requests_beyond_the_in_flight_limit_wait_in_the_ring() {
        const N: u16 = 40;
        let (mem, mut e) = disk_request(DiskTiming::Worker {
            latency: Duration::ZERO,
        });
        // The same chain published N times (avail ring slots are 0: head 0).
        mem.write_obj(N, GuestAddress(0x10000 + 16 * 256 + 2))
            .unwrap();
        e.port_out(0xc010, 2, 0).unwrap();
        let in_flight = |e: &LiveEnvironment| e.disk.as_ref().unwrap().in_flight();
        assert_eq!(in_flight(&e), MAX_IN_FLIGHT);
        let used_idx = 0x12002u64;
        let v = NullVcpu::default();
        let at = AsyncPoint::new(&v, 0, false);
        let mut seen = Vec::new();
        let limit = Instant::now() + Duration::from_secs(20);
        while seen.len() < N as usize {
            assert!(Instant::now() < limit, "stuck after {seen:?}");
            while let Some(a) = e.next_async(&at).unwrap() {
                if let AsyncInput::DmaWrite { gpa, data } = a {
                    if gpa == used_idx {
                        seen.push(u16::from_le_bytes([data[0], data[1]]));
                    }
                }
                assert!(in_flight(&e) <= MAX_IN_FLIGHT);
            }
            if seen.len() < N as usize {
                e.idle(Some(Instant::now() + Duration::from_millis(50)))
                    .unwrap();
            }
        }
        assert_eq!(seen, (1..=N).collect::<Vec<_>>());
        assert_eq!(in_flight(&e), 0);
    }

    #[test]
    fn a_halted_guest_with_a_request_in_flight_is_not_stuck() {
        let (_mem, mut e) = disk_request(DiskTiming::Worker {
            latency: Duration::from_millis(10),
        });
        e.port_out(0xc010, 2, 0).unwrap();
        // No timer, no input: only the disk can wake the guest, so idle
        // must wait for it rather than report `Never`.
        assert_eq!(e.idle(None).unwrap(), Idle::Woke);
        assert_eq!(until_interrupt(&mut e).len(), 5);
        assert_eq!(e.idle(Some(Instant::now())).unwrap(), Idle::Never);
    }

    #[test]
    fn the_pit_ticks_on_the_host_clock() {
        let (_, mut e) = env(None, None);
        pic_init(&mut e, 0xfe, 0xff);
        e.port_out(0x43, 1, 0x34).unwrap();
        e.port_out(0x40, 1, 0xa9).unwrap();
        e.port_out(0x40, 1, 0x04).unwrap(); // 1193 ticks: ~1 ms
        let deadline = e.next_deadline().expect("a tick is scheduled");
        assert!(deadline <= Instant::now() + Duration::from_millis(2));
        assert_eq!(e.idle(None).unwrap(), Idle::Woke);
        let v = NullVcpu::default();
        assert_eq!(
            e.next_async(&AsyncPoint::new(&v, 0, true)).unwrap(),
            Some(AsyncInput::Interrupt(0x20))
        );
    }
}
