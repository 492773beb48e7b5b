//! The i8254 programmable interval timer (ports 0x40-0x43) and the
//! PC speaker/gate port 0x61. Channel 0's output drives IRQ 0.
//!
//! Time is passed in by the caller as nanoseconds since machine start, so the
//! model is a pure function of (guest accesses, time): the live environment
//! passes the host's monotonic clock, tests pass whatever they like. Counter
//! arithmetic follows the 8254 data sheet as QEMU's model does.

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;
const NS_PER_S: u64 = 1_000_000_000;

fn ns_to_ticks(ns: u64) -> u64 {
    (ns as u128 * PIT_HZ as u128 / NS_PER_S as u128) as u64
}

fn ticks_to_ns(ticks: u64) -> u64 {
    (ticks as u128 * NS_PER_S as u128).div_ceil(PIT_HZ as u128) as u64
}

#[derive(Debug, Clone, Default)]
struct Channel {
    /// Reload value (0 means 0x10000).
    count: u32,
    latched_count: u16,
    /// Non-zero while a latched count is being read (its rw mode).
    count_latched: u8,
    status_latched: bool,
    status: u8,
    read_state: u8,
    write_state: u8,
    write_latch: u8,
    rw_mode: u8,
    mode: u8,
    bcd: bool,
    gate: bool,
    /// When the count was loaded, ns.
    load_time: u64,
    /// Whether a count has been loaded since the mode was set.
    armed: bool,
}

const RW_LSB: u8 = 1;
const RW_MSB: u8 = 2;
const RW_WORD0: u8 = 3;
const RW_WORD1: u8 = 4;

impl Channel {
    fn elapsed_ticks(&self, now: u64) -> u64 {
        ns_to_ticks(now.saturating_sub(self.load_time))
    }

    fn count(&self, now: u64) -> u16 {
        let d = self.elapsed_ticks(now);
        let c = self.count.max(1) as u64;
        let v = match self.mode {
            0 | 1 | 4 | 5 => (c.wrapping_sub(d)) & 0xffff,
            3 => c - ((2 * d) % c),
            _ => c - (d % c),
        };
        v as u16
    }

    fn out(&self, now: u64) -> bool {
        let d = self.elapsed_ticks(now);
        let c = self.count.max(1) as u64;
        match self.mode {
            0 => d >= c,
            1 => d < c,
            2 => d % c != 0 || d == 0,
            3 => d % c < c.div_ceil(2),
            _ => d == c,
        }
    }

    fn load(&mut self, val: u32, now: u64) {
        self.count = if val == 0 { 0x10000 } else { val };
        self.load_time = now;
        self.armed = true;
    }

    fn period_ns(&self) -> u64 {
        ticks_to_ns(self.count.max(1) as u64)
    }
}

/// The PIT.
#[derive(Debug, Clone)]
pub struct Pit {
    ch: [Channel; 3],
    /// Port 0x61 bits 0 (gate 2) and 1 (speaker data).
    port61: u8,
    /// Next time channel 0 raises IRQ 0, if it is counting in a mode that does.
    next_irq: Option<u64>,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// Power-on state: every channel in mode 0 with no count loaded.
    pub fn new() -> Self {
        let mut ch: [Channel; 3] = Default::default();
        for c in &mut ch {
            c.gate = true;
            c.count = 0x10000;
        }
        ch[2].gate = false;
        Pit {
            ch,
            port61: 0,
            next_irq: None,
        }
    }

    /// Whether the PIT (or port 0x61) answers `port`.
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | 0x61)
    }

    /// The next time (ns) channel 0 will raise IRQ 0, if any.
    pub fn next_irq_time(&self) -> Option<u64> {
        self.next_irq
    }

    /// Advance to `now`: how many IRQ 0 edges fell due since the last call
    /// (several when the host was late; the PIC latches one edge, so callers
    /// pulse once when this is non-zero, as the real hardware would lose them).
    pub fn advance(&mut self, now: u64) -> u64 {
        let Some(next) = self.next_irq else { return 0 };
        if now < next {
            return 0;
        }
        let c = &self.ch[0];
        match c.mode {
            2 | 3 => {
                let period = c.period_ns().max(1);
                let missed = (now - next) / period + 1;
                self.next_irq = Some(next + missed * period);
                missed
            }
            _ => {
                // One-shot modes: one edge at terminal count.
                self.next_irq = None;
                1
            }
        }
    }

    fn schedule_irq(&mut self) {
        let c = &self.ch[0];
        self.next_irq = if !c.armed {
            None
        } else {
            match c.mode {
                2 | 3 => Some(c.load_time + c.period_ns()),
                0 | 4 => Some(c.load_time + ticks_to_ns(c.count as u64)),
                _ => None,
            }
        };
    }

    /// A port read at time `now`.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        if port == 0x61 {
            let refresh = ((now / 15_085) & 1) as u8;
            let out2 = self.ch[2].gate && self.ch[2].armed && self.ch[2].out(now);
            return (self.port61 & 3) | refresh << 4 | (out2 as u8) << 5;
        }
        let idx = (port & 3) as usize;
        if idx == 3 {
            return 0xff;
        }
        let c = &mut self.ch[idx];
        if c.status_latched {
            c.status_latched = false;
            return c.status;
        }
        if c.count_latched != 0 {
            return match c.count_latched {
                RW_LSB => {
                    c.count_latched = 0;
                    c.latched_count as u8
                }
                RW_MSB => {
                    c.count_latched = 0;
                    (c.latched_count >> 8) as u8
                }
                _ => {
                    c.count_latched = RW_MSB;
                    c.latched_count as u8
                }
            };
        }
        let count = c.count(now);
        match c.read_state {
            RW_LSB => count as u8,
            RW_MSB => (count >> 8) as u8,
            RW_WORD0 => {
                c.read_state = RW_WORD1;
                count as u8
            }
            _ => {
                c.read_state = RW_WORD0;
                (count >> 8) as u8
            }
        }
    }

    /// A port write at time `now`.
    pub fn write(&mut self, port: u16, val: u8, now: u64) {
        if port == 0x61 {
            self.port61 = val & 3;
            let gate = val & 1 != 0;
            let c = &mut self.ch[2];
            if gate && !c.gate {
                // A rising gate restarts modes 1, 2, 3 and 5.
                c.load_time = now;
            }
            c.gate = gate;
            return;
        }
        let idx = (port & 3) as usize;
        if idx == 3 {
            let sel = (val >> 6) as usize;
            if sel == 3 {
                // Read-back command.
                for i in 0..3 {
                    if val & (2 << i) == 0 {
                        continue;
                    }
                    let out = self.ch[i].out(now);
                    let c = &mut self.ch[i];
                    if val & 0x20 == 0 && c.count_latched == 0 {
                        c.latched_count = c.count(now);
                        c.count_latched = c.rw_mode;
                    }
                    if val & 0x10 == 0 && !c.status_latched {
                        c.status = (out as u8) << 7 | c.rw_mode << 4 | c.mode << 1 | c.bcd as u8;
                        c.status_latched = true;
                    }
                }
                return;
            }
            let c = &mut self.ch[sel];
            let access = (val >> 4) & 3;
            if access == 0 {
                // Counter latch.
                if c.count_latched == 0 {
                    c.latched_count = c.count(now);
                    c.count_latched = c.rw_mode;
                }
            } else {
                c.rw_mode = access;
                c.read_state = access;
                c.write_state = access;
                let mode = (val >> 1) & 7;
                c.mode = if mode >= 6 { mode - 4 } else { mode };
                c.bcd = val & 1 != 0;
                c.armed = false;
                if sel == 0 {
                    self.next_irq = None;
                }
            }
            return;
        }
        let c = &mut self.ch[idx];
        match c.write_state {
            RW_LSB => c.load(val as u32, now),
            RW_MSB => c.load((val as u32) << 8, now),
            RW_WORD0 => {
                c.write_latch = val;
                c.write_state = RW_WORD1;
            }
            _ => {
                let v = c.write_latch as u32 | (val as u32) << 8;
                c.load(v, now);
                c.write_state = RW_WORD0;
            }
        }
        if idx == 0 && c.armed {
            self.schedule_irq();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periodic(pit: &mut Pit, divisor: u16, now: u64) {
        pit.write(0x43, 0x34, now);
        pit.write(0x40, divisor as u8, now);
        pit.write(0x40, (divisor >> 8) as u8, now);
    }

    #[test]
    fn rate_generator_ticks_at_its_period() {
        let mut pit = Pit::new();
        assert_eq!(pit.next_irq_time(), None);
        periodic(&mut pit, 11932, 0); // ~100 Hz
        let first = pit.next_irq_time().unwrap();
        assert!((9_990_000..10_010_000).contains(&first), "{first}");
        assert_eq!(pit.advance(first - 1), 0);
        assert_eq!(pit.advance(first), 1);
        // Half a second later: the period is 10.00015 ms, so 49 more edges
        // fell due (the 50th is 7.5 us away); one call reports them all.
        let n = pit.advance(first + 500_000_000);
        assert_eq!(n, 49);
        assert!(pit.next_irq_time().unwrap() > first + 500_000_000);
    }

    #[test]
    fn latched_count_counts_down() {
        let mut pit = Pit::new();
        periodic(&mut pit, 10000, 0);
        // 1 ms = 1193 ticks.
        pit.write(0x43, 0x00, 1_000_000);
        let lo = pit.read(0x40, 5_000_000);
        let hi = pit.read(0x40, 5_000_000);
        let v = u16::from_le_bytes([lo, hi]);
        assert_eq!(v, 10000 - 1193);
    }

    #[test]
    fn one_shot_mode_fires_once() {
        let mut pit = Pit::new();
        pit.write(0x43, 0x30, 0);
        pit.write(0x40, 0xe8, 0);
        pit.write(0x40, 0x03, 0); // 1000 ticks
        let t = pit.next_irq_time().unwrap();
        assert_eq!(pit.advance(t), 1);
        assert_eq!(pit.next_irq_time(), None);
        assert_eq!(pit.advance(t * 10), 0);
    }

    #[test]
    fn readback_status() {
        let mut pit = Pit::new();
        periodic(&mut pit, 100, 0);
        pit.write(0x43, 0xe2, 0); // latch status of channel 0
        assert_eq!(pit.read(0x40, 0) & 0x3f, 0x34);
    }

    #[test]
    fn channel2_gate_via_port_61() {
        let mut pit = Pit::new();
        pit.write(0x43, 0xb0, 0); // ch2 mode 0
        pit.write(0x42, 0x10, 0);
        pit.write(0x42, 0x00, 0); // 16 ticks
        pit.write(0x61, 1, 0);
        assert_eq!(pit.read(0x61, 0) & 0x20, 0);
        assert_eq!(pit.read(0x61, 1_000_000) & 0x20, 0x20);
    }
}
