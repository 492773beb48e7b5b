//! `hello`: prints a greeting and what the PVH loader passed, then exits 0.
//! Its output is the same in QEMU and under `motion run`.

#![no_std]
#![no_main]

use rt::println;

#[unsafe(no_mangle)]
fn guest_main(info: &rt::BootInfo) -> u8 {
    println!("hello from a CAS Motion guest");
    if !info.magic_ok {
        println!("hvm_start_info: bad magic");
        return 3;
    }
    println!("hvm_start_info: magic ok");
    println!("goodbye");
    rt::EXIT_SUCCESS
}
