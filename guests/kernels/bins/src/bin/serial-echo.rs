//! `serial-echo`: an input-driven service. Receives bytes by the UART's
//! received-data interrupt (IRQ 4), collects lines, and answers each line
//! with its ROT13 transform (letters rotated, everything else kept), prefixed
//! by "> ". Ends on the line `quit` or an EOT byte (0x04), printing how many
//! lines and bytes it handled, and exits 0. A line longer than [`MAX_LINE`]
//! is answered in pieces.

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
    dropped: u64,
}

static RX: Global<Ring> = Global::new(Ring {
    buf: [0; RING],
    head: 0,
    tail: 0,
    dropped: 0,
});

fn on_rx(frame: *mut Frame) -> *mut Frame {
    // SAFETY: the handler runs with IF = 0; the main loop reads RX only with IF = 0.
    let r = unsafe { &mut *RX.get() };
    while let Some(b) = serial::try_read_byte() {
        if r.head.wrapping_sub(r.tail) < RING {
            r.buf[r.head % RING] = b;
            r.head = r.head.wrapping_add(1);
        } else {
            r.dropped += 1;
        }
    }
    pic::eoi(serial::IRQ);
    frame
}

/// The next received byte, sleeping until one arrives.
fn next_byte() -> u8 {
    loop {
        cpu::cli();
        // SAFETY: interrupts are off, so the handler is not running.
        let r = unsafe { &mut *RX.get() };
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
    // take them now (through the handler's path, with IF = 0).
    cpu::cli();
    on_rx(core::ptr::null_mut());
    cpu::sti();

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
    // SAFETY: interrupts are off.
    let dropped = unsafe { (*RX.get()).dropped };
    println!(
        "serial-echo: {reason} after {} lines, {} bytes, {} dropped",
        Dec(lines),
        Dec(bytes),
        Dec(dropped)
    );
    rt::EXIT_SUCCESS
}
