//! Replay: an [`Environment`] that answers the machine from a recording's
//! records instead of devices, lands every asynchronous input at its
//! recorded timepoint, and compares the recording's checks with the
//! replayed state.
//!
//! The log is followed strictly in order; the record at its head says what
//! must happen next:
//!
//! * a synchronous input (`port-in`, `mmio-read`, `rdtsc`, `rdtscp`,
//!   `rdrand`, `rdseed`) answers the next such exit; another kind of exit,
//!   another port or address or size, is a divergence;
//! * an `interrupt` or `dma-write` is a **landing target**: the vCPU is
//!   driven to its timepoint with `pmu_driver::land` (host counter armed
//!   `margin` branches early, then monitor-trap-flag steps to branches, RIP
//!   and RCX), and the input is applied exactly there; passing the point
//!   (an overshoot) is a divergence;
//! * a `state-check` is compared at the next completed exit;
//! * a `digest` is compared when the vCPU stands at its timepoint (at a
//!   completed exit, or by landing for a recording stopped mid-run); its
//!   `page-hashes` keep the recording's page table, so a memory mismatch
//!   names the first differing page;
//! * `end` is compared when the machine stops; a log without one (cut short
//!   by a crash) replays its prefix and ends [`ReplayEnd::Truncated`].
//!
//! `serial-input` records are informational (the guest read those bytes
//! through `port-in` records) and skipped. The guest's serial output is
//! rebuilt from its writes to the UART's transmit register.
//!
//! On a backend without exact counters (exit-synchronous logs) nothing is
//! landed: the machine runs with `RunLimits::exit_synchronous`, and an
//! asynchronous input is applied at the exit whose count its timepoint holds.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use motion_records::{Digest, DmaWrite, End, EndStatus, Interrupt, Record, Untrapped};
use pmu_driver::arch::{IntelPmu, Rings};
use pmu_driver::{BranchCounter, LandError, LandOptions, LandStats, LandStep, land};
use vcpu::{CounterMode, Regs, Timepoint, Vcpu, VmExit};
use vm_memory::GuestMemoryMmap;

use crate::digest::{self, MemoryHasher, PageDifference};
use crate::env::{AsyncInput, AsyncPoint, EnvError, Environment, Idle, RandomKind, TscRead};
use crate::machine::{MachineError, RunOutcome};
use crate::record::end_status;

/// A record with its number in the log.
pub type Numbered = (u64, Record);

/// Where the records come from (a log read in batches).
pub trait RecordSource: Send {
    /// Append the next records to `queue`, waiting until there is at least
    /// one; `Ok(false)` once the log has no more.
    fn fill(&mut self, queue: &mut VecDeque<Numbered>) -> Result<bool, EnvError>;
}

/// All records at once (tests, tools).
#[derive(Debug)]
pub struct VecSource(Option<Vec<Record>>);

impl VecSource {
    /// The records of a whole log, numbered from 0.
    pub fn new(records: Vec<Record>) -> Self {
        VecSource(Some(records))
    }
}

impl RecordSource for VecSource {
    fn fill(&mut self, queue: &mut VecDeque<Numbered>) -> Result<bool, EnvError> {
        match self.0.take() {
            Some(v) if !v.is_empty() => {
                queue.extend(v.into_iter().enumerate().map(|(i, r)| (i as u64, r)));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// How to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// The vCPU's index in timepoints.
    pub vcpu_index: u32,
    /// How the log's timepoints were taken (the log header says).
    pub mode: CounterMode,
    /// Branches to arm the host counter early (the PMU driver's margin for
    /// the counter in use; the soft vCPU's skid).
    pub margin: u64,
}

/// Where and how a replay parted from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Number of the log record that did not match (or that was expected
    /// and did not come).
    pub record: u64,
    /// What differed, for people.
    pub what: String,
    /// Where the vCPU was.
    pub at: Option<Timepoint>,
    /// The recording's registers there (known at digest records).
    pub expected_regs: Option<Regs>,
    /// The replay's registers there.
    pub actual_regs: Option<Regs>,
    /// The first page whose contents differ (at digest records).
    pub page: Option<PageDifference>,
}

/// How a replay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayEnd {
    /// Every record matched, up to and including `end`.
    Verified {
        /// The recording's end status, reproduced.
        end: EndStatus,
    },
    /// The log ends without an `end` record (a recording cut short); every
    /// record in it was replayed and matched.
    Truncated {
        /// Records in the log.
        records: u64,
    },
    /// Replay and log parted.
    Diverged(Box<Divergence>),
}

/// Counters a replay keeps (and shares with whoever shows progress).
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Records consumed.
    pub records: AtomicU64,
    /// Guest instructions retired so far (at the last completed exit).
    pub instructions: AtomicU64,
    /// The exit clock at the last completed exit (exit-synchronous logs).
    pub exits: AtomicU64,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records consumed.
    pub records: u64,
    /// State checks compared.
    pub checks: u64,
    /// Digests compared.
    pub digests: u64,
    /// Landings (asynchronous inputs and digests reached by landing).
    pub landings: u64,
    /// Summed work of the landings.
    pub land: LandStats,
    /// The last digest that matched: its record number and memory hash.
    pub last_digest: Option<(u64, [u8; 32])>,
}

/// The guest's writes to COM1, as the UART would send them.
#[derive(Debug, Default)]
struct UartTx {
    lcr: u8,
    mcr: u8,
}

const COM1: u16 = 0x3f8;

impl UartTx {
    /// The byte sent, if this port write transmits one.
    fn write(&mut self, port: u16, byte: u8) -> Option<u8> {
        match port.wrapping_sub(COM1) {
            3 => self.lcr = byte,
            4 => self.mcr = byte,
            // THR with DLAB clear, not in loopback.
            0 if self.lcr & 0x80 == 0 && self.mcr & 0x10 == 0 => return Some(byte),
            _ => {}
        }
        None
    }
}

/// The replay environment.
pub struct ReplayEnv<S> {
    src: S,
    queue: VecDeque<Numbered>,
    src_done: bool,
    mem: GuestMemoryMmap,
    actual: MemoryHasher,
    expected: MemoryHasher,
    opts: ReplayOptions,
    counter: Option<BranchCounter>,
    uart: UartTx,
    output: Box<dyn Write + Send>,
    divergence: Option<Divergence>,
    end: Option<(u64, End)>,
    stats: ReplayStats,
    progress: Arc<ReplayProgress>,
    dma_pages: digest::DmaPages,
    /// The next timepointed record found by [`ReplayEnv::target`].
    tp_cache: Option<(u64, Timepoint)>,
    /// What the recording's backend could not trap, and its name.
    untrapped: Vec<Untrapped>,
    recorded_on: String,
    /// What this replay's backend cannot trap, and its name.
    replay_untrapped: Vec<Untrapped>,
    replay_on: String,
}

fn describe(r: &Record) -> String {
    let tp = |t: &Timepoint| {
        format!(
            "(branches {}, rip {:#x}, rcx {:#x})",
            t.branches, t.rip, t.rcx
        )
    };
    match r {
        Record::PortIn(p) => format!(
            "a read of port {:#x} ({} bytes) = {:#x}",
            p.port, p.size, p.value
        ),
        Record::MmioRead(m) => format!("an MMIO read of {} bytes at {:#x}", m.bytes.len(), m.gpa),
        Record::Rdtsc(_) => "an RDTSC".into(),
        Record::Rdtscp(_) => "an RDTSCP".into(),
        Record::Rdrand(_) => "an RDRAND".into(),
        Record::Rdseed(_) => "an RDSEED".into(),
        Record::Interrupt(i) => format!("interrupt {:#x} at {}", i.vector, tp(&i.at)),
        Record::DmaWrite(d) => match &d.at {
            Some(t) => format!(
                "a DMA write of {} bytes at {:#x} at {}",
                d.bytes.len(),
                d.gpa,
                tp(t)
            ),
            None => format!("a DMA write of {} bytes at {:#x}", d.bytes.len(), d.gpa),
        },
        Record::SerialInput(s) => format!("{} bytes of serial input", s.bytes.len()),
        Record::Digest(d) => format!("a digest at {}", tp(&d.at)),
        Record::End(e) => format!("the end ({:?})", e.status),
        Record::PageHashes(_) => "page hashes".into(),
        Record::StateCheck(_) => "a state check (after the previous exit)".into(),
    }
}

fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

impl<S: RecordSource> ReplayEnv<S> {
    /// Replay the records of `src` on a machine whose memory is `mem`
    /// (`ram` bytes); the guest's serial output goes to `output`.
    pub fn new(
        src: S,
        mem: GuestMemoryMmap,
        ram: u64,
        opts: ReplayOptions,
        output: Box<dyn Write + Send>,
    ) -> Self {
        ReplayEnv {
            src,
            queue: VecDeque::new(),
            src_done: false,
            mem,
            actual: MemoryHasher::new(ram),
            expected: MemoryHasher::new(ram),
            opts,
            counter: None,
            uart: UartTx::default(),
            output,
            divergence: None,
            end: None,
            stats: ReplayStats::default(),
            progress: Arc::new(ReplayProgress::default()),
            dma_pages: digest::DmaPages::default(),
            tp_cache: None,
            untrapped: Vec::new(),
            recorded_on: String::new(),
            replay_untrapped: Vec::new(),
            replay_on: String::new(),
        }
    }

    /// The recording's backend (`backend`) could not trap the instructions
    /// `untrapped` (the log header says which): their values are not in
    /// the log. A guest executing one where the replay traps it diverges
    /// right there, with a message that says why; every other divergence
    /// of such a replay mentions the possibility (on a backend that cannot
    /// trap them either, the host's values reach the guest and only the
    /// next check can tell).
    pub fn with_untrapped(mut self, backend: &str, untrapped: Vec<Untrapped>) -> Self {
        self.untrapped = untrapped;
        self.recorded_on = backend.to_string();
        self
    }

    /// The replay runs on a backend (`backend`) that cannot trap
    /// `untrapped` either: a guest executing them gets the host's values
    /// here whatever the log says. Divergences mention it.
    pub fn with_replay_untrapped(mut self, backend: &str, untrapped: Vec<Untrapped>) -> Self {
        self.replay_untrapped = untrapped;
        self.replay_on = backend.to_string();
        self
    }

    /// A divergence for an instruction the recording could not trap.
    fn untrapped_read(&mut self, kind: Untrapped, what: &str) -> Option<EnvError> {
        if !self.untrapped.contains(&kind) {
            return None;
        }
        let i = self.next_number();
        let msg = format!(
            "the guest {what}, which the recording's backend ({}) could not trap: its value is not in the log, so this replay cannot reproduce it",
            self.recorded_on
        );
        Some(self.diverge(i, msg, None, None, None))
    }

    /// Progress counters, readable from other threads.
    pub fn progress(&self) -> Arc<ReplayProgress> {
        Arc::clone(&self.progress)
    }

    /// What the replay did so far.
    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    /// Whether there is a head record (fetching more if needed), skipping
    /// informational `serial-input` records.
    fn ensure_head(&mut self) -> Result<bool, EnvError> {
        loop {
            while matches!(self.queue.front(), Some((_, Record::SerialInput(_)))) {
                self.pop();
            }
            if !self.queue.is_empty() {
                return Ok(true);
            }
            if self.src_done {
                return Ok(false);
            }
            if !self.src.fill(&mut self.queue)? {
                self.src_done = true;
            }
        }
    }

    fn pop(&mut self) -> Option<Numbered> {
        let r = self.queue.pop_front();
        if r.is_some() {
            self.stats.records += 1;
            self.progress
                .records
                .store(self.stats.records, Ordering::Relaxed);
        }
        r
    }

    /// The number the next record has (the log's length once exhausted).
    fn next_number(&self) -> u64 {
        self.queue.front().map_or(self.stats.records, |(i, _)| *i)
    }

    /// The log has no more records and no `end` was seen: a cut-short log.
    fn exhausted(&self) -> EnvError {
        EnvError::Exhausted
    }

    fn diverge(
        &mut self,
        record: u64,
        what: String,
        vcpu: Option<&dyn Vcpu>,
        expected_regs: Option<Regs>,
        page: Option<PageDifference>,
    ) -> EnvError {
        let at = vcpu.and_then(|v| digest::point(v, self.opts.vcpu_index).ok());
        let actual_regs = vcpu.and_then(|v| v.regs().ok());
        let mut what = what;
        let names = |l: &[Untrapped]| l.iter().map(|u| u.name()).collect::<Vec<_>>().join(", ");
        let mut notes = Vec::new();
        if !self.untrapped.is_empty() && !what.contains("could not trap") {
            notes.push(format!(
                "the recording's backend ({}) could not trap {}",
                self.recorded_on,
                names(&self.untrapped)
            ));
        }
        if !self.replay_untrapped.is_empty() {
            notes.push(format!(
                "this replay's backend ({}) cannot trap {}",
                self.replay_on,
                names(&self.replay_untrapped)
            ));
        }
        if !notes.is_empty() {
            what += &format!(
                " (note: {}; if the guest executed one, a host value reached it unrecorded and a divergence is expected)",
                notes.join("; ")
            );
        }
        let d = Divergence {
            record,
            what: what.clone(),
            at,
            expected_regs,
            actual_regs,
            page,
        };
        self.divergence.get_or_insert(d);
        EnvError::Diverged(what)
    }

    fn now(&self, vcpu: &dyn Vcpu) -> Result<Timepoint, EnvError> {
        Ok(digest::point(vcpu, self.opts.vcpu_index)?)
    }

    /// Take the next synchronous input for an exit described by `what`.
    fn take_input(&mut self, what: &str, vcpu: Option<&dyn Vcpu>) -> Result<Numbered, EnvError> {
        if !self.ensure_head()? {
            return Err(self.exhausted());
        }
        let sync = matches!(
            self.queue.front(),
            Some((
                _,
                Record::PortIn(_)
                    | Record::MmioRead(_)
                    | Record::Rdtsc(_)
                    | Record::Rdtscp(_)
                    | Record::Rdrand(_)
                    | Record::Rdseed(_)
            ))
        );
        if sync {
            // ensure_head said there is one.
            return self.pop().ok_or(EnvError::Exhausted);
        }
        let (i, desc) = match self.queue.front() {
            Some((i, r)) => (*i, describe(r)),
            None => return Err(self.exhausted()),
        };
        Err(self.diverge(
            i,
            format!("the guest {what}, but the log's record {i} is {desc}"),
            vcpu,
            None,
            None,
        ))
    }

    fn mismatch(&mut self, i: u64, what: &str, got: &Record) -> EnvError {
        let desc = describe(got);
        self.diverge(
            i,
            format!("the guest {what}, but the log's record {i} is {desc}"),
            None,
            None,
            None,
        )
    }

    /// The next record that carries a timepoint (an asynchronous input, a
    /// digest, the end), at or after the head: where the vCPU must be
    /// stopped next. Records before it are synchronous inputs and checks,
    /// which happen on the way (at exits the landing hands back). `None`
    /// when the rest of the log has none (a cut-short log).
    fn target(&mut self) -> Result<Option<(u64, Timepoint)>, EnvError> {
        if !self.ensure_head()? {
            return Err(self.exhausted());
        }
        let front = self.next_number();
        if let Some((i, tp)) = self.tp_cache {
            if i >= front {
                return Ok(Some((i, tp)));
            }
        }
        let mut k = 0;
        loop {
            while let Some((i, r)) = self.queue.get(k) {
                let tp = match r {
                    Record::Interrupt(Interrupt { at, .. }) => Some(*at),
                    Record::DmaWrite(DmaWrite { at: Some(at), .. }) => Some(*at),
                    Record::Digest(Digest { at, .. }) => Some(*at),
                    Record::End(End { at: Some(at), .. }) => Some(*at),
                    _ => None,
                };
                if let Some(tp) = tp {
                    self.tp_cache = Some((*i, tp));
                    return Ok(Some((*i, tp)));
                }
                k += 1;
            }
            if self.src_done || !self.src.fill(&mut self.queue)? {
                self.src_done = true;
                return Ok(None);
            }
        }
    }

    fn counter(&mut self, vcpu: &mut dyn Vcpu) -> Result<&mut BranchCounter, EnvError> {
        if self.counter.is_none() {
            let total = vcpu.retired().map_or(0, |r| r.branches);
            let backend = vcpu.backend();
            let bank = vcpu.host_pmu().ok_or_else(|| {
                EnvError::Host(format!(
                    "the {backend} backend has no host performance counters to land events with"
                ))
            })?;
            let pmu = IntelPmu::detect(bank).map_err(|e| EnvError::Host(e.to_string()))?;
            let c = BranchCounter::start(bank, pmu, 0, Rings::ALL, total)
                .map_err(|e| EnvError::Host(e.to_string()))?;
            self.counter = Some(c);
        }
        self.counter
            .as_mut()
            .ok_or_else(|| EnvError::Host("no branch counter".into()))
    }

    /// Compare the digest at the head (the vCPU is at its timepoint).
    fn check_digest(&mut self, vcpu: &dyn Vcpu) -> Result<(), EnvError> {
        let Some((i, Record::Digest(d))) = self.pop() else {
            return Ok(());
        };
        let m = self.actual.digest(&self.mem);
        if self.ensure_head()? && matches!(self.queue.front(), Some((_, Record::PageHashes(_)))) {
            if let Some((_, Record::PageHashes(p))) = self.pop() {
                self.expected.apply(&p.pages);
            }
        }
        let regs = vcpu.regs()?;
        let now = self.now(vcpu)?;
        let retired = vcpu.retired().unwrap_or_default();
        let mut what = Vec::new();
        if now != d.at {
            what.push(format!(
                "timepoint: recorded (branches {}, rip {:#x}, rcx {:#x}), replayed (branches {}, rip {:#x}, rcx {:#x})",
                d.at.branches, d.at.rip, d.at.rcx, now.branches, now.rip, now.rcx
            ));
        }
        if retired != d.retired {
            what.push(format!(
                "retired: recorded {} instructions {} branches, replayed {} instructions {} branches",
                d.retired.instructions,
                d.retired.branches,
                retired.instructions,
                retired.branches
            ));
        }
        if regs != d.regs {
            what.push("registers differ".into());
        }
        let page = MemoryHasher::first_difference(self.expected.table(), self.actual.table());
        if m.hash != d.memory_hash {
            what.push(match &page {
                Some(p) => format!(
                    "memory differs, first at page {:#x} (guest-physical {:#x})",
                    p.page,
                    p.page * digest::PAGE as u64
                ),
                None => "memory hash differs".into(),
            });
        }
        if what.is_empty() {
            self.stats.digests += 1;
            self.stats.last_digest = Some((i, d.memory_hash));
            return Ok(());
        }
        let page = if m.hash != d.memory_hash { page } else { None };
        Err(self.diverge(
            i,
            format!("digest record {i} does not match: {}", what.join("; ")),
            Some(vcpu),
            Some(d.regs),
            page,
        ))
    }

    /// After `machine.run` returned `result`: compare the end of the log.
    pub fn finish(
        &mut self,
        vcpu: &dyn Vcpu,
        result: Result<RunOutcome, MachineError>,
    ) -> Result<ReplayEnd, MachineError> {
        let _ = self.output.flush();
        match result {
            Err(MachineError::Env(EnvError::Diverged(what))) => {
                let mut d = self.divergence.take().unwrap_or(Divergence {
                    record: self.next_number(),
                    what,
                    at: None,
                    expected_regs: None,
                    actual_regs: None,
                    page: None,
                });
                // A synchronous exit that did not match is noticed where the
                // vCPU is not at hand; the machine stopped right there.
                if d.at.is_none() {
                    d.at = digest::point(vcpu, self.opts.vcpu_index).ok();
                }
                if d.actual_regs.is_none() {
                    d.actual_regs = vcpu.regs().ok();
                }
                return Ok(ReplayEnd::Diverged(Box::new(d)));
            }
            Err(MachineError::Env(EnvError::Exhausted)) => {
                return Ok(ReplayEnd::Truncated {
                    records: self.stats.records,
                });
            }
            Err(MachineError::Env(EnvError::Stopped)) if self.end.is_some() => {}
            Err(e) => return Err(e),
            Ok(outcome) => {
                let status = end_status(&Ok(outcome.clone()));
                let now = self.now(vcpu)?;
                loop {
                    if !self.ensure_head()? {
                        return Ok(ReplayEnd::Truncated {
                            records: self.stats.records,
                        });
                    }
                    match self.queue.front() {
                        Some((_, Record::Digest(d))) if d.at == now => {
                            match self.check_digest(vcpu) {
                                Ok(()) => {}
                                Err(EnvError::Diverged(_)) => return Ok(self.diverged()),
                                Err(e) => return Err(e.into()),
                            }
                        }
                        Some((_, Record::End(_))) => {
                            if let Some((i, Record::End(e))) = self.pop() {
                                if e.status != status || e.at.is_some_and(|a| a != now) {
                                    let what = format!(
                                        "the replay ended with {status:?} at (branches {}, rip {:#x}), the recording with {:?} at {:?}",
                                        now.branches, now.rip, e.status, e.at
                                    );
                                    let _ = self.diverge(i, what, Some(vcpu), None, None);
                                    return Ok(self.diverged());
                                }
                                self.end = Some((i, e));
                            }
                            break;
                        }
                        Some((i, r)) => {
                            let (i, desc) = (*i, describe(r));
                            let what = format!(
                                "the guest stopped ({}), but the log goes on with record {i}: {desc}",
                                outcome.stop
                            );
                            let _ = self.diverge(i, what, Some(vcpu), None, None);
                            return Ok(self.diverged());
                        }
                        None => {}
                    }
                }
            }
        }
        // Nothing may follow the end.
        if self.ensure_head()? {
            let i = self.next_number();
            let _ = self.diverge(
                i,
                format!("record {i} follows the end of the recording"),
                None,
                None,
                None,
            );
            return Ok(self.diverged());
        }
        match self.end.take() {
            Some((_, e)) => Ok(ReplayEnd::Verified { end: e.status }),
            None => Ok(ReplayEnd::Truncated {
                records: self.stats.records,
            }),
        }
    }

    fn diverged(&mut self) -> ReplayEnd {
        ReplayEnd::Diverged(Box::new(self.divergence.take().unwrap_or(Divergence {
            record: self.next_number(),
            what: "divergence".into(),
            at: None,
            expected_regs: None,
            actual_regs: None,
            page: None,
        })))
    }

    fn abandon_landing(&mut self, vcpu: &mut dyn Vcpu) -> Result<(), EnvError> {
        if let Some(c) = &mut self.counter {
            if c.armed_at().is_some() || vcpu.controls().monitor_trap_flag {
                pmu_driver::abandon(vcpu, c).map_err(|e| EnvError::Host(e.to_string()))?;
            }
        }
        Ok(())
    }
}

impl<S: RecordSource> Environment for ReplayEnv<S> {
    fn port_in(&mut self, port: u16, size: u8) -> Result<u32, EnvError> {
        let what = format!("reads port {port:#x} ({size} bytes)");
        let (i, r) = self.take_input(&what, None)?;
        match r {
            Record::PortIn(p) if p.port == port && p.size == size => Ok(p.value & size_mask(size)),
            other => Err(self.mismatch(i, &what, &other)),
        }
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), EnvError> {
        for k in 0..u16::from(size.min(4)) {
            if let Some(b) = self
                .uart
                .write(port.wrapping_add(k), (value >> (8 * k)) as u8)
            {
                self.output
                    .write_all(&[b])
                    .map_err(|e| EnvError::Host(format!("serial output: {e}")))?;
            }
        }
        Ok(())
    }

    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<[u8; 16], EnvError> {
        let what = format!("reads {size} bytes of MMIO at {gpa:#x}");
        let (i, r) = self.take_input(&what, None)?;
        match r {
            Record::MmioRead(m) if m.gpa == gpa && m.bytes.len() == usize::from(size) => {
                let mut out = [0u8; 16];
                out[..m.bytes.len()].copy_from_slice(&m.bytes);
                Ok(out)
            }
            other => Err(self.mismatch(i, &what, &other)),
        }
    }

    fn mmio_write(&mut self, _gpa: u64, _data: &[u8]) -> Result<(), EnvError> {
        Ok(())
    }

    fn tsc(&mut self) -> Result<u64, EnvError> {
        self.tsc_for(TscRead::Rdtsc)
    }

    fn tsc_for(&mut self, read: TscRead) -> Result<u64, EnvError> {
        let what = match read {
            TscRead::Rdtsc => "executes RDTSC",
            TscRead::Rdtscp => "executes RDTSCP",
            TscRead::Rdmsr => "reads IA32_TSC",
        };
        if let Some(e) = self.untrapped_read(Untrapped::Rdtsc, what) {
            return Err(e);
        }
        let (i, r) = self.take_input(what, None)?;
        match (read, r) {
            (TscRead::Rdtsc | TscRead::Rdmsr, Record::Rdtsc(t)) => Ok(t.value),
            (TscRead::Rdtscp, Record::Rdtscp(t)) if t.aux == 0 => Ok(t.value),
            (_, other) => Err(self.mismatch(i, what, &other)),
        }
    }

    fn random(&mut self, kind: RandomKind, size: u8) -> Result<Option<u64>, EnvError> {
        let what = match kind {
            RandomKind::Rdrand => "executes RDRAND",
            RandomKind::Rdseed => "executes RDSEED",
        };
        let untrapped = match kind {
            RandomKind::Rdrand => Untrapped::Rdrand,
            RandomKind::Rdseed => Untrapped::Rdseed,
        };
        if let Some(e) = self.untrapped_read(untrapped, what) {
            return Err(e);
        }
        let (i, r) = self.take_input(what, None)?;
        let (value, ok) = match (kind, r) {
            (RandomKind::Rdrand, Record::Rdrand(x)) => (x.value, x.ok),
            (RandomKind::Rdseed, Record::Rdseed(x)) => (x.value, x.ok),
            (_, other) => return Err(self.mismatch(i, what, &other)),
        };
        let mask = match size {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        };
        Ok(ok.then_some(value & mask))
    }

    fn next_async(&mut self, at: &AsyncPoint<'_>) -> Result<Option<AsyncInput>, EnvError> {
        if !self.ensure_head()? {
            return Err(self.exhausted());
        }
        let now = at
            .point()
            .ok_or_else(|| EnvError::Host("cannot read the vCPU's registers".into()))?;
        loop {
            if !self.ensure_head()? {
                return Err(self.exhausted());
            }
            let (i, tp, is_digest) = match self.queue.front() {
                Some((i, Record::Interrupt(x))) => (*i, Some(x.at), false),
                Some((i, Record::DmaWrite(x))) => (*i, x.at, false),
                Some((i, Record::Digest(x))) => (*i, Some(x.at), true),
                Some((
                    i,
                    Record::End(End {
                        status,
                        at: Some(a),
                    }),
                )) => {
                    if *status == EndStatus::Stopped && *a == now {
                        if let Some((i, Record::End(e))) = self.pop() {
                            self.end = Some((i, e));
                        }
                        return Err(EnvError::Stopped);
                    }
                    if now.cmp_same_vcpu(a) == Some(std::cmp::Ordering::Greater) {
                        let what = format!(
                            "the replay passed the recording's end point (branches {}, rip {:#x}) without stopping",
                            a.branches, a.rip
                        );
                        return Err(self.diverge(*i, what, Some(at.vcpu()), None, None));
                    }
                    return Ok(None);
                }
                _ => return Ok(None),
            };
            if let Some(tp) = tp {
                match now.cmp_same_vcpu(&tp) {
                    Some(std::cmp::Ordering::Less) => return Ok(None),
                    Some(std::cmp::Ordering::Equal) => {}
                    _ => {
                        let what = format!(
                            "the replay passed record {i}'s point (branches {}, rip {:#x}, rcx {:#x}) and is at (branches {}, rip {:#x}, rcx {:#x})",
                            tp.branches, tp.rip, tp.rcx, now.branches, now.rip, now.rcx
                        );
                        return Err(self.diverge(i, what, Some(at.vcpu()), None, None));
                    }
                }
            }
            if is_digest {
                self.check_digest(at.vcpu())?;
                continue;
            }
            return match self.pop() {
                Some((i, Record::Interrupt(x))) => {
                    if !at.interruptible {
                        let what = format!(
                            "interrupt {:#x} of record {i} is due, but the guest cannot take it here (interrupts off or in a shadow)",
                            x.vector
                        );
                        return Err(self.diverge(i, what, Some(at.vcpu()), None, None));
                    }
                    Ok(Some(AsyncInput::Interrupt(x.vector)))
                }
                Some((_, Record::DmaWrite(x))) => {
                    self.dma_pages.note(x.gpa, x.bytes.len());
                    Ok(Some(AsyncInput::DmaWrite {
                        gpa: x.gpa,
                        data: x.bytes,
                    }))
                }
                _ => Ok(None),
            };
        }
    }

    fn interrupt_waiting(&mut self) -> Result<bool, EnvError> {
        Ok(false)
    }

    fn idle(&mut self, _limit: Option<Instant>) -> Result<Idle, EnvError> {
        if !self.ensure_head()? {
            return Err(self.exhausted());
        }
        match self.queue.front() {
            Some((_, Record::End(e))) if e.status == EndStatus::GuestHalted => Ok(Idle::Never),
            Some((i, r)) => {
                let (i, desc) = (*i, describe(r));
                Err(self.diverge(
                    i,
                    format!("the guest halted waiting for an interrupt, but the log's record {i} is {desc}"),
                    None,
                    None,
                    None,
                ))
            }
            None => Err(self.exhausted()),
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        None
    }

    fn run_vcpu(&mut self, vcpu: &mut dyn Vcpu) -> Result<Option<VmExit>, EnvError> {
        let target = self.target()?;
        let Some((i, tp)) = target.filter(|_| self.opts.mode == CounterMode::Exact) else {
            self.abandon_landing(vcpu)?;
            return Ok(Some(vcpu.run()?));
        };
        let opts = LandOptions::with_margin(self.opts.margin);
        let head = self.next_number();
        let counter = self.counter(vcpu)?;
        match land(vcpu, counter, &tp, &opts) {
            Ok(LandStep::Landed(s)) => {
                add(&mut self.stats.land, s);
                if i != head {
                    // The point of a later record, and the head's exit never came.
                    let desc = self
                        .queue
                        .front()
                        .map_or_else(|| "missing".into(), |(_, r)| describe(r));
                    let what = format!(
                        "the replay reached record {i}'s point (branches {}, rip {:#x}, rcx {:#x}) before record {head} happened: {desc}",
                        tp.branches, tp.rip, tp.rcx
                    );
                    return Err(self.diverge(head, what, Some(&*vcpu), None, None));
                }
                self.stats.landings += 1;
                Ok(None)
            }
            Ok(LandStep::Exit(exit, s)) => {
                add(&mut self.stats.land, s);
                Ok(Some(exit))
            }
            Err(LandError::Overshoot {
                target, reached, ..
            }) => {
                let what = format!(
                    "landing on record {i} overshot: target (branches {}, rip {:#x}, rcx {:#x}), reached (branches {}, rip {:#x}, rcx {:#x})",
                    target.branches,
                    target.rip,
                    target.rcx,
                    reached.branches,
                    reached.rip,
                    reached.rcx
                );
                Err(self.diverge(i, what, Some(&*vcpu), None, None))
            }
            Err(LandError::StepLimit { now, .. }) => {
                let what = format!(
                    "landing on record {i} gave up after {} single steps at (branches {}, rip {:#x})",
                    opts.max_steps, now.branches, now.rip
                );
                Err(self.diverge(i, what, Some(&*vcpu), None, None))
            }
            Err(LandError::Vcpu(e)) => Err(EnvError::Vcpu(e)),
            Err(e) => Err(EnvError::Host(e.to_string())),
        }
    }

    fn exit_completed(&mut self, vcpu: &mut dyn Vcpu, retired: bool) -> Result<(), EnvError> {
        if let Some(r) = vcpu.retired() {
            self.progress
                .instructions
                .store(r.instructions, Ordering::Relaxed);
        }
        if let Some(n) = vcpu.deterministic_exits() {
            self.progress.exits.store(n, Ordering::Relaxed);
        }
        if !retired {
            return Ok(());
        }
        let now = self.now(vcpu)?;
        loop {
            if !self.ensure_head()? {
                return Ok(());
            }
            match self.queue.front() {
                Some((_, Record::StateCheck(c))) => {
                    let expected = c.hash;
                    let Some((i, _)) = self.pop() else {
                        return Ok(());
                    };
                    let pages = self.dma_pages.take();
                    let actual =
                        digest::state_hash(&vcpu.regs()?, vcpu.retired(), &self.mem, &pages);
                    if actual != expected {
                        let what = format!(
                            "state check record {i}: the registers, retired counts or DMA-written pages after this exit differ from the recording's (hash {expected:#018x} recorded, {actual:#018x} replayed)"
                        );
                        return Err(self.diverge(i, what, Some(&*vcpu), None, None));
                    }
                    self.stats.checks += 1;
                }
                Some((_, Record::Digest(d))) if d.at == now => {
                    self.check_digest(vcpu)?;
                }
                // An exit-synchronous recording stopped by the host ends at
                // its last tick or input, which may be an exit where no
                // input is offered (`RecordingEnv::finish`).
                Some((_, Record::End(e)))
                    if self.opts.mode == CounterMode::ExitSynchronous
                        && e.status == EndStatus::Stopped
                        && e.at == Some(now) =>
                {
                    if let Some((i, Record::End(e))) = self.pop() {
                        self.end = Some((i, e));
                    }
                    return Err(EnvError::Stopped);
                }
                _ => return Ok(()),
            }
        }
    }
}

fn add(sum: &mut LandStats, s: LandStats) {
    sum.runs += s.runs;
    sum.pmis += s.pmis;
    sum.steps += s.steps;
}

/// The fuzz entry for replay: `data` read as a log's records (type byte,
/// length byte, payload; records that do not decode are skipped) replayed
/// against the guest `elf` on the soft vCPU, with limits on exits and time.
/// Whatever the records say, the replay must end in a verdict or an error,
/// never a panic or a hang. Returns how it ended, for seeded tests.
pub fn fuzz_replay(elf: &[u8], data: &[u8]) -> Option<ReplayEnd> {
    use crate::machine::{Machine, MachineConfig, RunLimits};
    let records = fuzz_records(data);
    let machine = Machine::new(
        elf,
        &MachineConfig {
            ram: 4 << 20,
            ..MachineConfig::default()
        },
    )
    .ok()?;
    let mut vcpu = vcpu_soft::SoftVcpu::new(machine.memory().clone());
    let controls = vcpu.default_controls();
    machine.reset_vcpu(&mut vcpu, controls).ok()?;
    let mut env = ReplayEnv::new(
        VecSource::new(records),
        machine.memory().clone(),
        machine.ram_size(),
        ReplayOptions {
            vcpu_index: 0,
            mode: CounterMode::Exact,
            margin: 0,
        },
        Box::new(std::io::sink()),
    );
    let limits = RunLimits {
        wall: Some(std::time::Duration::from_millis(500)),
        exits: Some(20_000),
        exit_synchronous: false,
    };
    let result = machine.run(&mut vcpu, &mut env, &limits);
    env.finish(&vcpu, result).ok()
}

/// Read fuzz bytes as records (see [`fuzz_replay`]).
pub fn fuzz_records(data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [ty, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let id = 1 + u16::from(*ty) % motion_records::RecordType::MAX_ID;
        if let Ok(r) = Record::decode(id, &tail[..n]) {
            out.push(r);
        }
        rest = &tail[n..];
    }
    out
}

/// Encode records in [`fuzz_records`]' form (seeds from real recordings;
/// records longer than 255 bytes are left out).
pub fn fuzz_encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let Ok(p) = r.to_payload() else { continue };
        let Ok(len) = u8::try_from(p.len()) else {
            continue;
        };
        out.push((r.record_type().id() - 1) as u8);
        out.push(len);
        out.extend_from_slice(&p);
    }
    out
}
