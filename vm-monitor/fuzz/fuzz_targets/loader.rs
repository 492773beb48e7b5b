//! Arbitrary bytes as a PVH kernel image.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_monitor::fuzzing::load_kernel(data));
