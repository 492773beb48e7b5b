//! `serial-echo`: an input-driven service. Receives bytes by the UART's
//! received-data interrupt (IRQ 4), collects lines, and answers each line
//! with its ROT13 transform (letters rotated, everything else kept), prefixed
//! by "> ". Ends on the line `quit` or an EOT byte (0x04), printing how many
//! lines and bytes it handled, and exits 0. A line longer than [`MAX_LINE`]
//! is answered in pieces.
//!
//! Flow control: the handler moves bytes from the UART into a ring only
//! while the ring has room, and the main loop takes what the UART still
//! holds whenever the ring runs dry. So a guest that answers more slowly than
//! bytes arrive (the ring-3 build on a KVM whose exits are slow) leaves the
//! backlog in the UART, whose sender then waits, instead of losing bytes.

#![no_std]
#![no_main]

use rt::interrupts::{self, Frame};
use rt::sync::Global;
use rt::{Dec, cpu, pic, println, serial};

const MAX_LINE: usize = 256;
const RING: usize = 1024;
const EOT: u8 = 0x04;

struct Ring {
    buf: [u8; RING],
    head: usize,
    tail: usize,
}

static RX: Global<Ring> = Global::new(Ring {
    buf: [0; RING],
    head: 0,
    tail: 0,
});

/// Move received bytes from the UART into the ring while it has room.
/// Called with IF = 0 (by the CPU for the interrupt, or by the main loop).
fn take_received() {
    // SAFETY: IF = 0, so nothing else touches RX meanwhile.
    let r = unsafe { &mut *RX.get() };
    while r.head.wrapping_sub(r.tail) < RING {
        let Some(b) = serial::try_read_byte() else {
            break;
        };
        r.buf[r.head % RING] = b;
        r.head = r.head.wrapping_add(1);
    }
}

fn on_rx(frame: *mut Frame) -> *mut Frame {
    take_received();
    pic::eoi(serial::IRQ);
    frame
}

/// The next received byte, sleeping until one arrives.
fn next_byte() -> u8 {
    loop {
        cpu::cli();
        // SAFETY: interrupts are off, so the handler is not running.
        let r = unsafe { &mut *RX.get() };
        if r.head == r.tail {
            // Bytes left in the UART while the ring was full raise no new
            // interrupt: take them before sleeping.
            take_received();
        }
        if r.head != r.tail {
            let b = r.buf[r.tail % RING];
            r.tail = r.tail.wrapping_add(1);
            cpu::sti();
            return b;
        }
        cpu::sti_hlt();
    }
}

fn rot13(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
        _ => b,
    }
}

fn answer(line: &[u8]) {
    serial::write_str("> ");
    for &b in line {
        serial::write_byte(rot13(b));
    }
    serial::write_byte(b'\n');
}

#[unsafe(no_mangle)]
fn guest_main(_info: &rt::BootInfo) -> u8 {
    println!("serial-echo: send lines; each comes back ROT13'd; end with 'quit' or EOT");
    interrupts::set_handler(pic::IRQ_BASE + serial::IRQ, on_rx);
    serial::set_rx_interrupt(true);
    pic::unmask(serial::IRQ);
    // Bytes that arrived before the interrupt was enabled raise no edge:
    // the main loop takes them (it looks in the UART whenever the ring is empty).

    let mut line = [0u8; MAX_LINE];
    let mut len = 0;
    let (mut lines, mut bytes) = (0u64, 0u64);
    let reason = loop {
        let b = next_byte();
        if b == EOT {
            if len > 0 {
                answer(&line[..len]);
                lines += 1;
            }
            break "EOT";
        }
        bytes += 1;
        match b {
            b'\r' => {}
            b'\n' => {
                if &line[..len] == b"quit" {
                    break "quit";
                }
                answer(&line[..len]);
                lines += 1;
                len = 0;
            }
            _ => {
                line[len] = b;
                len += 1;
                if len == MAX_LINE {
                    answer(&line);
                    lines += 1;
                    len = 0;
                }
            }
        }
    };
    cpu::cli();
    serial::set_rx_interrupt(false);
    println!(
        "serial-echo: {reason} after {} lines, {} bytes",
        Dec(lines),
        Dec(bytes)
    );
    rt::EXIT_SUCCESS
}
