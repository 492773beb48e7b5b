//! The standard inputs for the bundled guests: a disk image for `disk` /
//! `disk-r3` and serial input for `serial-echo` / `serial-echo-r3`, the same
//! bytes for every caller (the record/replay tests and `motion bench`), so
//! figures and test runs see the same guest work.

use rand::{Rng, SeedableRng};

const DISK_SEED: u64 = 7;
const INPUT_SEED: u64 = 8;
const DISK_SECTORS: usize = 256;

/// A 256-sector disk image of seeded random bytes.
pub fn disk_image() -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(DISK_SEED);
    (0..DISK_SECTORS * 512).map(|_| rng.random()).collect()
}

/// 24 numbered lines of 4..48 random letters, then `quit`: longer than the
/// UART's 16-byte burst, so the rest arrives paced while the guest echoes.
pub fn serial_input() -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let mut input = String::new();
    for i in 0..24 {
        let n = rng.random_range(4..48);
        let line: String = (0..n)
            .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
            .collect();
        input += &format!("{i} {line}\n");
    }
    input += "quit\n";
    input
}
