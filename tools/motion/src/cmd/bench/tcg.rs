//! The same workload under QEMU's TCG with icount, for a baseline measured
//! in the same run: the workload is wrapped in a minimal PVH ELF (a 32-bit
//! entry stub that enables PAE, long mode and paging, then the 64-bit
//! workload, then `out 0xf4` to isa-debug-exit). QEMU's start-up time is
//! removed by timing two sizes and dividing the extra instructions by the
//! extra time.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

const BASE: u64 = 0x10_0000;

fn pvh_elf(workload: &[u8], rsi: u64, rdi: u64) -> Vec<u8> {
    // The loaded image: stub32 | GDT | page tables | 64-bit code.
    let mut img = vec![0u8; 0x4000];
    let stub: Vec<u8> = [
        &[0x0f, 0x20, 0xe0][..],                     // mov eax, cr4
        &[0x83, 0xc8, 0x20],                         // or eax, PAE
        &[0x0f, 0x22, 0xe0],                         // mov cr4, eax
        &[0xb8, 0x00, 0x10, 0x10, 0x00],             // mov eax, PML4
        &[0x0f, 0x22, 0xd8],                         // mov cr3, eax
        &[0xb9, 0x80, 0x00, 0x00, 0xc0],             // mov ecx, EFER
        &[0x0f, 0x32],                               // rdmsr
        &[0x0d, 0x00, 0x01, 0x00, 0x00],             // or eax, LME
        &[0x0f, 0x30],                               // wrmsr
        &[0x0f, 0x20, 0xc0],                         // mov eax, cr0
        &[0x0d, 0x01, 0x00, 0x00, 0x80],             // or eax, PG | PE
        &[0x0f, 0x22, 0xc0],                         // mov cr0, eax
        &[0x0f, 0x01, 0x15, 0x40, 0x08, 0x10, 0x00], // lgdt [BASE + 0x840]
        &[0xea, 0x00, 0x40, 0x10, 0x00, 0x08, 0x00], // jmp 0x08:CODE64
    ]
    .concat();
    img[..stub.len()].copy_from_slice(&stub);
    let gdt: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        img[0x800 + 8 * i..0x808 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    img[0x840..0x842].copy_from_slice(&23u16.to_le_bytes());
    img[0x842..0x846].copy_from_slice(&((BASE + 0x800) as u32).to_le_bytes());
    // PML4 at BASE+0x1000, PDPT at +0x2000, PD at +0x3000: 1 GiB of 2 MiB pages.
    img[0x1000..0x1008].copy_from_slice(&(BASE + 0x2003).to_le_bytes());
    img[0x2000..0x2008].copy_from_slice(&(BASE + 0x3003).to_le_bytes());
    for i in 0..512u64 {
        let o = 0x3000 + 8 * i as usize;
        img[o..o + 8].copy_from_slice(&((i << 21) | 0x83).to_le_bytes());
    }
    let mut code = vec![
        0xb8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
        0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, // mov ds/es/ss, ax
        0x48, 0xc7, 0xc4, 0x00, 0x00, 0x18, 0x00, // mov rsp, 0x180000
        0x48, 0xc7, 0xc6, // mov rsi, imm32
    ];
    code.extend_from_slice(&(rsi as u32).to_le_bytes());
    code.extend_from_slice(&[0x48, 0xc7, 0xc7]); // mov rdi, imm32
    code.extend_from_slice(&(rdi as u32).to_le_bytes());
    code.extend_from_slice(workload);
    code.extend_from_slice(&[0xb0, 0x00, 0xe6, 0xf4, 0xf4]); // mov al, 0; out 0xf4, al; hlt
    img.extend_from_slice(&code);

    // ELF64: header, two program headers (LOAD, NOTE), the note, the image.
    let note: Vec<u8> = [
        &4u32.to_le_bytes()[..],
        &4u32.to_le_bytes(),
        &18u32.to_le_bytes(), // XEN_ELFNOTE_PHYS32_ENTRY
        b"Xen\0",
        &(BASE as u32).to_le_bytes(),
    ]
    .concat();
    let ph_off = 64u64;
    let note_off = ph_off + 2 * 56;
    let img_off = 0x1000u64;
    let mut f = vec![0u8; img_off as usize];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&BASE.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&ph_off.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes());
    let mut ph = |i: usize, ty: u32, flags: u32, off: u64, addr: u64, size: u64, align: u64| {
        let p = ph_off as usize + 56 * i;
        f[p..p + 4].copy_from_slice(&ty.to_le_bytes());
        f[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&addr.to_le_bytes());
        f[p + 24..p + 32].copy_from_slice(&addr.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&size.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&size.to_le_bytes());
        f[p + 48..p + 56].copy_from_slice(&align.to_le_bytes());
    };
    ph(0, 1, 7, img_off, BASE, img.len() as u64, 0x1000);
    ph(1, 4, 4, note_off, 0, note.len() as u64, 4);
    f[note_off as usize..note_off as usize + note.len()].copy_from_slice(&note);
    f.extend_from_slice(&img);
    f
}

/// The `-icount` option (MOTION_QEMU_ICOUNT overrides, e.g. to try record mode).
fn icount_opts() -> String {
    std::env::var("MOTION_QEMU_ICOUNT").unwrap_or_else(|_| "shift=0,sleep=off".into())
}

fn run_qemu(elf: &[u8]) -> Result<f64, String> {
    let mut file = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    file.write_all(elf).map_err(|e| format!("temp file: {e}"))?;
    let start = Instant::now();
    let out = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-icount",
            &icount_opts(),
            "-m",
            "64",
            "-kernel",
        ])
        .arg(file.path())
        .args([
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-display",
            "none",
            "-net",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .output()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let t = start.elapsed().as_secs_f64();
    // isa-debug-exit: status (0 << 1) | 1.
    if out.status.code() != Some(1) {
        return Err(format!(
            "qemu-system-x86_64 ended with {} ({})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(t)
}

/// MIPS of QEMU TCG with icount on `make(n)` for two sizes: (extra
/// instructions) / (extra seconds). `make` returns (code, instructions).
pub fn tcg_mips(
    make: impl Fn(u32) -> (Vec<u8>, u64),
    n: u32,
    rsi: u64,
    rdi: u64,
) -> Result<f64, String> {
    let (c1, i1) = make(n);
    let (c2, i2) = make(n.saturating_mul(3));
    let t1 = run_qemu(&pvh_elf(&c1, rsi, rdi))?;
    let t2 = run_qemu(&pvh_elf(&c2, rsi, rdi))?;
    if t2 <= t1 {
        return Err("QEMU timing did not grow with the workload (too short to measure)".into());
    }
    Ok((i2 - i1) as f64 / (t2 - t1) / 1e6)
}
