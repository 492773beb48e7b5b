//! Hostile guests: kernels that poke random I/O ports and MMIO addresses,
//! execute random bytes, and fault in loops. Under `motion run` each must end
//! with a clear stop reason (its status or a named reason on stderr) and the
//! monitor must never panic or report an internal error of its own.
//!
//! The guests are built here as minimal PVH ELF images around hand-encoded
//! 32-bit code (PVH enters in 32-bit protected mode, paging off, no IDT).

use motion_e2e::motion_bin as common;

use rand::{Rng, SeedableRng};

const BASE: u32 = 0x10_0000;

/// A PVH ELF64 image: `code` loaded at 1 MiB with the entry at its start.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let code_off = 0x1000usize;
    let note_off = 0x200usize;
    let mut e = vec![0u8; code_off + code.len()];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELF64
    e[5] = 1; // little-endian
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&(BASE as u64).to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&2u16.to_le_bytes());
    let ph = |e: &mut Vec<u8>, at: usize, kind: u32, off: u64, addr: u64, size: u64, mem: u64| {
        e[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        e[at + 4..at + 8].copy_from_slice(&7u32.to_le_bytes());
        e[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        e[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        e[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes());
        e[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        e[at + 40..at + 48].copy_from_slice(&mem.to_le_bytes());
    };
    let len = code.len() as u64;
    ph(
        &mut e,
        64,
        1,
        code_off as u64,
        BASE as u64,
        len,
        len + 0x10000,
    );
    ph(&mut e, 120, 4, note_off as u64, 0, 20, 20);
    let n = note_off;
    e[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
    e[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
    e[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes());
    e[n + 12..n + 16].copy_from_slice(b"Xen\0");
    e[n + 16..n + 20].copy_from_slice(&BASE.to_le_bytes());
    e[code_off..].copy_from_slice(code);
    e
}

/// A tiny 32-bit assembler: just the instructions these guests use.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn d(&mut self, v: u32) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    fn here(&self) -> usize {
        self.0.len()
    }
    /// `jmp short` back to `target`.
    fn jmp_back(&mut self, target: usize) -> &mut Self {
        let rel = target as isize - (self.here() as isize + 2);
        self.b(&[0xeb, rel as i8 as u8])
    }
    /// esi = esi * 1103515245 + 12345 (an LCG step).
    fn lcg(&mut self) -> &mut Self {
        self.b(&[0x69, 0xf6]).d(1_103_515_245); // imul esi, esi, imm32
        self.b(&[0x81, 0xc6]).d(12345) // add esi, imm32
    }
}

/// Random IN/OUT of random sizes on random ports (never isa-debug-exit).
fn port_poker(seed: u32) -> Vec<u8> {
    let mut a = Asm::default();
    a.b(&[0xbe]).d(seed); // mov esi, seed
    let top = a.here();
    a.lcg();
    a.b(&[0x89, 0xf2]); // mov edx, esi
    a.b(&[0xc1, 0xea, 0x10]); // shr edx, 16
    a.b(&[0x66, 0x81, 0xfa, 0xf4, 0x00]); // cmp dx, 0xf4
    a.b(&[0x74, 0x00]); // je top (patched)
    let je = a.here();
    a.b(&[0x89, 0xf0]); // mov eax, esi
    a.b(&[0xf7, 0xc6, 0x00, 0x01, 0x00, 0x00]); // test esi, 0x100
    a.b(&[0x74, 0x03]); // jz +3 -> in
    a.b(&[0xef]); // out dx, eax
    a.b(&[0xeb, 0x01]); // jmp +1
    a.b(&[0xec]); // in al, dx
    a.jmp_back(top);
    a.0[je - 1] = (top as isize - je as isize) as i8 as u8;
    a.0
}

/// Random loads and stores at random addresses above RAM (MMIO exits).
fn mmio_poker(seed: u32) -> Vec<u8> {
    let mut a = Asm::default();
    a.b(&[0xbe]).d(seed); // mov esi, seed
    let top = a.here();
    a.lcg();
    a.b(&[0x89, 0xf0]); // mov eax, esi
    a.b(&[0x0d]).d(0x8000_0000); // or eax, 0x80000000 (above RAM)
    a.b(&[0xf7, 0xc6, 0x00, 0x02, 0x00, 0x00]); // test esi, 0x200
    a.b(&[0x74, 0x04]); // jz +4 -> load
    a.b(&[0x89, 0x30]); // mov [eax], esi
    a.b(&[0xeb, 0x02]); // jmp +2
    a.b(&[0x8b, 0x08]); // mov ecx, [eax]
    a.jmp_back(top);
    a.0
}

/// A GDT and an IDT whose every exception handler IRETs straight back to
/// the faulting instruction, then `fault` forever.
fn fault_looper(fault: &[u8]) -> Vec<u8> {
    let mut a = Asm::default();
    // Layout: [0x000] code, [0x200] GDT, [0x240] GDTR, [0x250] IDTR,
    // [0x300] handler (iretd), [0x400] IDT (32 gates).
    let gdt = BASE + 0x200;
    let idt = BASE + 0x400;
    let handler = BASE + 0x300;
    a.b(&[0x0f, 0x01, 0x15]).d(BASE + 0x240); // lgdt [gdtr]
    a.b(&[0xea]).d(BASE + 14).b(&[0x08, 0x00]); // ljmp 0x08:next
    assert_eq!(a.here(), 14);
    a.b(&[0xb8, 0x10, 0x00, 0x00, 0x00]); // mov eax, 0x10
    a.b(&[0x8e, 0xd8, 0x8e, 0xd0]); // mov ds, ax; mov ss, ax
    a.b(&[0xbc]).d(BASE + 0x8000); // mov esp, stack
    a.b(&[0x0f, 0x01, 0x1d]).d(BASE + 0x250); // lidt [idtr]
    let top = a.here();
    a.b(fault);
    a.jmp_back(top);
    let mut img = a.0;
    img.resize(0x600, 0x90);
    let gdt_entries: [u64; 3] = [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    for (i, g) in gdt_entries.iter().enumerate() {
        img[0x200 + 8 * i..0x208 + 8 * i].copy_from_slice(&g.to_le_bytes());
    }
    img[0x240..0x242].copy_from_slice(&23u16.to_le_bytes());
    img[0x242..0x246].copy_from_slice(&gdt.to_le_bytes());
    img[0x250..0x252].copy_from_slice(&(32 * 8 - 1u16).to_le_bytes());
    img[0x252..0x256].copy_from_slice(&idt.to_le_bytes());
    // Error-code exceptions need the code popped before IRET: one handler
    // per kind.
    img[0x300] = 0xcf; // iretd
    img[0x310..0x314].copy_from_slice(&[0x83, 0xc4, 0x04, 0xcf]); // add esp, 4; iretd
    for v in 0..32u32 {
        let h = if matches!(v, 8 | 10..=14 | 17) {
            handler + 0x10
        } else {
            handler
        };
        let gate = (h & 0xffff) as u64 | 0x08 << 16 | 0x8e00u64 << 32 | ((h >> 16) as u64) << 48;
        img[0x400 + 8 * v as usize..0x408 + 8 * v as usize].copy_from_slice(&gate.to_le_bytes());
    }
    img
}

/// Reasons a hostile guest may legitimately end with.
const CLEAR_REASONS: &[&str] = &[
    "triple fault",
    "bad access",
    "halted with interrupts disabled",
    "waiting for an interrupt nothing will raise",
    "time limit",
    "guest exited with status",
    // The kvm backend here: KVM's emulator refused an instruction.
    "KVM could not execute a guest instruction",
];

/// Run `elf` under `motion run` (soft backend) with a time limit; assert a
/// clean stop.
fn run_hostile(name: &str, elf: &[u8]) -> String {
    run_hostile_on("soft", name, elf)
}

/// Run `elf` under `motion run --backend BACKEND` with a time limit; assert
/// a clean stop and return its reason.
fn run_hostile_on(backend: &str, name: &str, elf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.elf"));
    std::fs::write(&path, elf).unwrap();
    let out = common::motion_run(&[
        "--guest",
        path.to_str().unwrap(),
        "--timeout",
        "1",
        "--backend",
        backend,
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code();
    assert!(
        !err.contains("panicked") && code != Some(101),
        "{name}: the monitor panicked: {err}"
    );
    assert!(code.is_some(), "{name}: killed by a signal: {err}");
    // Either the guest's own status (it found isa-debug-exit: no message)
    // or a named stop reason.
    let reason = CLEAR_REASONS.iter().find(|r| err.contains(*r));
    assert!(
        reason.is_some() || (err.is_empty() && code != Some(255)),
        "{name}: unclear stop (status {code:?}): {err}"
    );
    reason.map_or_else(|| format!("status {code:?}"), |r| r.to_string())
}

#[test]
fn random_port_pokers_stop_cleanly() {
    for seed in [1u32, 0xdead_beef, 42] {
        let r = run_hostile(&format!("ports-{seed:x}"), &pvh_elf(&port_poker(seed)));
        println!("port poker {seed:#x}: {r}");
    }
}

#[test]
fn random_mmio_pokers_stop_cleanly() {
    for seed in [7u32, 0x1234_5678] {
        let r = run_hostile(&format!("mmio-{seed:x}"), &pvh_elf(&mmio_poker(seed)));
        assert_eq!(r, "time limit", "MMIO pokes run until stopped");
    }
}

#[test]
fn random_code_stops_cleanly() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xbad_c0de);
    let mut reasons = std::collections::BTreeMap::new();
    for i in 0..12 {
        let code: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
        let r = run_hostile(&format!("random-{i}"), &pvh_elf(&code));
        *reasons.entry(r).or_insert(0) += 1;
    }
    println!("random code stops: {reasons:?}");
}

#[test]
fn fault_loops_stop_cleanly() {
    // ud2; an int3 loop; divide by zero; a #GP from loading a bad selector.
    let faults: [&[u8]; 4] = [
        &[0x0f, 0x0b],
        &[0xcc],
        &[0x31, 0xc9, 0xf7, 0xf1],
        &[0xb8, 0x99, 0x00, 0x00, 0x00, 0x8e, 0xd8],
    ];
    for (i, f) in faults.iter().enumerate() {
        let r = run_hostile(&format!("faults-{i}"), &pvh_elf(&fault_looper(f)));
        assert_eq!(r, "time limit", "fault loop {i} spins until stopped");
    }
    // Without an IDT the first fault is a triple fault.
    let r = run_hostile("no-idt", &pvh_elf(&[0x0f, 0x0b]));
    assert_eq!(r, "triple fault");
}

/// The same hostile guests on the kvm backend, where /dev/kvm works: the
/// monitor must stop each with a clear reason (on the nested KVM here,
/// ring-0 code is emulated and some instructions end in a named KVM error).
#[test]
fn hostile_guests_on_kvm_stop_cleanly() {
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("skipped: /dev/kvm does not exist");
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x0c0f_fee0);
    let mut guests = vec![
        ("kvm-ports".to_string(), pvh_elf(&port_poker(3))),
        ("kvm-mmio".to_string(), pvh_elf(&mmio_poker(5))),
        (
            "kvm-faults".to_string(),
            pvh_elf(&fault_looper(&[0x0f, 0x0b])),
        ),
        ("kvm-no-idt".to_string(), pvh_elf(&[0x0f, 0x0b])),
    ];
    for i in 0..4 {
        let code: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
        guests.push((format!("kvm-random-{i}"), pvh_elf(&code)));
    }
    for (name, elf) in guests {
        let r = run_hostile_on("kvm", &name, &elf);
        println!("{name}: {r}");
    }
}
