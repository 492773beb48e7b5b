//! `cargo fuzz run server_pmu`: a server of Pmu receiving any bytes: rejects or decodes, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::server_receive::<pmu_api::Pmu>(data);
});
