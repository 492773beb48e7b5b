//! The CAS Motion test guests, built from guests/kernels by this crate's
//! build script and embedded in it.
//!
//! ```
//! let elf = guest_images::bytes("hello").unwrap();
//! assert_eq!(&elf[..4], b"\x7fELF");
//! assert!(guest_images::path("hello").unwrap().exists());
//! ```

pub mod samples;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The guests' names: hello, timer, disk, entropy, compute, serial-echo,
/// and the ring-3 variants hello-r3, disk-r3, serial-echo-r3, compute-r3,
/// entropy-r3 (the same sources built against the user-mode runtime `urt`, so that they
/// also run where KVM emulates ring-0 code; see guests/README.md), and
/// faults-r3, which tests that runtime's exception path.
pub const NAMES: &[&str] = generated::NAMES;

/// The ELF image of guest `name`, if there is such a guest.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    generated::IMAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// The path of guest `name`'s ELF file in the build's output directory
/// (for tools such as QEMU that want a file), if there is such a guest.
pub fn path(name: &str) -> Option<std::path::PathBuf> {
    NAMES
        .contains(&name)
        .then(|| std::path::Path::new(generated::DIR).join(format!("{name}.elf")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_is_a_pvh_elf() {
        for name in NAMES {
            let elf = bytes(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(&elf[..4], b"\x7fELF", "{name}");
            assert_eq!(elf[4], 2, "{name} is ELF64");
            // The PVH note: name "Xen", type 18.
            let note = elf.windows(16).any(|w| {
                w[0..4] == 4u32.to_le_bytes()
                    && w[8..12] == 18u32.to_le_bytes()
                    && &w[12..16] == b"Xen\0"
            });
            assert!(note, "{name} has the PVH note");
            assert_eq!(std::fs::read(path(name).unwrap()).unwrap(), elf);
        }
    }

    #[test]
    fn unknown_guest_is_none() {
        assert!(bytes("nope").is_none());
        assert!(path("nope").is_none());
    }
}
