//! Recording: an [`Environment`] that wraps the live one and turns every
//! input it returns into a [`motion_records::Record`].
//!
//! What becomes a record, in the order the machine consumes it:
//!
//! | call | record |
//! |---|---|
//! | `port_in` | `port-in` (port, size, value) |
//! | `mmio_read` | `mmio-read` (address, the bytes) |
//! | `tsc_for` | `rdtsc`, or `rdtscp` (aux 0, the machine's value) |
//! | `random` | `rdrand` / `rdseed` (value, CF) |
//! | `next_async` | `interrupt` (vector, timepoint) or `dma-write` (address, bytes, timepoint) |
//! | `exit_completed` | `serial-input` (bytes that reached the UART since the last exit: for people reading the log; the guest sees them through `port-in` records), `state-check` after an exit that consumed inputs, every `digest_every` inputs a `digest` and its `page-hashes` |
//! | [`RecordingEnv::finish`] | a final `digest` + `page-hashes`, then `end` |
//!
//! Timepoints are exact `(vcpu, branches, rip, rcx)` where the backend counts
//! exactly; on a backend without exact counters (exit-synchronous mode) the
//! `branches` field holds the count of deterministic exits instead, as the
//! log header's counter mode says.
//!
//! The sink is called on the vCPU's thread between runs: it must only queue
//! the record (the component hands it to a log thread), never wait for the
//! store. Only DMA data is copied; every other record is built on the stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use motion_records::{
    DmaWrite, End, EndStatus, Interrupt, MmioRead, PortIn, Rdrand, Rdseed, Rdtsc, Rdtscp, Record,
    SerialInput, StateCheck,
};
use vcpu::{Vcpu, VmExit};
use vm_memory::GuestMemoryMmap;

use crate::digest::{self, MemoryHasher};
use crate::env::{AsyncInput, AsyncPoint, EnvError, Environment, Idle, RandomKind, TscRead};
use crate::live::LiveEnvironment;
use crate::machine::{MachineError, RunOutcome, StopReason};

/// Where records go.
pub trait RecordSink: Send {
    /// Take one record, in order. Must not block for long: the guest waits.
    fn record(&mut self, record: Record) -> Result<(), EnvError>;
}

impl RecordSink for Vec<Record> {
    fn record(&mut self, record: Record) -> Result<(), EnvError> {
        self.push(record);
        Ok(())
    }
}

/// An environment a recorder can wrap: optionally it reports serial input
/// as it arrives (for `serial-input` records).
pub trait Recordable: Environment {
    /// Move the serial input that arrived since the last call into `out`.
    fn take_serial_arrivals(&mut self, out: &mut Vec<u8>) {
        let _ = out;
    }
}

impl Recordable for LiveEnvironment {
    fn take_serial_arrivals(&mut self, out: &mut Vec<u8>) {
        LiveEnvironment::take_serial_arrivals(self, out)
    }
}

/// How to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOptions {
    /// Write a digest after this many inputs (at the next exit).
    pub digest_every: u64,
    /// The vCPU's index in timepoints.
    pub vcpu_index: u32,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            digest_every: DEFAULT_DIGEST_EVERY,
            vcpu_index: 0,
        }
    }
}

/// Default digest interval in inputs. A digest costs about 2 ms (a scan of
/// 128 MiB of guest memory, hashing only the pages that are not zero), an
/// input a few microseconds at most; every input is also followed by a
/// state check at its exit, so digests are for memory, and one per 500
/// inputs keeps them to a few percent of even an exit-heavy recording.
pub const DEFAULT_DIGEST_EVERY: u64 = 500;

/// The largest DMA write one record carries; longer transfers are split.
pub const DMA_CHUNK: usize = 64 * 1024;

/// What a recording wrote, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Records written (all kinds).
    pub records: u64,
    /// Inputs (port/MMIO reads, TSC, random, interrupts, DMA).
    pub inputs: u64,
    /// State checks.
    pub checks: u64,
    /// Digests (with the final one).
    pub digests: u64,
}

/// The recording environment.
pub struct RecordingEnv<E, S> {
    inner: E,
    sink: S,
    mem: GuestMemoryMmap,
    hasher: MemoryHasher,
    opts: RecordOptions,
    since_check: u64,
    since_digest: u64,
    stop: Arc<AtomicBool>,
    arrivals: Vec<u8>,
    stats: RecordStats,
    instructions: Arc<AtomicU64>,
    exits: Arc<AtomicU64>,
    dma_pages: digest::DmaPages,
    /// Exit-synchronous recordings: the clock at the last completed exit;
    /// the last point a replay is sure to stop at too (an exit where the
    /// clock ticked — where inputs may be delivered and digests taken — or
    /// one that consumed inputs), and whether the vCPU has run since (a
    /// kick or window exit is not a point a replay can find).
    clock: Option<u64>,
    last_stop: Option<vcpu::Timepoint>,
    ran_since_stop: bool,
}

impl<E: Recordable, S: RecordSink> RecordingEnv<E, S> {
    /// Record `inner`'s inputs into `sink`; `mem` is the guest's memory
    /// (`ram` bytes) for digests.
    pub fn new(inner: E, sink: S, mem: GuestMemoryMmap, ram: u64, opts: RecordOptions) -> Self {
        RecordingEnv {
            inner,
            sink,
            mem,
            hasher: MemoryHasher::new(ram),
            opts: RecordOptions {
                digest_every: opts.digest_every.max(1),
                ..opts
            },
            since_check: 0,
            since_digest: 0,
            stop: Arc::new(AtomicBool::new(false)),
            arrivals: Vec::new(),
            stats: RecordStats::default(),
            instructions: Arc::new(AtomicU64::new(0)),
            exits: Arc::new(AtomicU64::new(0)),
            dma_pages: digest::DmaPages::default(),
            clock: None,
            last_stop: None,
            ran_since_stop: false,
        }
    }

    /// Guest instructions retired at the last completed exit, readable from
    /// other threads (progress displays).
    pub fn instructions(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.instructions)
    }

    /// The exit clock at the last completed exit (exit-synchronous
    /// recordings; stays 0 on backends with exact counters), readable from
    /// other threads.
    pub fn exits(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.exits)
    }

    /// Set this flag (then kick the vCPU) to stop the recording at the next
    /// point between runs; the log then ends with `end: stopped` there.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The wrapped environment.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Counts so far.
    pub fn stats(&self) -> RecordStats {
        self.stats
    }

    fn emit(&mut self, r: Record) -> Result<(), EnvError> {
        self.stats.records += 1;
        self.sink.record(r)
    }

    fn input(&mut self, r: Record) -> Result<(), EnvError> {
        self.since_check += 1;
        self.since_digest += 1;
        self.stats.inputs += 1;
        self.emit(r)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn digest(&mut self, vcpu: &dyn Vcpu) -> Result<(), EnvError> {
        let (d, p) = digest::take(vcpu, self.opts.vcpu_index, &self.mem, &mut self.hasher)?;
        self.since_digest = 0;
        self.stats.digests += 1;
        self.emit(d.into())?;
        self.emit(p.into())
    }

    /// End the recording after `machine.run` returned `result`: a final
    /// digest and the `end` record. Returns the inner environment, the sink
    /// and the final counts.
    pub fn finish(
        mut self,
        vcpu: &dyn Vcpu,
        result: &Result<RunOutcome, MachineError>,
    ) -> Result<(E, S, RecordStats), EnvError> {
        self.flush_arrivals()?;
        let status = end_status(result);
        // Exit-synchronous, stopped by the host after the guest ran on from
        // its last clock tick or input (a spinning guest, a time limit): no
        // replay can stop exactly there, and no input was delivered or read
        // since. The recording ends at that last point; the guest's work
        // after it is input-free and not part of the log.
        if let (true, EndStatus::Stopped, Some(at)) = (self.ran_since_stop, &status, self.last_stop)
        {
            if vcpu.deterministic_exits().is_some() {
                self.emit(
                    End {
                        status,
                        at: Some(at),
                    }
                    .into(),
                )?;
                return Ok((self.inner, self.sink, self.stats));
            }
        }
        let at = digest::point(vcpu, self.opts.vcpu_index)?;
        self.digest(vcpu)?;
        self.emit(
            End {
                status,
                at: Some(at),
            }
            .into(),
        )?;
        Ok((self.inner, self.sink, self.stats))
    }

    fn flush_arrivals(&mut self) -> Result<(), EnvError> {
        self.inner.take_serial_arrivals(&mut self.arrivals);
        if !self.arrivals.is_empty() {
            let bytes = std::mem::take(&mut self.arrivals);
            self.emit(SerialInput { bytes }.into())?;
        }
        Ok(())
    }
}

/// How a run's result reads as the log's `end` status.
pub fn end_status(result: &Result<RunOutcome, MachineError>) -> EndStatus {
    match result {
        Ok(o) => match &o.stop {
            StopReason::Exit(code) => EndStatus::GuestShutdown { code: *code },
            StopReason::HaltedWithInterruptsDisabled { .. } | StopReason::NothingToWake { .. } => {
                EndStatus::GuestHalted
            }
            StopReason::TimeLimit(_) | StopReason::ExitLimit(_) => EndStatus::Stopped,
            other @ (StopReason::TripleFault { .. } | StopReason::FetchFromNonRam { .. }) => {
                EndStatus::Error {
                    message: format!("guest: {other}"),
                }
            }
        },
        Err(MachineError::Env(EnvError::Stopped)) => EndStatus::Stopped,
        Err(e) => EndStatus::Error {
            message: e.to_string(),
        },
    }
}

fn async_point(at: &AsyncPoint<'_>) -> Result<vcpu::Timepoint, EnvError> {
    at.point()
        .ok_or_else(|| EnvError::Host("cannot read the vCPU's registers for a timepoint".into()))
}

impl<E: Recordable, S: RecordSink> Environment for RecordingEnv<E, S> {
    fn port_in(&mut self, port: u16, size: u8) -> Result<u32, EnvError> {
        let value = self.inner.port_in(port, size)?;
        self.input(PortIn { port, size, value }.into())?;
        Ok(value)
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), EnvError> {
        self.inner.port_out(port, size, value)
    }

    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<[u8; 16], EnvError> {
        let value = self.inner.mmio_read(gpa, size)?;
        let n = usize::from(size).clamp(1, 16);
        let r = MmioRead::new(gpa, &value[..n]).map_err(|e| EnvError::Host(e.to_string()))?;
        self.input(r.into())?;
        Ok(value)
    }

    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> Result<(), EnvError> {
        self.inner.mmio_write(gpa, data)
    }

    fn tsc(&mut self) -> Result<u64, EnvError> {
        self.tsc_for(TscRead::Rdtsc)
    }

    fn tsc_for(&mut self, read: TscRead) -> Result<u64, EnvError> {
        let value = self.inner.tsc_for(read)?;
        let r = match read {
            TscRead::Rdtscp => Rdtscp { value, aux: 0 }.into(),
            TscRead::Rdtsc | TscRead::Rdmsr => Rdtsc { value }.into(),
        };
        self.input(r)?;
        Ok(value)
    }

    fn random(&mut self, kind: RandomKind, size: u8) -> Result<Option<u64>, EnvError> {
        let v = self.inner.random(kind, size)?;
        let (value, ok) = (v.unwrap_or(0), v.is_some());
        let r = match kind {
            RandomKind::Rdrand => Rdrand { value, ok }.into(),
            RandomKind::Rdseed => Rdseed { value, ok }.into(),
        };
        self.input(r)?;
        Ok(v)
    }

    fn next_async(&mut self, at: &AsyncPoint<'_>) -> Result<Option<AsyncInput>, EnvError> {
        if self.stopped() {
            return Err(EnvError::Stopped);
        }
        let input = self.inner.next_async(at)?;
        match &input {
            None => {}
            Some(AsyncInput::Interrupt(vector)) => {
                let at = async_point(at)?;
                self.input(
                    Interrupt {
                        vector: *vector,
                        at,
                    }
                    .into(),
                )?;
            }
            Some(AsyncInput::DmaWrite { gpa, data }) => {
                let at = async_point(at)?;
                self.dma_pages.note(*gpa, data.len());
                // A guest chooses its transfer sizes: large ones become
                // several records at the same point, each fitting a message.
                let mut offset = 0u64;
                for chunk in data.chunks(DMA_CHUNK) {
                    self.input(
                        DmaWrite {
                            gpa: gpa.wrapping_add(offset),
                            bytes: chunk.to_vec(),
                            at: Some(at),
                        }
                        .into(),
                    )?;
                    offset += chunk.len() as u64;
                }
            }
        }
        Ok(input)
    }

    fn interrupt_waiting(&mut self) -> Result<bool, EnvError> {
        self.inner.interrupt_waiting()
    }

    fn idle(&mut self, limit: Option<Instant>) -> Result<Idle, EnvError> {
        if self.stopped() {
            return Err(EnvError::Stopped);
        }
        let idle = self.inner.idle(limit)?;
        if self.stopped() {
            return Err(EnvError::Stopped);
        }
        Ok(idle)
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        self.inner.next_deadline()
    }

    fn set_kicker(&mut self, kicker: Arc<dyn vcpu::Kicker>) {
        self.inner.set_kicker(kicker)
    }

    fn prepare_entry(&mut self, vcpu: &mut dyn Vcpu) -> Result<(), EnvError> {
        self.inner.prepare_entry(vcpu)
    }

    fn run_vcpu(&mut self, vcpu: &mut dyn Vcpu) -> Result<Option<VmExit>, EnvError> {
        if vcpu.deterministic_exits().is_some() {
            if self.last_stop.is_none() {
                // Before the first entry: the first delivery point.
                self.last_stop = Some(digest::point(vcpu, self.opts.vcpu_index)?);
            }
            self.ran_since_stop = true;
        }
        self.inner.run_vcpu(vcpu)
    }

    fn exit_completed(&mut self, vcpu: &mut dyn Vcpu, retired: bool) -> Result<(), EnvError> {
        self.inner.exit_completed(vcpu, retired)?;
        if let Some(r) = vcpu.retired() {
            self.instructions.store(r.instructions, Ordering::Relaxed);
        }
        // Whether this exit advanced the exit clock (always, with exact
        // counters): only such exits are points every backend stops at.
        let ticked = match vcpu.deterministic_exits() {
            None => true,
            Some(n) => {
                self.exits.store(n, Ordering::Relaxed);
                // The clock starts at 0 before the first exit.
                self.clock.replace(n).unwrap_or(0) != n
            }
        };
        self.flush_arrivals()?;
        if !retired {
            return Ok(());
        }
        if (ticked || self.since_check > 0) && vcpu.deterministic_exits().is_some() {
            self.last_stop = Some(digest::point(vcpu, self.opts.vcpu_index)?);
            self.ran_since_stop = false;
        }
        if self.since_check > 0 {
            let pages = self.dma_pages.take();
            let hash = digest::state_hash(&vcpu.regs()?, vcpu.retired(), &self.mem, &pages);
            self.since_check = 0;
            self.stats.checks += 1;
            self.emit(StateCheck { hash }.into())?;
        }
        if self.since_digest >= self.opts.digest_every && ticked {
            self.digest(vcpu)?;
        }
        Ok(())
    }
}
