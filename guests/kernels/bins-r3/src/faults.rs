//! `faults-r3`: raises the CPU exception named on the command line from ring
//! 3, to test the ring-3 runtime's exception path (IDT -> ring-0 stub ->
//! IRETQ -> ring-3 reporter, status 2) on every backend. `de` divides by
//! zero, `ud` executes UD2, `gp` executes CLI (privileged with IOPL 0), `pf`
//! writes above the 4 GiB the page tables map, `panic` panics (status 1).
//! Anything else prints the choices and exits 3.

#![no_std]
#![no_main]

use rt::println;

#[unsafe(no_mangle)]
fn guest_main(info: &rt::BootInfo) -> u8 {
    let what = info.cmdline().unwrap_or("");
    println!("faults: raising {what:?}");
    match what {
        "de" => {
            let zero = core::hint::black_box(0u64);
            // SAFETY: raises #DE; the runtime reports it and ends the run.
            unsafe {
                core::arch::asm!("div {0}", in(reg) zero, inout("rax") 1u64 => _, inout("rdx") 0u64 => _)
            };
        }
        // SAFETY: raises #UD; the runtime reports it and ends the run.
        "ud" => unsafe { core::arch::asm!("ud2") },
        // SAFETY: CLI in ring 3 with IOPL 0 raises #GP(0) and changes nothing.
        "gp" => unsafe { core::arch::asm!("cli") },
        "pf" => {
            // SAFETY: the address is not mapped: the write raises #PF and
            // touches no memory.
            unsafe { core::ptr::write_volatile(0x1_0000_0000u64 as *mut u8, 1) }
        }
        "panic" => panic!("faults: on request"),
        _ => {
            println!("faults: pass one of de, ud, gp, pf, panic on the command line");
            return 3;
        }
    }
    println!("faults: {what:?} returned");
    4
}
