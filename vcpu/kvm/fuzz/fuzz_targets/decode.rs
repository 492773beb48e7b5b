//! Fuzz the I/O-instruction decoders with arbitrary guest bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vcpu_kvm::decode::fuzz_decode(data);
});
