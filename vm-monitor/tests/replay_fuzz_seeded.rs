//! The replay fuzz entry (`vm_monitor::replay::fuzz_replay`, also the
//! `replay` cargo-fuzz target) over a seeded corpus: real recordings of the
//! `entropy` and `hello` guests with records dropped, duplicated, swapped,
//! altered and spliced, plus random bytes. Every input must end in a verdict
//! or an error — never a panic or a hang — and the unaltered recordings
//! must verify (so the harness itself replays correctly).

mod common;

use common::{every, live, record_run};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vm_monitor::replay::{ReplayEnd, fuzz_encode, fuzz_records, fuzz_replay};
use vm_monitor::{MachineConfig, RunLimits};

/// A recording of `guest` on the machine `fuzz_replay` replays on (4 MiB
/// of RAM), encoded as fuzz input.
fn recording(guest: &str) -> Vec<u8> {
    let machine = common::machine_with(
        guest,
        &MachineConfig {
            ram: 4 << 20,
            ..MachineConfig::default()
        },
    );
    let mut vcpu = common::soft_vcpu(&machine);
    let live = live(&machine, Box::new(std::io::sink()), None, None);
    let (_, records) = record_run(&machine, &mut vcpu, live, every(50), &RunLimits::default());
    let bytes = fuzz_encode(&records);
    assert_eq!(
        fuzz_records(&bytes).len(),
        records.len(),
        "every record fits"
    );
    bytes
}

fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut rest = seed;
    while let [ty, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let mut r = vec![*ty, *len];
        r.extend_from_slice(&tail[..n]);
        records.push(r);
        rest = &tail[n..];
    }
    for _ in 0..rng.random_range(1..4) {
        if records.is_empty() {
            break;
        }
        let i = rng.random_range(0..records.len());
        match rng.random_range(0..5) {
            0 => {
                records.remove(i);
            }
            1 => {
                let r = records[i].clone();
                records.insert(i, r);
            }
            2 => {
                let j = rng.random_range(0..records.len());
                records.swap(i, j);
            }
            3 => {
                let r = &mut records[i];
                if r.len() > 2 {
                    let k = rng.random_range(2..r.len());
                    r[k] ^= rng.random_range(1..=255u8);
                }
            }
            _ => records.truncate(i),
        }
    }
    records.concat()
}

#[test]
fn replay_fuzz_target_survives_a_seeded_corpus() {
    let n: usize = std::env::var("MOTION_REPLAY_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut ends = [0usize; 4];
    for guest in ["hello", "entropy"] {
        let elf = guest_images::bytes(guest).unwrap();
        let seed = recording(guest);
        assert!(
            matches!(fuzz_replay(elf, &seed), Some(ReplayEnd::Verified { .. })),
            "{guest}: the unaltered recording verifies"
        );
        for i in 0..n {
            let input = if i % 10 == 9 {
                (0..rng.random_range(0..400))
                    .map(|_| rng.random())
                    .collect()
            } else {
                mutate(&seed, &mut rng)
            };
            let k = match fuzz_replay(elf, &input) {
                Some(ReplayEnd::Verified { .. }) => 0,
                Some(ReplayEnd::Truncated { .. }) => 1,
                Some(ReplayEnd::Diverged(_)) => 2,
                None => 3,
            };
            ends[k] += 1;
        }
    }
    eprintln!(
        "verified {}, truncated {}, diverged {}, error {}",
        ends[0], ends[1], ends[2], ends[3]
    );
    assert!(ends[2] > 0, "mutations are noticed");
}
