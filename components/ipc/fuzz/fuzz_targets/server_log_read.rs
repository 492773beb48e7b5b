//! `cargo fuzz run server_log_read`: a server of LogRead receiving any bytes: rejects or decodes, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::server_receive::<log_read_api::LogRead>(data);
});
