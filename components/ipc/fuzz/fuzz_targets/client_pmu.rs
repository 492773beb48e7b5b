//! `cargo fuzz run client_pmu`: a client of Pmu receiving any bytes as a reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::client_receive::<pmu_api::Pmu>(data);
});
