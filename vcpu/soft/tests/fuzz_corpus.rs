//! Runs the fuzz target over a seeded random corpus: random bytes, and random
//! sequences of valid-looking instruction fragments. The host must not panic.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn random_bytes_never_panic_the_host() {
    let n: usize = std::env::var("MOTION_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let fragments: &[&[u8]] = &[
        &[0x48, 0x01, 0xc8],
        &[0xf3, 0xa4],
        &[0xf3, 0x48, 0xab],
        &[0x0f, 0x05],
        &[0x48, 0x0f, 0x07],
        &[0xcd, 0x80],
        &[0xcf],
        &[0x48, 0xcf],
        &[0xc3],
        &[0xe8, 0, 0, 0, 0],
        &[0xfa],
        &[0xfb],
        &[0xf4],
        &[0x0f, 0xa2],
        &[0x0f, 0x31],
        &[0x0f, 0x32],
        &[0x0f, 0x30],
        &[0xe6, 0x80],
        &[0xec],
        &[0x6c],
        &[0xf3, 0x6e],
        &[0x0f, 0x22, 0xd8],
        &[0x0f, 0x20, 0xc0],
        &[0x0f, 0x01, 0x10],
        &[0x0f, 0x00, 0xd8],
        &[0x8e, 0xd0],
        &[0x48, 0xf7, 0xf1],
        &[0x66, 0x0f, 0xef, 0xc0],
        &[0x0f, 0x29, 0x06],
        &[0x48, 0x8b, 0x06],
        &[0x48, 0x89, 0x07],
        &[0x0f, 0xc7, 0x0e],
        &[0x48, 0x0f, 0xc7, 0x0e],
        &[0x9d],
        &[0x9c],
        &[0xc9],
        &[0xc8, 0x10, 0, 2],
        &[0x48, 0x0f, 0xbc, 0xc1],
        &[0x0f, 0x01, 0xf8],
        &[0x0f, 0x01, 0x38],
        &[0x0f, 0xc7, 0xf0],
        &[0xcc],
        &[0xf1],
        &[0x0f, 0x0b],
        &[0x48, 0xb8, 0, 0, 0x40, 0, 0, 0, 0, 0],
        &[0x48, 0x8b, 0x00],
        &[0x48, 0x89, 0x00],
        &[0xff, 0xe0],
    ];
    let mut stats = (0u32, 0u32, 0u64);
    for i in 0..n {
        let len = rng.random_range(1..200);
        let mut data = vec![rng.random::<u8>()];
        if i % 2 == 0 {
            data.extend((0..len).map(|_| rng.random::<u8>()));
        } else {
            while data.len() < len {
                data.extend_from_slice(fragments[rng.random_range(0..fragments.len())]);
            }
        }
        let o = vcpu_soft::fuzz::run_bytes(&data);
        stats.0 += o.triple_fault as u32;
        stats.1 += o.internal_error as u32;
        stats.2 += o.instructions;
    }
    println!(
        "{n} inputs: {} triple faults, {} internal errors, {} instructions",
        stats.0, stats.1, stats.2
    );
}
