//! Entry points shared by the cargo-fuzz targets (vm-monitor/fuzz) and the
//! seeded tests that run them in the normal test suite. Each takes arbitrary
//! bytes and must never panic.

use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::virtio_blk::DiskImage;
use crate::env::Environment;
use crate::live::{DiskTiming, InputFeed, LiveConfig, LiveEnvironment};

/// Guest RAM for device fuzzing: 1 MiB, small enough to be hit by random addresses.
const FUZZ_RAM: usize = 1 << 20;

/// Drive the live device models with an arbitrary stream of guest accesses:
/// port reads and writes of every size, MMIO, queue notifications over guest
/// memory the input also writes, interrupt acknowledgement and idle polls.
pub fn drive_devices(data: &[u8]) {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), FUZZ_RAM)]) else {
        return;
    };
    let mut env = LiveEnvironment::new(
        mem.clone(),
        LiveConfig {
            serial_out: Box::new(std::io::sink()),
            input: Some(InputFeed::from_bytes(b"fuzz input\n")),
            disk: Some(DiskImage::zeroed(64)),
        },
    );
    // Completions at the next delivery point, not on a thread: an input
    // must do the same thing every time it is run.
    env.set_disk_timing(DiskTiming::Inline);
    let mut it = data.iter().copied();
    let mut next = || it.next();
    // Ports the devices answer, so random accesses hit them often.
    const PORTS: [u16; 16] = [
        0x20, 0x21, 0xa0, 0xa1, 0x40, 0x43, 0x61, 0x70, 0x71, 0x3f8, 0x3f9, 0x3fd, 0xcf8, 0xcfc,
        0xc010, 0xc012,
    ];
    while let Some(op) = next() {
        let size = [1u8, 2, 4][(op >> 6) as usize % 3];
        let port = match next() {
            Some(b) if b & 0x80 != 0 => PORTS[(b & 0xf) as usize],
            Some(b) => 0xc000 | (b as u16 & 0x3f),
            None => return,
        };
        let value = u32::from_le_bytes([
            next().unwrap_or(0),
            next().unwrap_or(0),
            next().unwrap_or(0),
            next().unwrap_or(0),
        ]);
        let r = match op & 0x7 {
            0 | 1 => env.port_in(port, size).map(drop),
            2 | 3 => env.port_out(port, size, value),
            4 => {
                // Scribble guest memory (rings, descriptors) at a chosen spot.
                let gpa = (value as u64) % FUZZ_RAM as u64;
                let bytes = [next().unwrap_or(0), next().unwrap_or(0)];
                let _ = mem.write_slice(&bytes, GuestAddress(gpa));
                Ok(())
            }
            5 => env.mmio_read(value as u64 | 0xfee0_0000, size).map(drop),
            6 => {
                let _ = env.interrupt_waiting();
                env.next_deadline();
                Ok(())
            }
            _ => {
                let vcpu = NullVcpu::default();
                let at = crate::env::AsyncPoint::new(&vcpu, 0, op & 8 != 0);
                // Apply DMA the way the machine does.
                for _ in 0..64 {
                    match env.next_async(&at) {
                        Ok(Some(crate::env::AsyncInput::DmaWrite { gpa, data })) => {
                            let _ = mem.write_slice(&data, GuestAddress(gpa));
                        }
                        _ => break,
                    }
                }
                let _ = env.idle(Some(Instant::now()));
                Ok(())
            }
        };
        if r.is_err() {
            return;
        }
    }
}

/// Parse and load arbitrary bytes as a PVH kernel.
pub fn load_kernel(data: &[u8]) {
    if let Ok(img) = crate::loader::parse(data) {
        if let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]) {
            let _ = crate::loader::load(&mem, 4 << 20, data, &img);
        }
    }
}

/// A vCPU that never runs, for [`crate::env::AsyncPoint`] outside a machine.
#[derive(Default)]
pub(crate) struct NullVcpu {
    controls: vcpu::ExecControls,
}

struct NoKick;
impl vcpu::Kicker for NoKick {
    fn kick(&self) {}
}

impl vcpu::Vcpu for NullVcpu {
    fn backend(&self) -> &'static str {
        "null"
    }
    fn run(&mut self) -> Result<vcpu::VmExit, vcpu::VcpuError> {
        Err(self.unsupported("run"))
    }
    fn complete(&mut self, _: vcpu::Completion) -> Result<(), vcpu::VcpuError> {
        Err(self.unsupported("complete"))
    }
    fn regs(&self) -> Result<vcpu::Regs, vcpu::VcpuError> {
        Ok(vcpu::Regs::default())
    }
    fn set_regs(&mut self, _: &vcpu::Regs) -> Result<(), vcpu::VcpuError> {
        Ok(())
    }
    fn special_regs(&self) -> Result<vcpu::SpecialRegs, vcpu::VcpuError> {
        Ok(vcpu::SpecialRegs::default())
    }
    fn set_special_regs(&mut self, _: &vcpu::SpecialRegs) -> Result<(), vcpu::VcpuError> {
        Ok(())
    }
    fn fpu(&self) -> Result<vcpu::FpuState, vcpu::VcpuError> {
        Ok(vcpu::FpuState::default())
    }
    fn set_fpu(&mut self, _: &vcpu::FpuState) -> Result<(), vcpu::VcpuError> {
        Ok(())
    }
    fn msr(&mut self, _: u32) -> Result<u64, vcpu::VcpuError> {
        Ok(0)
    }
    fn set_msr(&mut self, _: u32, _: u64) -> Result<(), vcpu::VcpuError> {
        Ok(())
    }
    fn controls(&self) -> &vcpu::ExecControls {
        &self.controls
    }
    fn set_controls(&mut self, c: vcpu::ExecControls) -> Result<(), vcpu::VcpuError> {
        self.controls = c;
        Ok(())
    }
    fn interruptible(&self) -> Result<bool, vcpu::VcpuError> {
        Ok(true)
    }
    fn inject(&mut self, _: vcpu::Event) -> Result<(), vcpu::VcpuError> {
        Ok(())
    }
    fn kicker(&self) -> std::sync::Arc<dyn vcpu::Kicker> {
        std::sync::Arc::new(NoKick)
    }
    fn retired(&self) -> Option<vcpu::RetiredCounts> {
        None
    }
    fn host_pmu(&mut self) -> Option<&mut dyn vcpu::PmuBank> {
        None
    }
}

impl NullVcpu {
    fn unsupported(&self, what: &str) -> vcpu::VcpuError {
        vcpu::VcpuError::Unsupported {
            backend: "null",
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// The fuzz targets over a seeded random corpus: a few thousand inputs
    /// in the normal test run (cargo fuzz explores further).
    #[test]
    fn device_fuzz_target_survives_a_seeded_corpus() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_0001);
        for _ in 0..3000 {
            let len = rng.random_range(0..512);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            super::drive_devices(&data);
        }
    }

    #[test]
    fn loader_fuzz_target_survives_a_seeded_corpus() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_0002);
        let real = guest_images::bytes("hello").unwrap();
        for i in 0..3000 {
            // Mutate a real kernel (deep paths) or use random bytes (shallow).
            let data: Vec<u8> = if i % 2 == 0 {
                let mut d = real[..real.len().min(0x2000)].to_vec();
                for _ in 0..rng.random_range(1..16) {
                    let at = rng.random_range(0..d.len());
                    d[at] = rng.random();
                }
                d
            } else {
                let len = rng.random_range(0..256);
                let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if d.len() >= 6 {
                    d[..6].copy_from_slice(b"\x7fELF\x02\x01");
                }
                d
            };
            super::load_kernel(&data);
        }
    }
}
