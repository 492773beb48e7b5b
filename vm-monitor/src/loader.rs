//! The PVH boot protocol: load an ELF kernel that carries a
//! XEN_ELFNOTE_PHYS32_ENTRY note, write `hvm_start_info` with a memory map
//! and command line, and describe the 32-bit entry state.
//!
//! The ELF parser is written for hostile input (it is fuzzed): every offset,
//! size and address is checked, and anything unexpected is an error naming
//! what was wrong and where.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Where `hvm_start_info` goes.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Where the memory map goes (right after `hvm_start_info`).
pub const MEMMAP_ADDR: u64 = 0x6040;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x7000;
/// Longest command line (with its NUL).
pub const CMDLINE_MAX: usize = 4096;
/// Kernel segments must not overlap the boot information below this.
pub const BOOT_INFO_END: u64 = 0x8000;
/// XEN_ELFNOTE_PHYS32_ENTRY.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Why a kernel could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not an ELF file.
    #[error("not an ELF file (bad magic)")]
    NotElf,
    /// An ELF we cannot boot (class, byte order, machine, type).
    #[error("unsupported ELF: {0}")]
    Unsupported(String),
    /// A header, program header or note lies outside the file.
    #[error("truncated ELF: {0}")]
    Truncated(String),
    /// No PVH entry note.
    #[error(
        "not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY (type 18, name \"Xen\") note in any PT_NOTE segment"
    )]
    NotPvh,
    /// A segment does not fit guest RAM or overlaps the boot information.
    #[error("segment {index} ({paddr:#x}..{end:#x}) {why}")]
    BadSegment {
        /// Program header index.
        index: usize,
        /// Load address.
        paddr: u64,
        /// End address.
        end: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// The entry point is not inside a loaded segment.
    #[error("PVH entry point {0:#x} is not inside a loaded segment")]
    EntryOutside(u64),
    /// The command line does not fit.
    #[error("command line is {0} bytes; at most {max} fit", max = CMDLINE_MAX - 1)]
    CmdlineTooLong(usize),
    /// Writing guest memory failed.
    #[error("writing guest memory: {0}")]
    Memory(String),
}

/// A loadable segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Physical load address.
    pub paddr: u64,
    /// Offset of the file bytes.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
}

/// A parsed PVH kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvhImage {
    /// The 32-bit entry point from the note.
    pub entry: u32,
    /// Loadable segments.
    pub segments: Vec<Segment>,
}

struct Reader<'a> {
    b: &'a [u8],
    le: bool,
}

impl Reader<'_> {
    fn bytes(&self, off: u64, n: u64, what: &str) -> Result<&[u8], LoadError> {
        let end = off.checked_add(n).filter(|&e| e <= self.b.len() as u64);
        match end {
            Some(e) => Ok(&self.b[off as usize..e as usize]),
            None => Err(LoadError::Truncated(format!(
                "{what} at offset {off:#x} (+{n}) past the end of the {}-byte file",
                self.b.len()
            ))),
        }
    }
    fn u16(&self, off: u64, what: &str) -> Result<u16, LoadError> {
        let b = self.bytes(off, 2, what)?;
        let a = [b[0], b[1]];
        Ok(if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }
    fn u32(&self, off: u64, what: &str) -> Result<u32, LoadError> {
        let b = self.bytes(off, 4, what)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }
    fn u64(&self, off: u64, what: &str) -> Result<u64, LoadError> {
        let b = self.bytes(off, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        })
    }
}

/// Parse an ELF32 or ELF64 x86 kernel and find its PVH entry.
pub fn parse(elf: &[u8]) -> Result<PvhImage, LoadError> {
    if elf.len() < 16 || &elf[..4] != b"\x7fELF" {
        return Err(LoadError::NotElf);
    }
    let is64 = match elf[4] {
        1 => false,
        2 => true,
        c => return Err(LoadError::Unsupported(format!("ELF class {c}"))),
    };
    if elf[5] != 1 {
        return Err(LoadError::Unsupported("big-endian ELF".into()));
    }
    let r = Reader { b: elf, le: true };
    let e_type = r.u16(16, "e_type")?;
    if e_type != 2 {
        return Err(LoadError::Unsupported(format!(
            "ELF type {e_type} (want 2, an executable)"
        )));
    }
    let machine = r.u16(18, "e_machine")?;
    if !matches!(machine, 3 | 62) {
        return Err(LoadError::Unsupported(format!(
            "machine {machine} (want 3, i386, or 62, x86-64)"
        )));
    }
    let (phoff, phentsize, phnum) = if is64 {
        (
            r.u64(32, "e_phoff")?,
            r.u16(54, "e_phentsize")?,
            r.u16(56, "e_phnum")?,
        )
    } else {
        (
            r.u32(28, "e_phoff")? as u64,
            r.u16(42, "e_phentsize")?,
            r.u16(44, "e_phnum")?,
        )
    };
    let min_ph = if is64 { 56 } else { 32 };
    if (phentsize as u64) < min_ph {
        return Err(LoadError::Unsupported(format!(
            "program header size {phentsize} (want at least {min_ph})"
        )));
    }
    let mut segments = Vec::new();
    let mut entry = None;
    for i in 0..phnum as u64 {
        let ph = phoff
            .checked_add(i * phentsize as u64)
            .ok_or_else(|| LoadError::Truncated(format!("program header {i}")))?;
        r.bytes(ph, min_ph, &format!("program header {i}"))?;
        let p_type = r.u32(ph, "p_type")?;
        let (offset, paddr, filesz, memsz) = if is64 {
            (
                r.u64(ph + 8, "p_offset")?,
                r.u64(ph + 24, "p_paddr")?,
                r.u64(ph + 32, "p_filesz")?,
                r.u64(ph + 40, "p_memsz")?,
            )
        } else {
            (
                r.u32(ph + 4, "p_offset")? as u64,
                r.u32(ph + 12, "p_paddr")? as u64,
                r.u32(ph + 16, "p_filesz")? as u64,
                r.u32(ph + 20, "p_memsz")? as u64,
            )
        };
        match p_type {
            1 => {
                if filesz > memsz {
                    return Err(LoadError::BadSegment {
                        index: i as usize,
                        paddr,
                        end: paddr.saturating_add(memsz),
                        why: "has more file bytes than memory bytes",
                    });
                }
                r.bytes(offset, filesz, &format!("segment {i}'s file bytes"))?;
                segments.push(Segment {
                    paddr,
                    offset,
                    filesz,
                    memsz,
                });
            }
            4 => {
                let notes = r.bytes(offset, filesz, &format!("note segment {i}"))?;
                if entry.is_none() {
                    entry = find_pvh_note(notes);
                }
            }
            _ => {}
        }
    }
    let entry = entry.ok_or(LoadError::NotPvh)?;
    let inside = segments
        .iter()
        .any(|s| (s.paddr..s.paddr.saturating_add(s.memsz)).contains(&(entry as u64)));
    if !inside {
        return Err(LoadError::EntryOutside(entry as u64));
    }
    Ok(PvhImage { entry, segments })
}

/// Walk ELF notes (4-byte aligned name and descriptor) for Xen's PHYS32_ENTRY.
fn find_pvh_note(notes: &[u8]) -> Option<u32> {
    let r = Reader { b: notes, le: true };
    let mut off = 0u64;
    while off + 12 <= notes.len() as u64 {
        let namesz = r.u32(off, "").ok()? as u64;
        let descsz = r.u32(off + 4, "").ok()? as u64;
        let kind = r.u32(off + 8, "").ok()?;
        let name_off = off + 12;
        let desc_off = name_off.checked_add(namesz.next_multiple_of(4))?;
        let name = r.bytes(name_off, namesz, "").ok()?;
        let desc = r.bytes(desc_off, descsz, "").ok()?;
        if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4 {
            return Some(u32::from_le_bytes([desc[0], desc[1], desc[2], desc[3]]));
        }
        off = desc_off.checked_add(descsz.next_multiple_of(4))?;
    }
    None
}

/// Copy the kernel's segments into guest memory of `ram_size` bytes.
pub fn load(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    elf: &[u8],
    img: &PvhImage,
) -> Result<(), LoadError> {
    for (index, s) in img.segments.iter().enumerate() {
        let end = s.paddr.checked_add(s.memsz);
        let bad = |why| LoadError::BadSegment {
            index,
            paddr: s.paddr,
            end: end.unwrap_or(u64::MAX),
            why,
        };
        let end = end.ok_or_else(|| bad("wraps the address space"))?;
        if end > ram_size {
            return Err(bad("does not fit in guest RAM"));
        }
        if s.paddr < BOOT_INFO_END && s.memsz > 0 {
            return Err(bad("overlaps the boot information below 0x8000"));
        }
        let file = &elf[s.offset as usize..(s.offset + s.filesz) as usize];
        mem.write_slice(file, GuestAddress(s.paddr))
            .map_err(|e| LoadError::Memory(e.to_string()))?;
        let zeros = vec![0u8; 1 << 16];
        let mut at = s.paddr + s.filesz;
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            mem.write_slice(&zeros[..n], GuestAddress(at))
                .map_err(|e| LoadError::Memory(e.to_string()))?;
            at += n as u64;
        }
    }
    Ok(())
}

/// The E820-style memory map given to the guest.
pub fn memory_map(ram_size: u64) -> Vec<(u64, u64, u32)> {
    vec![
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x10_0000, ram_size.saturating_sub(0x10_0000), 1),
    ]
}

/// Write `hvm_start_info` (version 1), the memory map and the command line.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    cmdline: &str,
) -> Result<(), LoadError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong(cmdline.len()));
    }
    let map = memory_map(ram_size);
    let mut si = [0u8; 56];
    si[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
    si[4..8].copy_from_slice(&1u32.to_le_bytes());
    si[24..32].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
    si[40..48].copy_from_slice(&MEMMAP_ADDR.to_le_bytes());
    si[48..52].copy_from_slice(&(map.len() as u32).to_le_bytes());
    let mut mm = Vec::new();
    for (addr, size, kind) in map {
        mm.extend_from_slice(&addr.to_le_bytes());
        mm.extend_from_slice(&size.to_le_bytes());
        mm.extend_from_slice(&kind.to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
    }
    let mut cl = cmdline.as_bytes().to_vec();
    cl.push(0);
    let w = |b: &[u8], a: u64| {
        mem.write_slice(b, GuestAddress(a))
            .map_err(|e| LoadError::Memory(e.to_string()))
    };
    w(&si, START_INFO_ADDR)?;
    w(&mm, MEMMAP_ADDR)?;
    w(&cl, CMDLINE_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD and, optionally, a PVH note.
    pub(crate) fn tiny_elf(with_note: bool, entry: u32) -> Vec<u8> {
        let mut e = vec![0u8; 0x200];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes());
        e[18..20].copy_from_slice(&62u16.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&(1 + with_note as u16).to_le_bytes());
        // PT_LOAD: file 0x100..0x180 at 0x100000, 0x1000 in memory.
        let ph = 64;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
        e[ph + 24..ph + 32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&0x80u64.to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&0x1000u64.to_le_bytes());
        for b in &mut e[0x100..0x180] {
            *b = 0xf4; // hlt
        }
        if with_note {
            let ph = 64 + 56;
            e[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
            e[ph + 8..ph + 16].copy_from_slice(&0x180u64.to_le_bytes());
            e[ph + 32..ph + 40].copy_from_slice(&20u64.to_le_bytes());
            let n = 0x180;
            e[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
            e[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
            e[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes());
            e[n + 12..n + 16].copy_from_slice(b"Xen\0");
            e[n + 16..n + 20].copy_from_slice(&entry.to_le_bytes());
        }
        e
    }

    #[test]
    fn finds_the_pvh_entry() {
        let img = parse(&tiny_elf(true, 0x10_0000)).unwrap();
        assert_eq!(img.entry, 0x10_0000);
        assert_eq!(img.segments.len(), 1);
    }

    #[test]
    fn refuses_non_pvh_and_non_elf() {
        assert_eq!(parse(&tiny_elf(false, 0)), Err(LoadError::NotPvh));
        assert_eq!(
            parse(b"MZ\x90\x00 not an elf at all"),
            Err(LoadError::NotElf)
        );
        assert_eq!(
            parse(&tiny_elf(true, 0x20_0000)),
            Err(LoadError::EntryOutside(0x20_0000))
        );
        let e = tiny_elf(true, 0x10_0000);
        assert!(matches!(parse(&e[..100]), Err(LoadError::Truncated(_))));
    }

    #[test]
    fn loads_segments_and_zeroes_bss() {
        let ram = 4 << 20;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap();
        mem.write_slice(&[0xaa; 16], GuestAddress(0x10_0100))
            .unwrap();
        let elf = tiny_elf(true, 0x10_0000);
        load(&mem, ram, &elf, &parse(&elf).unwrap()).unwrap();
        let mut b = [0u8; 2];
        mem.read_slice(&mut b, GuestAddress(0x10_007f)).unwrap();
        assert_eq!(b, [0xf4, 0], "file bytes then zeroed bss");
        write_start_info(&mem, ram, "console=ttyS0").unwrap();
        let magic: u32 = mem.read_obj(GuestAddress(START_INFO_ADDR)).unwrap();
        assert_eq!(magic, START_INFO_MAGIC);
        let n: u32 = mem.read_obj(GuestAddress(START_INFO_ADDR + 48)).unwrap();
        assert_eq!(n, 4);
    }

    #[test]
    fn refuses_segments_outside_ram() {
        let ram = 1 << 20; // the segment at 1 MiB does not fit
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap();
        let elf = tiny_elf(true, 0x10_0000);
        let err = load(&mem, ram, &elf, &parse(&elf).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("does not fit in guest RAM"),
            "{err}"
        );
    }

    #[test]
    fn loads_the_real_guests() {
        for name in guest_images::NAMES {
            let img = parse(guest_images::bytes(name).unwrap()).unwrap();
            assert_eq!(img.entry, 0x10_0000, "{name}");
        }
    }
}
