//! `cargo fuzz run server_log_append`: a server of LogAppend receiving any bytes: rejects or decodes, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::server_receive::<log_append_api::LogAppend>(data);
});
