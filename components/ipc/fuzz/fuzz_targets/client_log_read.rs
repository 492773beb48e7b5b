//! `cargo fuzz run client_log_read`: a client of LogRead receiving any bytes as a reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::client_receive::<log_read_api::LogRead>(data);
});
