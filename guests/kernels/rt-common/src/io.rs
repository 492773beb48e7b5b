//! Port I/O.

/// Write a byte to a port.
///
/// # Safety
/// Device side effects are the caller's responsibility.
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: port I/O has no memory effects; the caller vouches for the device.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

/// Write a word to a port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn outw(port: u16, v: u16) {
    // SAFETY: as outb.
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    }
}

/// Write a doubleword to a port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: as outb.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

/// Read a byte from a port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as outb.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Read a word from a port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as outb.
    unsafe {
        core::arch::asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Read a doubleword from a port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as outb.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    };
    v
}
