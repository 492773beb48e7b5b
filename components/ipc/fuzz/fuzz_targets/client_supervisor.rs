//! `cargo fuzz run client_supervisor`: a client of Supervisor receiving any bytes as a reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::client_receive::<supervisor_api::Supervisor>(data);
});
