//! The MC146818 CMOS real-time clock and NVRAM (index 0x70, data 0x71).
//!
//! The time registers show the wall-clock time the caller passes (seconds
//! since the Unix epoch, UTC), in BCD and 24-hour mode as PC firmware sets it
//! up; status A never reports an update in progress. Writes to the time
//! registers are accepted and ignored; the other 114 bytes are plain NVRAM.

/// The CMOS RTC.
#[derive(Debug, Clone)]
pub struct Rtc {
    index: u8,
    nvram: [u8; 128],
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;

impl Rtc {
    /// Power-on state: status A 0x26 (32.768 kHz, 1024 Hz), B 0x02 (24 h, BCD), D valid.
    pub fn new() -> Self {
        let mut nvram = [0u8; 128];
        nvram[REG_A] = 0x26;
        nvram[REG_B] = 0x02;
        nvram[REG_D] = 0x80;
        Rtc { index: 0, nvram }
    }

    /// Whether `port` is the RTC's.
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x70 | 0x71)
    }

    fn encode(&self, v: u32) -> u8 {
        if self.nvram[REG_B] & 4 != 0 {
            v as u8
        } else {
            (((v / 10) << 4) | (v % 10)) as u8
        }
    }

    /// A port read; `unix_time` is the wall clock in seconds.
    pub fn read(&mut self, port: u16, unix_time: u64) -> u8 {
        if port == 0x70 {
            return 0xff;
        }
        let i = (self.index & 0x7f) as usize;
        let days = unix_time / 86_400;
        let secs = unix_time % 86_400;
        let (y, m, d) = civil_from_days(days as i64);
        let hour = (secs / 3600) as u32;
        match i {
            0x00 => self.encode((secs % 60) as u32),
            0x02 => self.encode((secs / 60 % 60) as u32),
            0x04 => {
                if self.nvram[REG_B] & 2 != 0 {
                    self.encode(hour)
                } else {
                    let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
                    self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
                }
            }
            0x06 => self.encode(((days + 4) % 7 + 1) as u32),
            0x07 => self.encode(d),
            0x08 => self.encode(m),
            0x09 => self.encode((y % 100) as u32),
            0x32 => self.encode((y / 100) as u32),
            REG_A => self.nvram[REG_A] & 0x7f,
            REG_C => {
                let v = self.nvram[REG_C];
                self.nvram[REG_C] = 0;
                v
            }
            _ => self.nvram[i],
        }
    }

    /// A port write.
    pub fn write(&mut self, port: u16, val: u8) {
        if port == 0x70 {
            self.index = val;
            return;
        }
        let i = (self.index & 0x7f) as usize;
        match i {
            0x00..=0x09 | 0x32 | REG_C | REG_D => {}
            REG_A => self.nvram[REG_A] = val & 0x7f,
            _ => self.nvram[i] = val,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(rtc: &mut Rtc, i: u8, t: u64) -> u8 {
        rtc.write(0x70, i);
        rtc.read(0x71, t)
    }

    #[test]
    fn shows_the_time_in_bcd() {
        let mut rtc = Rtc::new();
        // 2024-02-29 13:45:07 UTC
        let t = 1_709_214_307;
        assert_eq!(reg(&mut rtc, 0, t), 0x07);
        assert_eq!(reg(&mut rtc, 2, t), 0x45);
        assert_eq!(reg(&mut rtc, 4, t), 0x13);
        assert_eq!(reg(&mut rtc, 7, t), 0x29);
        assert_eq!(reg(&mut rtc, 8, t), 0x02);
        assert_eq!(reg(&mut rtc, 9, t), 0x24);
        assert_eq!(reg(&mut rtc, 0x32, t), 0x20);
        assert_eq!(reg(&mut rtc, 0x0a, t) & 0x80, 0, "no update in progress");
    }

    #[test]
    fn binary_mode_and_nvram() {
        let mut rtc = Rtc::new();
        rtc.write(0x70, 0x0b);
        rtc.write(0x71, 0x06);
        assert_eq!(reg(&mut rtc, 0, 59), 59);
        rtc.write(0x70, 0x40);
        rtc.write(0x71, 0xab);
        assert_eq!(reg(&mut rtc, 0x40, 0), 0xab);
    }

    #[test]
    fn epoch_is_1970_01_01() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
