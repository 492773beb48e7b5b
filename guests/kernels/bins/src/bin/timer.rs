//! `timer`: preemptive round-robin scheduling of ring-3 tasks by PIT ticks.
//!
//! The PIT (channel 0, IRQ 0 through the 8259) interrupts at [`HZ`]; every
//! tick the kernel records which task was running and how far it had got,
//! then switches to the next task. After [`TICKS`] ticks the tasks are told to
//! stop, exit through the syscall, and the kernel prints the interleaving
//! trace, each task's iteration count (verified by recomputing it in ring 3)
//! and a checksum over all of it. The progress values depend on exactly when
//! each tick landed, so two live runs print different traces and checksums:
//! this is the non-determinism a recorder has to capture.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use rt::interrupts::{self, Frame};
use rt::sync::Global;
use rt::{Dec, cpu, gdt, pic, pit, println, user};

/// Ring-3 tasks (task 0 is the kernel's idle loop).
const TASKS: usize = 3;
/// Timer interrupts per second.
const HZ: u32 = 100;
/// Ticks to run for.
const TICKS: usize = 25;
/// Status when a task's result does not match its recomputation.
const EXIT_MISMATCH: u8 = 4;

static DONE: AtomicBool = AtomicBool::new(false);
static PROGRESS: [AtomicU64; TASKS + 1] = [const { AtomicU64::new(0) }; TASKS + 1];
static RESULT: [AtomicU64; TASKS + 1] = [const { AtomicU64::new(0) }; TASKS + 1];

#[repr(C, align(16))]
struct Stack([u8; 16384]);

struct Sched {
    /// Saved frame of each task (index 0 = idle kernel), 0 if not yet saved.
    frame: [usize; TASKS + 1],
    alive: [bool; TASKS + 1],
    current: usize,
    ticks: usize,
    switches: u64,
    /// (task running at the tick, its progress) per tick.
    trace: [(u8, u64); TICKS],
}

static SCHED: Global<Sched> = Global::new(Sched {
    frame: [0; TASKS + 1],
    alive: [false; TASKS + 1],
    current: 0,
    ticks: 0,
    switches: 0,
    trace: [(0, 0); TICKS],
});
static KSTACKS: Global<[Stack; TASKS + 1]> = Global::new([const { Stack([0; 16384]) }; TASKS + 1]);
static USTACKS: Global<[Stack; TASKS + 1]> = Global::new([const { Stack([0; 16384]) }; TASKS + 1]);

fn kstack_top(task: usize) -> u64 {
    // SAFETY: only computes an address inside the static.
    unsafe { (&raw mut (*KSTACKS.get())[task]) as u64 + 16384 }
}

fn ustack_top(task: usize) -> u64 {
    // SAFETY: only computes an address inside the static.
    unsafe { (&raw mut (*USTACKS.get())[task]) as u64 + 16384 }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// One unit of a task's work.
fn step(mut x: u64) -> u64 {
    for _ in 0..64 {
        x = xorshift(x);
    }
    x
}

fn seed(id: u64) -> u64 {
    0x9e37_79b9_7f4a_7c15u64.wrapping_mul(id + 1)
}

/// A task body, in ring 3: work until told to stop.
fn task(id: u64) -> u64 {
    let mut x = seed(id);
    let mut n = 0u64;
    while !DONE.load(Relaxed) {
        x = step(x);
        n += 1;
        PROGRESS[id as usize].store(n, Relaxed);
    }
    x
}

/// Recompute a task's result for a known iteration count, in ring 3.
fn recompute(id: u64) -> u64 {
    let mut x = seed(id);
    for _ in 0..PROGRESS[id as usize].load(Relaxed) {
        x = step(x);
    }
    x
}

extern "C" fn task_entry(id: u64, _: u64) -> ! {
    let r = task(id);
    user::syscall(user::SYS_EXIT, r);
    unreachable!()
}

/// Pick the next task after `s.current` round robin; the idle kernel only
/// when no user task is alive.
fn pick(s: &mut Sched) -> usize {
    for k in 1..=TASKS {
        let t = (s.current + k - 1) % TASKS + 1;
        if s.alive[t] {
            return t;
        }
    }
    0
}

fn switch_to(s: &mut Sched, next: usize) -> *mut Frame {
    if next != s.current {
        s.switches += 1;
    }
    s.current = next;
    if next != 0 {
        gdt::set_rsp0(kstack_top(next));
    }
    s.frame[next] as *mut Frame
}

fn on_tick(frame: *mut Frame) -> *mut Frame {
    // SAFETY: interrupt handlers run with IF = 0 on the only CPU.
    let s = unsafe { &mut *SCHED.get() };
    s.frame[s.current] = frame as usize;
    if s.ticks < TICKS {
        s.trace[s.ticks] = (s.current as u8, PROGRESS[s.current].load(Relaxed));
    }
    s.ticks += 1;
    if s.ticks >= TICKS {
        DONE.store(true, Relaxed);
    }
    pic::eoi(0);
    let next = pick(s);
    switch_to(s, next)
}

fn on_syscall(frame: *mut Frame) -> *mut Frame {
    // SAFETY: as on_tick.
    let s = unsafe { &mut *SCHED.get() };
    // SAFETY: the dispatcher passes the syscalling task's frame.
    let (nr, arg) = unsafe { ((*frame).rax, (*frame).rdi) };
    if nr != user::SYS_EXIT || s.current == 0 {
        // SAFETY: as above.
        unsafe { (*frame).rax = u64::MAX };
        return frame;
    }
    RESULT[s.current].store(arg, Relaxed);
    s.alive[s.current] = false;
    let next = pick(s);
    switch_to(s, next)
}

fn fnv(h: &mut u64, v: u64) {
    for b in v.to_le_bytes() {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

#[unsafe(no_mangle)]
fn guest_main(_info: &rt::BootInfo) -> u8 {
    println!(
        "timer: {} ring-3 tasks, PIT at {} Hz, {} ticks",
        Dec(TASKS as u64),
        Dec(HZ as u64),
        Dec(TICKS as u64)
    );
    {
        // SAFETY: interrupts are still off; nothing else touches SCHED yet.
        let s = unsafe { &mut *SCHED.get() };
        for t in 1..=TASKS {
            // SAFETY: each task has its own kernel stack, used by nothing else.
            let f = unsafe {
                user::prepare_frame(kstack_top(t), task_entry, t as u64, 0, ustack_top(t))
            };
            s.frame[t] = f as usize;
            s.alive[t] = true;
        }
        s.current = 0;
    }
    interrupts::set_handler(pic::IRQ_BASE, on_tick);
    interrupts::set_handler(user::SYSCALL_VECTOR, on_syscall);
    pit::set_periodic(HZ);
    pic::unmask(0);
    loop {
        cpu::cli();
        // SAFETY: interrupts are off.
        let alive = unsafe { (*SCHED.get()).alive };
        if alive.iter().all(|a| !a) {
            break;
        }
        cpu::sti_hlt();
    }
    pic::mask(0);
    // SAFETY: interrupts are off and IRQ 0 is masked: the handlers are done.
    let s = unsafe { &*SCHED.get() };

    let mut h = 0xcbf2_9ce4_8422_2325u64;
    print!("trace:");
    for (i, &(task, progress)) in s.trace.iter().enumerate() {
        if i % 5 == 0 {
            rt::print!("\n ");
        }
        rt::print!(
            " {}:{}@{}",
            Dec(i as u64 + 1),
            Dec(task as u64),
            Dec(progress)
        );
        fnv(&mut h, task as u64);
        fnv(&mut h, progress);
    }
    println!();
    let mut status = rt::EXIT_SUCCESS;
    for t in 1..=TASKS {
        let n = PROGRESS[t].load(Relaxed);
        let r = RESULT[t].load(Relaxed);
        let check = user::run(recompute, t as u64);
        let verdict = if check == r { "ok" } else { "MISMATCH" };
        if check != r {
            status = EXIT_MISMATCH;
        }
        println!(
            "task {}: {} iterations, result {r:#018x} {verdict}",
            Dec(t as u64),
            Dec(n)
        );
        fnv(&mut h, n);
        fnv(&mut h, r);
    }
    println!("switches: {}", Dec(s.switches));
    println!("checksum: {h:#018x}");
    status
}

use rt::print;
