//! Arbitrary guest accesses to the device models.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vm_monitor::fuzzing::drive_devices(data));
