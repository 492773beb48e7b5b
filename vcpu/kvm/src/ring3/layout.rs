//! The ring-3 oracle's guest memory layout. Guest-virtual addresses equal
//! guest-physical ones (identity paging), so a second implementation (the soft
//! vCPU's differential test) can place the same bytes at the same addresses.
//!
//! ```text
//! 0x0000_1000  GDT            supervisor, read-only to ring 3 (#PF on access)
//! 0x0000_2000  IDT            supervisor
//! 0x0000_3000  TSS            supervisor (RSP0 = RING0_STACK_TOP, I/O bitmap allows port 0xF0 only)
//! 0x0000_4000  fault stubs    supervisor code, 4 bytes per vector
//! 0x0000_5000  ring-0 stack   supervisor, 8 KiB, top 0x7000
//! 0x0000_8000  page tables    PML4, PDPT, PD, PT0 (0-2 MiB), PT1 (2-4 MiB)
//! 0x0010_0000  CODE           user, read + execute, 64 KiB
//! 0x0020_0000  DATA           user, read + write, no-execute, 64 KiB
//! 0x0030_0000  STACK          user, read + write, no-execute, 16 KiB (top 0x0030_4000)
//! ```
//!
//! Every other address below 4 MiB is unmapped (not present), as is
//! everything above: a ring-3 access there is a #PF with the architectural
//! error code. Supervisor pages are present, so ring-3 accesses to them are
//! protection #PFs (error code bit 0 set).
//!
//! Segments: CS = 0x23 (64-bit, DPL 3), SS = DS = ES = FS = GS = 0x1B (DPL 3
//! data), FS/GS base 0. CR0 = PE MP ET NE WP PG (no AM), CR4 = PAE OSFXSR
//! OSXMMEXCPT, EFER = LME LMA NXE (no SCE: SYSCALL is #UD). IDT gates are
//! 64-bit interrupt gates to CS 0x08, DPL 0 except vectors 3 (#BP) and 4 (#OF),
//! which are DPL 3 as in Linux so INT3/INTO raise #BP/#OF; INT n for any
//! other n from ring 3 is #GP(n*8+2). RFLAGS.IOPL is 0 and the TSS I/O
//! permission bitmap allows only [`END_PORT`], so the terminator's `out` is
//! legal in ring 3 and any other I/O instruction in a block is #GP(0), as on
//! bare metal.

/// Size of guest-physical memory.
pub const GUEST_MEM_SIZE: u64 = 4 << 20;
/// Global descriptor table.
pub const GDT_BASE: u64 = 0x1000;
/// Interrupt descriptor table (256 16-byte gates).
pub const IDT_BASE: u64 = 0x2000;
/// 64-bit task-state segment.
pub const TSS_BASE: u64 = 0x3000;
/// TSS limit: the 104-byte 64-bit TSS, a 32-byte I/O permission bitmap for
/// ports 0..=0xFF (only [`END_PORT`] allowed) and the terminating 0xFF byte.
pub const TSS_LIMIT: u32 = 104 + 32;
/// Fault stubs: vector v's handler is at `STUBS_BASE + v * STUB_SIZE`.
pub const STUBS_BASE: u64 = 0x4000;
/// Bytes per fault stub (`out FAULT_PORT, al; hlt; nop`).
pub const STUB_SIZE: u64 = 4;
/// Top of the ring-0 stack exceptions are delivered on (TSS.RSP0).
pub const RING0_STACK_TOP: u64 = 0x7000;
/// PML4 (CR3).
pub const PML4_BASE: u64 = 0x8000;
/// First address of the block's code; execution starts here.
pub const CODE_BASE: u64 = 0x10_0000;
/// Bytes of user code space (the block plus its 2-byte terminator must fit).
pub const CODE_SIZE: u64 = 0x1_0000;
/// User data area.
pub const DATA_BASE: u64 = 0x20_0000;
/// Bytes of user data.
pub const DATA_SIZE: u64 = 0x1_0000;
/// User stack area (lowest address).
pub const STACK_BASE: u64 = 0x30_0000;
/// Bytes of user stack.
pub const STACK_SIZE: u64 = 0x4000;
/// One past the highest stack byte: a good initial RSP.
pub const STACK_TOP: u64 = STACK_BASE + STACK_SIZE;
/// Page size of every mapping.
pub const PAGE_SIZE: u64 = 0x1000;

/// Port of the `out imm8, al` appended after the block's code.
pub const END_PORT: u16 = 0xF0;
/// Port of the `out imm8, al` in every fault stub.
pub const FAULT_PORT: u16 = 0xF1;
/// The byte filling the code area after the terminator: HLT, which is #GP(0)
/// in ring 3, so a jump past the block ends deterministically.
pub const CODE_FILL: u8 = 0xF4;

/// Ring-0 64-bit code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Ring-0 data selector.
pub const KERNEL_DS: u16 = 0x10;
/// Ring-3 data selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// Ring-3 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// Task register selector.
pub const TSS_SEL: u16 = 0x28;

/// CR0 of the oracle: PE MP ET NE WP PG.
pub const CR0: u64 = 0x8001_0033;
/// CR4 of the oracle: PAE OSFXSR OSXMMEXCPT.
pub const CR4: u64 = 0x620;
/// EFER of the oracle: LME LMA NXE.
pub const EFER: u64 = 0xD00;

/// The RFLAGS bits a block may choose: CF PF AF ZF SF DF OF. Every other
/// bit starts as in the architecture's reset value (bit 1 set, IF = 0, IOPL 0).
pub const RFLAGS_SETTABLE: u64 = 0x0CD5;

/// Access rights of a user-visible page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAccess {
    /// Read and execute (the code area).
    ReadExecute,
    /// Read and write, no execute (data and stack).
    ReadWrite,
}

/// What ring 3 may do at `addr`: `None` for supervisor or unmapped addresses.
pub fn user_access(addr: u64) -> Option<UserAccess> {
    if (CODE_BASE..CODE_BASE + CODE_SIZE).contains(&addr) {
        Some(UserAccess::ReadExecute)
    } else if (DATA_BASE..DATA_BASE + DATA_SIZE).contains(&addr)
        || (STACK_BASE..STACK_TOP).contains(&addr)
    {
        Some(UserAccess::ReadWrite)
    } else {
        None
    }
}

/// The user-writable pages (data, then stack), in address order: the pages
/// whose changes a run reports.
pub fn writable_pages() -> impl Iterator<Item = u64> {
    (DATA_BASE..DATA_BASE + DATA_SIZE)
        .step_by(PAGE_SIZE as usize)
        .chain((STACK_BASE..STACK_TOP).step_by(PAGE_SIZE as usize))
}

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const ACCESSED: u64 = 0x20;
const DIRTY: u64 = 0x40;
const NX: u64 = 1 << 63;

/// The system structures (GDT, IDT, TSS, stubs, page tables) as
/// (guest-physical address, bytes) pieces to copy into guest memory.
pub fn system_image() -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();

    // GDT: null, kernel code, kernel data, user data, user code, TSS (16 bytes).
    // Accessed bits are preset so the CPU never writes the table.
    let tss_limit = TSS_LIMIT as u64;
    let tss_lo = (tss_limit & 0xffff)
        | ((TSS_BASE & 0xff_ffff) << 16)
        | (0x8B << 40) // present, DPL 0, type 11 (busy 64-bit TSS)
        | (((TSS_BASE >> 24) & 0xff) << 56);
    let tss_hi = TSS_BASE >> 32;
    let gdt: [u64; 7] = [
        0,
        0x00AF_9B00_0000_FFFF,
        0x00CF_9300_0000_FFFF,
        0x00CF_F300_0000_FFFF,
        0x00AF_FB00_0000_FFFF,
        tss_lo,
        tss_hi,
    ];
    out.push((GDT_BASE, gdt.iter().flat_map(|d| d.to_le_bytes()).collect()));

    // IDT: every vector to its stub.
    let mut idt = Vec::with_capacity(256 * 16);
    for v in 0..256u64 {
        let off = STUBS_BASE + v * STUB_SIZE;
        let dpl: u64 = if v == 3 || v == 4 { 3 } else { 0 };
        let lo = (off & 0xffff)
            | ((KERNEL_CS as u64) << 16)
            | ((0x8E | (dpl << 5)) << 40)
            | (((off >> 16) & 0xffff) << 48);
        let hi = off >> 32;
        idt.extend_from_slice(&lo.to_le_bytes());
        idt.extend_from_slice(&hi.to_le_bytes());
    }
    out.push((IDT_BASE, idt));

    // TSS: RSP0 at offset 4; an I/O permission bitmap at offset 104 that
    // allows END_PORT alone (bit clear = allowed), plus the 0xFF end byte.
    let mut tss = vec![0u8; TSS_LIMIT as usize + 1];
    tss[4..12].copy_from_slice(&RING0_STACK_TOP.to_le_bytes());
    tss[102..104].copy_from_slice(&104u16.to_le_bytes());
    tss[104..].fill(0xFF);
    tss[104 + END_PORT as usize / 8] &= !(1 << (END_PORT % 8));
    out.push((TSS_BASE, tss));

    // Stubs: out FAULT_PORT, al; hlt; nop.
    let stub = [0xE6, FAULT_PORT as u8, 0xF4, 0x90];
    out.push((STUBS_BASE, stub.repeat(256)));

    // Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] -> PT0, PD[1] -> PT1.
    let pdpt = PML4_BASE + PAGE_SIZE;
    let pd = pdpt + PAGE_SIZE;
    let pt0 = pd + PAGE_SIZE;
    let pt1 = pt0 + PAGE_SIZE;
    let table_flags = P | RW | US | ACCESSED;
    let mut tables = vec![0u8; 5 * PAGE_SIZE as usize];
    let mut put = |table: u64, index: u64, entry: u64| {
        let at = (table - PML4_BASE + index * 8) as usize;
        tables[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    };
    put(PML4_BASE, 0, pdpt | table_flags);
    put(pdpt, 0, pd | table_flags);
    put(pd, 0, pt0 | table_flags);
    put(pd, 1, pt1 | table_flags);
    for page in (0..GUEST_MEM_SIZE).step_by(PAGE_SIZE as usize) {
        let supervisor = (GDT_BASE..PML4_BASE + 5 * PAGE_SIZE).contains(&page);
        let flags = match user_access(page) {
            Some(UserAccess::ReadExecute) => P | US | ACCESSED,
            Some(UserAccess::ReadWrite) => P | RW | US | ACCESSED | DIRTY | NX,
            None if supervisor => P | RW | ACCESSED | DIRTY,
            None => continue,
        };
        let (table, index) = if page < 0x20_0000 {
            (pt0, page / PAGE_SIZE)
        } else {
            (pt1, (page - 0x20_0000) / PAGE_SIZE)
        };
        put(table, index, page | flags);
    }
    out.push((PML4_BASE, tables));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_do_not_overlap_and_fit() {
        const {
            assert!(PML4_BASE + 5 * PAGE_SIZE <= CODE_BASE);
            assert!(CODE_BASE + CODE_SIZE <= DATA_BASE);
            assert!(DATA_BASE + DATA_SIZE <= STACK_BASE);
            assert!(STACK_TOP <= GUEST_MEM_SIZE);
        }
        assert_eq!(
            writable_pages().count() as u64,
            (DATA_SIZE + STACK_SIZE) / PAGE_SIZE
        );
    }

    #[test]
    fn image_pieces_stay_inside_supervisor_area() {
        for (addr, bytes) in system_image() {
            assert!(addr >= GDT_BASE && addr + bytes.len() as u64 <= CODE_BASE);
            assert_eq!(user_access(addr), None);
        }
    }
}
