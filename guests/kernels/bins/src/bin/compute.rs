//! `compute`: pure computation for benchmarks; deterministic output.
//!
//! Work size: [`ROUNDS`] rounds, each fills [`N`] 32-bit words from a
//! xorshift generator, sorts them with `core`'s unstable sort, and hashes the
//! sorted words with FNV-1a. With N = 32768 and 4 rounds that is on the order
//! of 30-40 million instructions (the soft vCPU's retired-instruction count is
//! printed by `motion run --stats`). The work runs in ring 3 (native on the
//! KVM backend here, where ring-0 code is emulated).

#![no_std]
#![no_main]

use rt::sync::Global;
use rt::{Dec, println, user};

/// Words per round.
const N: usize = 32768;
/// Rounds.
const ROUNDS: u64 = 4;

static DATA: Global<[u32; N]> = Global::new([0; N]);

fn round(r: u64) -> u64 {
    // SAFETY: only this ring-3 function touches DATA, one call at a time.
    let data = unsafe { &mut *DATA.get() };
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ r.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for w in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *w = (x >> 16) as u32;
    }
    data.sort_unstable();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in data.iter() {
        for b in w.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    // Sortedness is part of the answer.
    let sorted = data.windows(2).all(|p| p[0] <= p[1]);
    h ^ (!sorted as u64)
}

fn work(_: u64) -> u64 {
    let mut total = 0u64;
    for r in 0..ROUNDS {
        let h = round(r);
        total = total.rotate_left(5) ^ h;
    }
    total
}

#[unsafe(no_mangle)]
fn guest_main(_info: &rt::BootInfo) -> u8 {
    println!(
        "compute: {} rounds of xorshift-fill, sort and FNV-1a over {} words",
        Dec(ROUNDS),
        Dec(N as u64)
    );
    let sum = user::run(work, 0);
    println!("compute: checksum {sum:#018x}");
    rt::EXIT_SUCCESS
}
