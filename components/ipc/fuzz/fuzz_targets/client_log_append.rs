//! `cargo fuzz run client_log_append`: a client of LogAppend receiving any bytes as a reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::client_receive::<log_append_api::LogAppend>(data);
});
