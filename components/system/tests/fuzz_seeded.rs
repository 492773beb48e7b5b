//! The fuzz target's body over a seeded random corpus: mutations of the
//! repository's system.toml and of every fixture. Runs in the normal test
//! run; `cargo fuzz run check` (in fuzz/) explores further.
//! `MOTION_FUZZ_ITERS` raises the count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOKENS: &[&str] = &[
    "\n",
    "[[component]]\n",
    "[[domain]]\n",
    "[[channel]]\n",
    "name = ",
    "\"",
    "=",
    "[",
    "]",
    ",",
    "{",
    "}",
    "'",
    "#",
    "supervisor = true\n",
    "grants = [\"kvm\"]\n",
    "\"vm-monitor\"",
    "\\u00e9",
    "é",
    "0",
    "-1",
    "99999999999999999999",
    "true",
    ".",
    "\"\"\"",
    "components = []\n",
    "max-restarts = 0\n",
    "restart = \"on-failure\"\n",
    "interface = \"Supervisor\"\n",
];

fn seeds() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut out = vec![std::fs::read_to_string(format!("{root}/system.toml")).unwrap()];
    if let Ok(dir) = std::fs::read_dir(format!("{root}/tests/fixtures/system")) {
        for e in dir {
            out.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
    }
    out
}

fn mutate(rng: &mut ChaCha8Rng, src: &str) -> Vec<u8> {
    let mut b = src.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=b.len());
        match rng.random_range(0..5) {
            0 if !b.is_empty() => {
                let end = (at + rng.random_range(1..40)).min(b.len());
                b.drain(at.min(end)..end);
            }
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                b.splice(at..at, t.bytes());
            }
            2 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            3 => {
                // Duplicate a slice elsewhere (repeats tables, names, keys).
                let start = rng.random_range(0..=b.len());
                let end = (start + rng.random_range(0..200)).min(b.len());
                let chunk = b[start..end].to_vec();
                b.splice(at..at, chunk);
            }
            _ => {
                // Swap two lines.
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let i = rng.random_range(0..lines.len());
                    let j = rng.random_range(0..lines.len());
                    lines.swap(i, j);
                }
                b = lines.join("\n").into_bytes();
            }
        }
    }
    b
}

#[test]
fn validator_never_panics_on_mutated_descriptions() {
    let iters: usize = std::env::var("MOTION_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let seeds = seeds();
    assert!(seeds.len() > 1);
    let mut rng = ChaCha8Rng::seed_from_u64(0x0051_57e3);
    let (mut valid, mut invalid) = (0, 0);
    for seed in &seeds {
        motion_system::fuzz_check(seed.as_bytes());
    }
    for _ in 0..iters {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, seed);
        motion_system::fuzz_check(&input);
        let ok = std::str::from_utf8(&input).is_ok_and(|s| {
            motion_system::parse(
                "f".as_ref(),
                s,
                &["LogAppend", "LogRead", "Pmu", "VmControl", "Supervisor"],
            )
            .is_ok()
        });
        if ok { valid += 1 } else { invalid += 1 }
    }
    // Both outcomes must be exercised, or the corpus is not testing much.
    println!("{valid} valid, {invalid} invalid of {iters}");
    assert!(invalid > iters / 2, "{valid} valid, {invalid} invalid");
    assert!(
        valid > 0,
        "no mutation stayed valid: the corpus only tests the error paths"
    );
}
