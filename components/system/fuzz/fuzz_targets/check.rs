//! `cargo fuzz run check`: the validator never panics on any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_system::fuzz_check(data);
});
