//! Arbitrary bytes as a log's records, replayed against the `entropy` guest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(elf) = guest_images::bytes("entropy") {
        let _ = vm_monitor::replay::fuzz_replay(elf, data);
    }
});
