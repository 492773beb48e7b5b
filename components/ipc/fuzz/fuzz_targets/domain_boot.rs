//! `cargo fuzz run domain_boot`: a domain's boot-message decoder never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_runtime::fuzz_boot(data);
});
