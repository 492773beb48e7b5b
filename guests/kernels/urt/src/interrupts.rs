//! Interrupt handlers without interrupts: registration as in `rt`, delivery
//! by polling the 8259 pair from ring 3.
//!
//! The poll command (OCW3 with P = 1, then a read of the same port) makes an
//! 8259 answer `0x80 | level` for its highest-priority unmasked request and
//! acknowledge it (set the in-service bit) exactly as an INTA cycle would,
//! or 0 when nothing is requested. A master answer of level 2 is the cascade:
//! the slave is polled next. The handler registered for `IRQ_BASE + irq`
//! then runs as a plain call and sends its EOI itself, as under `rt`.
//!
//! CPU exceptions come back to ring 3 from the boot stub's exception path
//! and are reported by `urt_exception`.

use rt_common::interrupts::EXCEPTION_NAMES;

use crate::io::{inb, outb};
use crate::pic;
use crate::sync::Global;

pub use rt_common::interrupts::{Frame, Handler};

static HANDLERS: Global<[Option<Handler>; 256]> = Global::new([None; 256]);

/// Register `handler` for `vector`.
pub fn set_handler(vector: u8, handler: Handler) {
    // SAFETY: one CPU and no asynchronous entry: handlers are only called
    // from `dispatch`, never while this runs.
    unsafe { (*HANDLERS.get())[vector as usize] = Some(handler) };
}

/// Poll the PICs: the IRQ (0..16) they acknowledged, if one was requested.
fn poll() -> Option<u8> {
    // SAFETY: PIC commands; no memory effects.
    unsafe {
        outb(0x20, 0x0c);
        let m = inb(0x20);
        if m & 0x80 == 0 {
            return None;
        }
        let irq = m & 7;
        if irq != 2 {
            return Some(irq);
        }
        outb(0xa0, 0x0c);
        let s = inb(0xa0);
        if s & 0x80 != 0 {
            return Some(8 + (s & 7));
        }
        // The slave withdrew its request: end the cascade's service.
        outb(0x20, 0x20);
        None
    }
}

/// Run the handler for an acknowledged `irq` with virtual interrupts off.
fn dispatch(irq: u8) {
    let vector = pic::IRQ_BASE + irq;
    // SAFETY: see `set_handler`.
    let handler = unsafe { (*HANDLERS.get())[vector as usize] };
    let was = crate::cpu::interrupts_enabled();
    crate::cpu::set_interrupts_enabled(false);
    match handler {
        Some(h) => {
            let mut frame = Frame {
                vector: vector as u64,
                ..Frame::default()
            };
            h(&mut frame);
        }
        // Acknowledged by the poll, so it is in service: end it.
        None => pic::eoi(irq),
    }
    crate::cpu::set_interrupts_enabled(was);
}

/// Select the interrupt request register for plain reads of port 0x20/0xa0
/// (OCW3 RR = 1, RIS = 0), which [`sti_dispatch`] relies on. `pic::init`
/// leaves it so too; `pic::in_service` switches to the ISR.
pub(crate) fn select_irr() {
    // SAFETY: PIC commands; no memory effects.
    unsafe {
        outb(0x20, 0x0a);
        outb(0xa0, 0x0a);
    }
}

/// What STI does: take the interrupts requested now. The common case, none,
/// costs one exit (a read of the master's IRR: slave requests show as its
/// cascade line 2) instead of a poll's two. The IRR also holds masked lines,
/// which then cost an empty poll. Should another register be selected
/// (`pic::in_service`), an interrupt is taken at the next wait at the latest.
pub(crate) fn sti_dispatch() {
    // SAFETY: reads the selected PIC register; no memory effects.
    if unsafe { inb(0x20) } != 0 {
        dispatch_pending();
    }
}

/// Handle every interrupt that is requested now. Returns how many.
pub(crate) fn dispatch_pending() -> u32 {
    let mut n = 0;
    while let Some(irq) = poll() {
        dispatch(irq);
        n += 1;
    }
    n
}

/// Longest pause between two polls of an idle wait, in PAUSE iterations.
///
/// Each poll is two port exits, and a recording logs every exit's result, so
/// a wait that polls flat out writes the log as fast as the host can exit
/// (thousands of records per millisecond of waiting on the soft vCPU). The
/// pause doubles after each empty poll up to this bound: a few microseconds
/// of latency natively, a few hundred microseconds of interpreted
/// instructions on the soft vCPU. The device models never lose data to a
/// slow poll (serial input waits in the host until the UART has room).
const MAX_BACKOFF: u32 = 1 << 12;

/// Wait between polls: `*spins` PAUSEs, then double it up to [`MAX_BACKOFF`].
fn backoff(spins: &mut u32) {
    for _ in 0..*spins {
        core::hint::spin_loop();
    }
    *spins = (*spins * 2).min(MAX_BACKOFF);
}

/// Wait until at least one interrupt has been handled (and any others then pending).
pub(crate) fn wait_and_dispatch() {
    let mut spins = 1;
    while dispatch_pending() == 0 {
        backoff(&mut spins);
    }
}

/// Wait until an unmasked interrupt is requested, without acknowledging it.
pub(crate) fn wait_requested() {
    let mut spins = 1;
    loop {
        // SAFETY: OCW3 read-IRR, then the IRR and IMR of both chips.
        let pending = unsafe {
            outb(0x20, 0x0a);
            outb(0xa0, 0x0a);
            let master = inb(0x20) & !inb(0x21);
            let slave = inb(0xa0) & !inb(0xa1);
            master | slave
        };
        if pending != 0 {
            return;
        }
        backoff(&mut spins);
    }
}

/// Where the boot stub's exception path lands, in ring 3 on its own stack:
/// report the exception and exit with [`crate::EXIT_EXCEPTION`].
#[unsafe(no_mangle)]
extern "C" fn urt_exception(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    crate::println!(
        "EXCEPTION {} (vector {}) at rip {:#x} error {:#x} cr2 {:#x}",
        EXCEPTION_NAMES[(vector & 31) as usize],
        crate::Dec(vector),
        rip,
        error,
        cr2
    );
    crate::exit(crate::EXIT_EXCEPTION)
}
