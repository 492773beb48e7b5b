//! `cargo fuzz run server_vm_control`: a server of VmControl receiving any bytes: rejects or decodes, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::server_receive::<vm_control_api::VmControl>(data);
});
