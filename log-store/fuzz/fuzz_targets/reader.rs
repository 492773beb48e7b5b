//! `cargo fuzz run reader`: verify, open and read any bytes as a log without
//! panicking. The same entry runs over a seeded corpus in the normal tests
//! (log-store/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    log_store::fuzz_read(data);
});
