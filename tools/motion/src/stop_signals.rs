//! SIGINT and SIGTERM during `motion record`: the first asks for a clean
//! stop (the same path as `--timeout`: the monitor stops the guest at its
//! next exit and the log is sealed with an `end` record, status `stopped`);
//! the second aborts at once.
//!
//! The domain processes ignore both (the runtime sets that up when it
//! spawns them), so a terminal's Ctrl-C reaches only this process's
//! handler, and the domains stop when this process tells them to, or — if
//! it dies — by their parent-death signal.
//!
//! Signals are taken by `signal-hook`'s iterator on a thread of their own,
//! not in a handler, so the thread may print and exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread::JoinHandle;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// Exit status of a recording aborted by a second signal: the log has no
/// `end` record, like a crashed recording (`motion replay` says 3 for it too).
pub const ABORTED: i32 = 3;

/// The exit status for a recording that a signal stopped cleanly: 128 + the
/// signal's number, as shells report a command that a signal ended (130 for
/// SIGINT, 143 for SIGTERM), so a script sees the interruption.
pub fn stopped_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// The signal's name, for messages and JSON.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Watches SIGINT and SIGTERM while it lives. Dropping it ends the watching
/// thread and unregisters the handlers; `signal-hook` leaves its own handler
/// in place with nothing to run, so from then on (the command is printing
/// its summary and exiting) these signals do nothing.
pub struct StopSignals {
    first: Arc<AtomicI32>,
    sealed: Arc<AtomicBool>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl StopSignals {
    /// Start watching. `log` is named in the abort message.
    pub fn watch(log: PathBuf) -> std::io::Result<StopSignals> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let first = Arc::new(AtomicI32::new(0));
        let seen = Arc::clone(&first);
        let sealed = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&sealed);
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if seen
                        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        eprintln!(
                            "\nmotion record: {}: stopping the recording at the guest's next exit \
                             and sealing the log (again to abort)",
                            name(sig)
                        );
                    } else if done.load(Ordering::SeqCst) {
                        // Too late to lose anything: the log is complete.
                        eprintln!(
                            "\nmotion record: second {}: the log {} is already sealed; exiting",
                            name(sig),
                            log.display()
                        );
                        let first = seen.load(Ordering::SeqCst);
                        std::process::exit(i32::from(stopped_status(first)));
                    } else {
                        eprintln!(
                            "\nmotion record: second {}: aborting; {} is not sealed, but every \
                             record the log store acknowledged is in it and replays \
                             (`motion replay` checks that prefix and exits 3)",
                            name(sig),
                            log.display()
                        );
                        // The domains die with this process (parent-death
                        // signal); the log store made every acknowledged
                        // record durable before acknowledging it.
                        std::process::exit(ABORTED);
                    }
                }
            })?;
        Ok(StopSignals {
            first,
            sealed,
            handle,
            thread: Some(thread),
        })
    }

    /// The log is sealed: a second signal from now on exits as the first
    /// stop would have (128 + its signal), without calling the log aborted.
    pub fn log_sealed(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    /// The first signal received, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
