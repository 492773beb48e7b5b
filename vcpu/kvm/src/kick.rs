//! Forcing a thread out of `KVM_RUN`: a real-time signal whose handler sets
//! `kvm_run.immediate_exit` of the vCPU that thread is running.
//!
//! A signal alone races: if it lands after the runner checked its "kicked"
//! flag but before it entered `KVM_RUN`, the kernel never sees it and the
//! guest runs on. Setting `immediate_exit` from the handler closes that gap:
//! `KVM_RUN` entered afterwards returns `EINTR` at once (KVM_CAP_IMMEDIATE_EXIT).
//! The handler finds the `kvm_run` through a thread-local pointer that the
//! runner sets for the duration of one `run`.

use std::cell::Cell;
use std::sync::Once;

use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU this thread is running, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads (SIGRTMIN + 3). Other parts of the
/// process must not use it.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work: a thread-local read and a volatile byte store.
    let p = IMMEDIATE_EXIT.with(Cell::get);
    if !p.is_null() {
        // SAFETY: the pointer is set by `RunGuard` to the `immediate_exit` byte
        // of a kvm_run mapping that outlives the guard, and cleared before the
        // guard ends; this handler runs on the same thread, so the mapping is
        // live whenever the pointer is non-null.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

/// Install the kick handler once per process.
pub fn install_handler() -> Result<(), std::io::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// While alive, a kick signal delivered to this thread sets `immediate_exit`
/// of the given kvm_run.
pub struct RunGuard {
    _not_send: std::marker::PhantomData<*mut u8>,
}

impl RunGuard {
    /// Point this thread's kick handler at `immediate_exit`.
    ///
    /// # Safety
    /// `immediate_exit` must stay valid (mapped) until the guard is dropped,
    /// and the guard must be dropped on this thread (it is `!Send`).
    pub unsafe fn new(immediate_exit: *mut u8) -> Self {
        IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
        RunGuard {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// The kernel thread id of the calling thread.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Send the kick signal to thread `tid` of this process. A thread that has
/// gone is not an error (ESRCH); the signal is harmless to a thread that is
/// not running a vCPU.
pub fn kick_thread(tid: libc::pid_t) {
    // SAFETY: tgkill with our own pid only reaches threads of this process,
    // all of which have the kick handler installed (it is process-wide).
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            tid,
            kick_signal() as libc::c_long,
        );
    }
}

/// A per-thread POSIX timer that sends the kick signal to one thread: the
/// watchdog that stops a guest spinning in ring 3 with no exit.
pub struct Watchdog {
    timer: libc::timer_t,
    tid: libc::pid_t,
}

impl Watchdog {
    /// A disarmed timer that will signal the calling thread.
    pub fn for_current_thread() -> Result<Self, std::io::Error> {
        install_handler()?;
        let tid = gettid();
        // SAFETY: sigevent is plain data; zero is a valid start.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = kick_signal();
        sev.sigev_notify_thread_id = tid;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to initialised locals.
        let rc = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Watchdog { timer, tid })
    }

    /// The thread this watchdog signals.
    pub fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// Fire after `after`, then every `after` again until disarmed (a repeat
    /// covers a signal that landed between two runs).
    pub fn arm(&self, after: std::time::Duration) -> Result<(), std::io::Error> {
        let ts = libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        };
        self.settime(libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        })
    }

    /// Stop the timer.
    pub fn disarm(&self) -> Result<(), std::io::Error> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        self.settime(libc::itimerspec {
            it_interval: zero,
            it_value: zero,
        })
    }

    fn settime(&self, spec: libc::itimerspec) -> Result<(), std::io::Error> {
        // SAFETY: the timer was created by timer_create and not deleted.
        let rc = unsafe { libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // SAFETY: created by timer_create, deleted exactly once here.
        unsafe { libc::timer_delete(self.timer) };
    }
}

// SAFETY: timer_t is an opaque kernel handle usable from any thread.
unsafe impl Send for Watchdog {}
