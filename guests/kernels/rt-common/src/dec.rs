//! Decimal formatting without `core`'s integer `Display`.
//!
//! `core::fmt`'s decimal integer formatting is compiled (in the precompiled
//! `core`) with PINSRW, an instruction a minimal interpreter may not have;
//! guests print decimal numbers through [`Dec`] instead, which uses only
//! integer arithmetic. Width and zero-padding (`{:02}`) are honoured.

use core::fmt;

/// A number printed in decimal.
#[derive(Debug, Clone, Copy)]
pub struct Dec(pub u64);

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = self.0;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let digits = buf.len() - i;
        let fill = if f.sign_aware_zero_pad() { "0" } else { " " };
        for _ in digits..f.width().unwrap_or(0) {
            f.write_str(fill)?;
        }
        // The bytes are ASCII digits.
        f.write_str(core::str::from_utf8(&buf[i..]).unwrap_or("?"))
    }
}
