//! `cargo fuzz run server_supervisor`: a server of Supervisor receiving any bytes: rejects or decodes, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::server_receive::<supervisor_api::Supervisor>(data);
});
