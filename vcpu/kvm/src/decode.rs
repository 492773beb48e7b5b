//! Just enough x86 decoding to describe an I/O instruction KVM exited on:
//! its length and the string/REP/immediate bits of the VT-x qualification,
//! which KVM's I/O exit does not carry.

/// What an I/O instruction looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoInsn {
    /// Instruction length in bytes.
    pub len: u8,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefixed (F3 or F2).
    pub rep: bool,
    /// Port given as an immediate.
    pub immediate: bool,
}

/// Decode `bytes` (from the instruction's first byte) as IN/OUT/INS/OUTS;
/// `None` if they are not one. `long_mode` is CS.L (REX prefixes exist).
pub fn decode_io(bytes: &[u8], long_mode: bool) -> Option<IoInsn> {
    let mut rep = false;
    for (i, &b) in bytes.iter().enumerate().take(15) {
        match b {
            0xF3 | 0xF2 => rep = true,
            0x66 | 0x67 | 0xF0 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 => {}
            0x40..=0x4F if long_mode => {}
            _ => {
                let (string, immediate, extra) = match b {
                    0xE4..=0xE7 => (false, true, 1),
                    0xEC..=0xEF => (false, false, 0),
                    0x6C..=0x6F => (true, false, 0),
                    _ => return None,
                };
                let len = i + 1 + extra;
                if len > bytes.len() || len > 15 {
                    return None;
                }
                return Some(IoInsn {
                    len: len as u8,
                    string,
                    rep: rep && string,
                    immediate,
                });
            }
        }
    }
    None
}

/// Find the OUT instruction that ends just before `rip`, given the last
/// three bytes before it (`before[2]` is the byte at `rip - 1`): KVM's
/// emulator has already stepped over it when it exits. Only the plain forms
/// compilers emit are recognised: `[66] EE/EF` with the port in DX and
/// `[66] E6/E7 imm8`. `opsize16` is whether the code's default operand size
/// is 16 bits (so 16-bit accesses need no 66 prefix and 32-bit ones do).
/// Returns the instruction length.
pub fn out_ending_at(before: [u8; 3], port: u16, size: u8, dx: u16, opsize16: bool) -> Option<u8> {
    let needs_66 = match size {
        1 => false,
        2 => !opsize16,
        4 => opsize16,
        _ => return None,
    };
    let prefix_ok = |at: usize| !needs_66 || (at > 0 && before[at - 1] == 0x66);
    let p = needs_66 as u8;
    let dx_op = if size == 1 { 0xEE } else { 0xEF };
    if before[2] == dx_op && dx == port && prefix_ok(2) {
        return Some(1 + p);
    }
    let imm_op = if size == 1 { 0xE6 } else { 0xE7 };
    if before[1] == imm_op && port < 0x100 && before[2] == port as u8 && prefix_ok(1) {
        return Some(2 + p);
    }
    None
}

/// Decode `bytes` (from the instruction's first byte) as a non-string OUT
/// of `size` bytes to `port` (`dx` is DX, for the forms taking the port from
/// it); `None` if they are anything else. `long_mode` is CS.L, `opsize16`
/// whether the default operand size is 16 bits.
pub fn out_at(
    bytes: &[u8],
    port: u16,
    size: u8,
    dx: u16,
    long_mode: bool,
    opsize16: bool,
) -> Option<IoInsn> {
    let insn = decode_io(bytes, long_mode)?;
    if insn.string {
        return None;
    }
    let prefixes = &bytes[..insn.len as usize - 1 - insn.immediate as usize];
    let op = bytes[prefixes.len()];
    let has_66 = prefixes.contains(&0x66);
    let op_size = match op {
        0xE6 | 0xEE => 1,
        0xE7 | 0xEF if has_66 != opsize16 => 2,
        0xE7 | 0xEF => 4,
        _ => return None, // IN
    };
    let op_port = if insn.immediate {
        bytes[prefixes.len() + 1] as u16
    } else {
        dx
    };
    (op_size == size && op_port == port).then_some(insn)
}

/// The fuzz entry point (`fuzz/fuzz_targets/decode.rs`): both decoders on
/// arbitrary guest bytes must return, never panic.
pub fn fuzz_decode(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    let _ = decode_io(rest, flags & 1 != 0);
    if rest.len() >= 7 {
        let before = [rest[0], rest[1], rest[2]];
        let port = u16::from_le_bytes([rest[3], rest[4]]);
        let dx = u16::from_le_bytes([rest[5], rest[6]]);
        let _ = out_ending_at(before, port, flags >> 1 & 7, dx, flags & 16 != 0);
        let _ = out_at(
            rest,
            port,
            flags >> 1 & 7,
            dx,
            flags & 1 != 0,
            flags & 16 != 0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_io_form() {
        let io = |len, string, rep, immediate| {
            Some(IoInsn {
                len,
                string,
                rep,
                immediate,
            })
        };
        assert_eq!(decode_io(&[0xE6, 0x80], false), io(2, false, false, true));
        assert_eq!(decode_io(&[0xEC], false), io(1, false, false, false));
        assert_eq!(decode_io(&[0x66, 0xED], false), io(2, false, false, false));
        assert_eq!(decode_io(&[0xF3, 0x6E], false), io(2, true, true, false));
        assert_eq!(
            decode_io(&[0xF3, 0x48, 0x6D], true),
            io(3, true, true, false)
        );
        assert_eq!(decode_io(&[0x6C], false), io(1, true, false, false));
        assert_eq!(decode_io(&[0xF3, 0xEE], false), io(2, false, false, false));
        assert_eq!(
            decode_io(&[0x48, 0xEE], false),
            None,
            "0x48 is DEC outside long mode"
        );
        assert_eq!(decode_io(&[0x90], false), None);
        assert_eq!(decode_io(&[0xE4], false), None, "truncated immediate");
        assert_eq!(decode_io(&[0x66; 20], false), None);
    }

    #[test]
    fn fuzz_target_survives_a_seeded_random_corpus() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x004b_564d);
        let mut buf = Vec::new();
        for _ in 0..5000 {
            let len = rng.random_range(0..24);
            buf.clear();
            // Bias towards prefix and I/O opcode bytes so the decoders' paths are hit.
            for _ in 0..len {
                let b = match rng.random_range(0..4) {
                    0 => [0x66, 0x67, 0xF3, 0xF2, 0x48, 0x2E][rng.random_range(0..6)],
                    1 => [0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6F]
                        [rng.random_range(0..10)],
                    _ => rng.random(),
                };
                buf.push(b);
            }
            fuzz_decode(&buf);
        }
    }

    #[test]
    fn finds_the_out_just_executed() {
        assert_eq!(out_ending_at([0x90, 0xE6, 0x80], 0x80, 1, 0, true), Some(2));
        assert_eq!(
            out_ending_at([0x90, 0x90, 0xEE], 0x3f8, 1, 0x3f8, true),
            Some(1)
        );
        assert_eq!(
            out_ending_at([0x90, 0x90, 0xEE], 0x3f8, 1, 0x3f9, true),
            None,
            "DX mismatch"
        );
        assert_eq!(
            out_ending_at([0x90, 0x66, 0xEF], 0x10, 4, 0x10, true),
            Some(2)
        );
        assert_eq!(
            out_ending_at([0x90, 0x90, 0xEF], 0x10, 4, 0x10, true),
            None,
            "needs 66"
        );
        assert_eq!(out_ending_at([0x66, 0xE7, 0x80], 0x80, 4, 0, true), Some(3));
        assert_eq!(
            out_ending_at([0x90, 0xE7, 0x80], 0x80, 4, 0, false),
            Some(2)
        );
        assert_eq!(out_ending_at([0x90, 0xE6, 0x80], 0x81, 1, 0, true), None);
    }
}
