//! Build the no_std guest kernels (guests/kernels, a workspace of its own
//! with panic = "abort") with a nested cargo, in a target dir under OUT_DIR,
//! and copy each ELF to OUT_DIR/guests/NAME.elf.
//!
//! The nested cargo must not inherit what the outer build sets for *our*
//! compilation: RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS (e.g. coverage or sanitizer
//! flags), CARGO_TARGET_DIR (it would wait on the outer build's lock),
//! CARGO_BUILD_*/CARGO_PROFILE_* overrides, and RUSTC_WORKSPACE_WRAPPER
//! (clippy-driver under `cargo clippy`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The guest binaries: the one list (the crate's `NAMES` is generated from it).
const GUESTS: &[&str] = &[
    "hello",
    "timer",
    "disk",
    "entropy",
    "compute",
    "serial-echo",
    "hello-r3",
    "disk-r3",
    "serial-echo-r3",
    "compute-r3",
    "entropy-r3",
    "faults-r3",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let kernels = manifest
        .join("../kernels")
        .canonicalize()
        .expect("guests/kernels exists");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out.join("kernels-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    for sub in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "rt",
        "rt-common",
        "bins",
        "urt",
        "bins-r3",
    ] {
        println!("cargo:rerun-if-changed={}", kernels.join(sub).display());
    }

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&kernels)
        .args(["build", "--release", "--bins", "--target-dir"])
        .arg(&target_dir);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let inherited_build_setting = key.starts_with("CARGO_")
            && !matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE")
            || key.starts_with("__CARGO")
            || matches!(
                key,
                "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTC_WRAPPER"
            );
        if inherited_build_setting {
            cmd.env_remove(key);
        }
    }
    let output = cmd.output().expect("running cargo for guests/kernels");
    if !output.status.success() {
        panic!(
            "building the guest kernels (guests/kernels) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let dest = out.join("guests");
    std::fs::create_dir_all(&dest).expect("create OUT_DIR/guests");
    let mut table = String::new();
    for name in GUESTS {
        let built = target_dir.join("release").join(name);
        let elf = dest.join(format!("{name}.elf"));
        std::fs::copy(&built, &elf)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", built.display(), elf.display()));
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({elf:?})),\n",
            elf = elf.display().to_string()
        ));
    }
    std::fs::write(
        out.join("guests.rs"),
        format!(
            "/// (name, ELF bytes) of every guest.\npub static IMAGES: &[(&str, &[u8])] = &[\n{table}];\n\
             /// The guests' names, in build order.\npub const NAMES: &[&str] = &{GUESTS:?};\n\
             /// Where the ELF files were written.\npub const DIR: &str = {:?};\n",
            dest.display().to_string()
        ),
    )
    .expect("write guests.rs");
}
