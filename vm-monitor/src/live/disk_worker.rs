//! The host side of the virtio-blk device: where a request's disk I/O runs,
//! and so when its completion becomes ready.
//!
//! Live, a host worker thread owns the real reads and writes of the image
//! ([`DiskImage::execute`], a `pread` of the file or the overlay): the vCPU
//! hands it each validated request when the guest notifies the queue and
//! keeps running the guest; when the I/O is done, the worker queues the
//! completion, rings the environment's doorbell (which kicks the vCPU and
//! wakes a halted guest's idle wait) and the environment delivers the
//! completion as asynchronous inputs at whatever instruction the guest has
//! reached by then. That point depends on the host — page cache, thread
//! wake-up, the other processes on the cores — which is the
//! non-determinism a recording must capture (and does, as DMA and interrupt
//! records with timepoints). A replay never gets here: it answers from the
//! log.
//!
//! [`DiskTiming::Inline`] executes each request at submission instead, so
//! its completion is ready at the very next delivery point: deterministic,
//! for fuzzing and for tests of the device logic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::devices::virtio_blk::{DiskImage, Done, Request};

/// At most this many requests are in flight; more wait in the guest's ring
/// until completions make room. A hostile guest republishing descriptors
/// cannot make the host buffer more than this many requests (each at most
/// `MAX_REQUEST_BYTES`).
pub const MAX_IN_FLIGHT: usize = 16;

/// When a disk request completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskTiming {
    /// At the next point asynchronous inputs are offered after the
    /// notification: deterministic (fuzzing, device tests).
    Inline,
    /// On a host worker thread, which first waits `latency` (a disk's
    /// service time on top of the page-cache read; zero for none), then does
    /// the I/O; the completion lands wherever the guest is when it is ready.
    Worker {
        /// Extra service time per request.
        latency: Duration,
    },
}

impl Default for DiskTiming {
    fn default() -> Self {
        DiskTiming::Worker {
            latency: DEFAULT_LATENCY,
        }
    }
}

/// The default extra service time per request: 50 µs, the order of a fast
/// SSD's read. Besides modelling a disk, it makes the worker give up the
/// core before doing the I/O. Without it, on a busy host the vCPU thread's
/// hand-off wakes the worker on the same core, the worker preempts it and
/// finishes before the guest runs another instruction, so most completions
/// land right after the notifying `OUT` — the same instruction in every
/// recording (measured here under load: 87% of them). After a sleep the
/// worker completes while the guest computes, at whatever instruction the
/// host's timer and scheduler let it: a different one each time.
pub const DEFAULT_LATENCY: Duration = Duration::from_micros(50);

/// Runs requests and collects their completions.
pub(crate) struct DiskBackend {
    disk: Arc<Mutex<DiskImage>>,
    timing: DiskTiming,
    worker: Option<Worker>,
    ready: VecDeque<Done>,
    in_flight: usize,
    notify: Arc<dyn Fn() + Send + Sync>,
}

struct Worker {
    tx: Option<mpsc::Sender<Request>>,
    rx: mpsc::Receiver<Done>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DiskBackend {
    /// A backend for `disk`; `notify` is called on the worker thread after
    /// each completion is queued.
    pub(crate) fn new(disk: DiskImage, notify: Arc<dyn Fn() + Send + Sync>) -> Self {
        DiskBackend {
            disk: Arc::new(Mutex::new(disk)),
            timing: DiskTiming::default(),
            worker: None,
            ready: VecDeque::new(),
            in_flight: 0,
            notify,
        }
    }

    /// Change when requests complete. Takes effect for requests submitted
    /// afterwards; a worker already started keeps its latency.
    pub(crate) fn set_timing(&mut self, timing: DiskTiming) {
        self.timing = timing;
    }

    /// Requests submitted whose completions have not been taken yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Room for more requests.
    pub(crate) fn room(&self) -> usize {
        MAX_IN_FLIGHT.saturating_sub(self.in_flight)
    }

    fn execute_here(&mut self, req: Request) {
        let done = lock(&self.disk).execute(req);
        self.ready.push_back(done);
    }

    /// Start the I/O of `req`.
    pub(crate) fn submit(&mut self, req: Request) {
        self.in_flight += 1;
        let latency = match self.timing {
            DiskTiming::Inline => return self.execute_here(req),
            DiskTiming::Worker { latency } => latency,
        };
        if self.worker.is_none() {
            match Worker::start(Arc::clone(&self.disk), latency, Arc::clone(&self.notify)) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    tracing::warn!(
                        "virtio-blk: cannot start the disk worker thread ({e}); requests complete inline"
                    );
                    self.timing = DiskTiming::Inline;
                    return self.execute_here(req);
                }
            }
        }
        let sent = match self.worker.as_ref().and_then(|w| w.tx.as_ref()) {
            Some(tx) => tx.send(req).map_err(|e| e.0),
            None => Err(req),
        };
        if let Err(req) = sent {
            tracing::warn!("virtio-blk: the disk worker thread is gone; requests complete inline");
            self.timing = DiskTiming::Inline;
            self.execute_here(req);
        }
    }

    fn collect(&mut self) {
        if let Some(w) = &self.worker {
            self.ready.extend(w.rx.try_iter());
        }
    }

    /// Whether a completion is ready to be taken.
    pub(crate) fn has_done(&mut self) -> bool {
        self.collect();
        !self.ready.is_empty()
    }

    /// The next completion, in submission order, if it is ready.
    pub(crate) fn take_done(&mut self) -> Option<Done> {
        self.collect();
        let done = self.ready.pop_front()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(done)
    }
}

fn lock(disk: &Mutex<DiskImage>) -> std::sync::MutexGuard<'_, DiskImage> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    fn start(
        disk: Arc<Mutex<DiskImage>>,
        latency: Duration,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Worker> {
        let (tx, requests) = mpsc::channel::<Request>();
        let (completions, rx) = mpsc::channel::<Done>();
        let quit = Arc::new(AtomicBool::new(false));
        let q = Arc::clone(&quit);
        let thread = std::thread::Builder::new()
            .name("virtio-blk".into())
            .spawn(move || {
                // One request at a time, in order: a read sees the writes
                // queued before it, and completions come back in the order
                // the used ring needs.
                while let Ok(req) = requests.recv() {
                    if q.load(Ordering::Relaxed) {
                        return;
                    }
                    if !latency.is_zero() {
                        std::thread::sleep(latency);
                    }
                    let done = lock(&disk).execute(req);
                    if completions.send(done).is_err() {
                        return;
                    }
                    notify();
                }
            })?;
        Ok(Worker {
            tx: Some(tx),
            rx,
            quit,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        // Closing the request channel ends the thread's loop.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;
    use crate::devices::virtio_blk::BlkOp;

    fn read(sector: u64, gpa: u64) -> Request {
        Request {
            generation: 0,
            head: sector as u16,
            status_gpa: 0x3000,
            op: BlkOp::Read {
                sector,
                bufs: vec![(gpa, 512)],
            },
        }
    }

    #[test]
    fn the_worker_completes_in_order_and_notifies() {
        let rung = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&rung);
        let mut b = DiskBackend::new(
            DiskImage::zeroed(8),
            Arc::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        );
        b.set_timing(DiskTiming::Worker {
            latency: Duration::from_millis(2),
        });
        let start = Instant::now();
        for s in 0..4 {
            b.submit(read(s, 0x1000 * s));
        }
        assert_eq!(b.in_flight(), 4);
        assert_eq!(b.room(), MAX_IN_FLIGHT - 4);
        let mut heads = Vec::new();
        while heads.len() < 4 {
            assert!(start.elapsed() < Duration::from_secs(10), "worker stuck");
            match b.take_done() {
                Some(d) => heads.push(d.head),
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        assert_eq!(heads, [0, 1, 2, 3]);
        assert!(
            start.elapsed() >= Duration::from_millis(8),
            "the latency applies per request"
        );
        assert_eq!(rung.load(Ordering::SeqCst), 4);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn inline_completions_are_ready_at_once() {
        let mut b = DiskBackend::new(DiskImage::zeroed(8), Arc::new(|| {}));
        b.set_timing(DiskTiming::Inline);
        b.submit(read(1, 0x1000));
        assert!(b.has_done());
        let d = b.take_done().unwrap();
        assert_eq!(d.writes, vec![(0x1000, vec![0u8; 512])]);
        assert!(b.worker.is_none(), "no thread for inline timing");
    }

    #[test]
    fn dropping_the_backend_stops_the_worker() {
        let mut b = DiskBackend::new(DiskImage::zeroed(8), Arc::new(|| {}));
        b.set_timing(DiskTiming::Worker {
            latency: Duration::from_millis(20),
        });
        for s in 0..8 {
            b.submit(read(s, 0));
        }
        let start = Instant::now();
        drop(b);
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "queued requests are abandoned, not served: {:?}",
            start.elapsed()
        );
    }
}
