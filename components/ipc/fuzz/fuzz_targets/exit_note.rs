//! `cargo fuzz run exit_note`: the supervisor reading a domain's exit note never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_runtime::fuzz_exit_note(data);
});
