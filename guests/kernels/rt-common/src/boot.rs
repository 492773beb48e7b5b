//! The PVH `hvm_start_info` structure (xen/include/public/arch-x86/hvm/start_info.h).

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// A memory map entry (`hvm_memmap_table_entry`).
#[derive(Debug, Clone, Copy)]
pub struct MemoryRegion {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// E820 type (1 = RAM).
    pub kind: u32,
}

/// What the loader told the guest.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// Physical address of `hvm_start_info` (0 if none was passed).
    pub start_info: u64,
    /// Whether the magic number matched.
    pub magic_ok: bool,
    /// `hvm_start_info.version`.
    pub version: u32,
    /// Physical address of the command line (0 if none).
    pub cmdline: u64,
    /// Physical address of the memory map (version 1 and later).
    pub memmap: u64,
    /// Number of memory map entries.
    pub memmap_entries: u32,
}

impl BootInfo {
    /// Read the structure at physical address `start_info` (identity mapped).
    pub fn parse(start_info: u32) -> Self {
        let base = start_info as u64;
        let mut info = BootInfo {
            start_info: base,
            magic_ok: false,
            version: 0,
            cmdline: 0,
            memmap: 0,
            memmap_entries: 0,
        };
        if base == 0 {
            return info;
        }
        let rd32 = |off: u64| {
            // SAFETY: the low 4 GiB are identity mapped; the loader put the
            // structure here.
            unsafe { core::ptr::read_volatile((base + off) as *const u32) }
        };
        let rd64 = |off: u64| rd32(off) as u64 | (rd32(off + 4) as u64) << 32;
        info.magic_ok = rd32(0) == START_INFO_MAGIC;
        if !info.magic_ok {
            return info;
        }
        info.version = rd32(4);
        info.cmdline = rd64(24);
        if info.version >= 1 {
            info.memmap = rd64(40);
            info.memmap_entries = rd32(48);
        }
        info
    }

    /// The command line, if one was passed and is valid UTF-8.
    pub fn cmdline(&self) -> Option<&'static str> {
        if self.cmdline == 0 || self.cmdline >= 1 << 32 {
            return None;
        }
        let p = self.cmdline as *const u8;
        let mut len = 0;
        // SAFETY: identity-mapped low memory; bounded to 4 KiB.
        while len < 4096 && unsafe { p.add(len).read_volatile() } != 0 {
            len += 1;
        }
        // SAFETY: `len` bytes from `p` were just read.
        let bytes = unsafe { core::slice::from_raw_parts(p, len) };
        core::str::from_utf8(bytes).ok()
    }

    /// Memory map entry `i`.
    pub fn region(&self, i: u32) -> Option<MemoryRegion> {
        if i >= self.memmap_entries || self.memmap == 0 {
            return None;
        }
        let e = self.memmap + i as u64 * 24;
        // SAFETY: identity-mapped low memory written by the loader.
        unsafe {
            Some(MemoryRegion {
                addr: core::ptr::read_volatile(e as *const u64),
                size: core::ptr::read_volatile((e + 8) as *const u64),
                kind: core::ptr::read_volatile((e + 16) as *const u32),
            })
        }
    }

    /// Total bytes of RAM (type 1) in the memory map.
    pub fn ram_bytes(&self) -> u64 {
        (0..self.memmap_entries)
            .filter_map(|i| self.region(i))
            .filter(|r| r.kind == 1)
            .map(|r| r.size)
            .sum()
    }
}
