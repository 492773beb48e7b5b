//! `cargo fuzz run client_vm_control`: a client of VmControl receiving any bytes as a reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    motion_ipc::fuzz_entry::client_receive::<vm_control_api::VmControl>(data);
});
