//! `cargo fuzz run frame`: the frame header checks never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::frame(data);
});
