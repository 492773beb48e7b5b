//! Execute arbitrary bytes as guest code on the soft vCPU.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vcpu_soft::fuzz::run_bytes(data);
});
