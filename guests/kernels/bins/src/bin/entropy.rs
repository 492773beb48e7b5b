//! `entropy`: reads every source of non-determinism a CPU offers a kernel
//! without devices (RDTSC, RDRAND, RDSEED, CPUID) and the CMOS real-time
//! clock, and prints what it got. Its output differs between runs and
//! machines by design; it exits 0.

#![no_std]
#![no_main]

use rt::io::{inb, outb};
use rt::{Dec, cpu, println};

fn rdrand() -> Option<u64> {
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        // SAFETY: RDRAND only writes the named registers and flags.
        unsafe {
            core::arch::asm!("rdrand {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack))
        };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

fn rdseed() -> Option<u64> {
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        // SAFETY: RDSEED only writes the named registers and flags.
        unsafe {
            core::arch::asm!("rdseed {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack))
        };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

fn cmos(reg: u8) -> u8 {
    // SAFETY: CMOS index/data ports; bit 7 of the index keeps NMIs disabled.
    unsafe {
        outb(0x70, 0x80 | reg);
        inb(0x71)
    }
}

fn bcd(v: u8, binary: bool) -> u8 {
    if binary { v } else { (v >> 4) * 10 + (v & 0xf) }
}

#[unsafe(no_mangle)]
fn guest_main(_info: &rt::BootInfo) -> u8 {
    println!("entropy: what this machine gives a guest");
    let [max, b, c, d] = cpu::cpuid(0, 0);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&b.to_le_bytes());
    vendor[4..8].copy_from_slice(&d.to_le_bytes());
    vendor[8..12].copy_from_slice(&c.to_le_bytes());
    println!(
        "cpuid: vendor {:?} max leaf {max:#x}",
        core::str::from_utf8(&vendor).unwrap_or("?")
    );
    let [eax1, _, ecx1, edx1] = cpu::cpuid(1, 0);
    println!("cpuid 1: eax {eax1:#010x} ecx {ecx1:#010x} edx {edx1:#010x}");
    let has_rdrand = ecx1 & (1 << 30) != 0;
    let has_rdseed = max >= 7 && cpu::cpuid(7, 0)[1] & (1 << 18) != 0;
    let hypervisor = ecx1 & (1 << 31) != 0;
    if hypervisor {
        let [_, hb, hc, hd] = cpu::cpuid(0x4000_0000, 0);
        let mut name = [0u8; 12];
        name[0..4].copy_from_slice(&hb.to_le_bytes());
        name[4..8].copy_from_slice(&hc.to_le_bytes());
        name[8..12].copy_from_slice(&hd.to_le_bytes());
        println!(
            "hypervisor: {:?}",
            core::str::from_utf8(&name).unwrap_or("?")
        );
    }

    let t0 = cpu::rdtsc();
    let mut x = 0u64;
    for i in 0..1000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    core::hint::black_box(x);
    let t1 = cpu::rdtsc();
    println!(
        "rdtsc: {} then {} (+{})",
        Dec(t0),
        Dec(t1),
        Dec(t1.wrapping_sub(t0))
    );

    if has_rdrand {
        match (rdrand(), rdrand()) {
            (Some(a), Some(b)) => println!("rdrand: {a:#018x} {b:#018x}"),
            _ => println!("rdrand: no value after 10 tries"),
        }
    } else {
        println!("rdrand: not offered (cpuid 1 ecx bit 30 clear)");
    }
    if has_rdseed {
        match rdseed() {
            Some(a) => println!("rdseed: {a:#018x}"),
            None => println!("rdseed: no value after 10 tries"),
        }
    } else {
        println!("rdseed: not offered (cpuid 7 ebx bit 18 clear)");
    }

    // Wait out an update in progress (register A bit 7), then read the clock.
    let mut spins = 0;
    while cmos(0x0a) & 0x80 != 0 && spins < 100_000 {
        spins += 1;
    }
    let status_b = cmos(0x0b);
    let binary = status_b & 4 != 0;
    let sec = bcd(cmos(0x00), binary);
    let min = bcd(cmos(0x02), binary);
    let hour_raw = cmos(0x04);
    let hour = bcd(hour_raw & 0x7f, binary);
    let day = bcd(cmos(0x07), binary);
    let month = bcd(cmos(0x08), binary);
    let year = bcd(cmos(0x09), binary);
    let century = bcd(cmos(0x32), binary);
    println!(
        "rtc: {:02}{:02}-{:02}-{:02} {:02}:{:02}:{:02} (status b {status_b:#04x})",
        Dec(if century == 0 { 20 } else { century } as u64),
        Dec(year as u64),
        Dec(month as u64),
        Dec(day as u64),
        Dec(hour as u64),
        Dec(min as u64),
        Dec(sec as u64)
    );
    rt::EXIT_SUCCESS
}
