//! The `motion` binary, for end-to-end tests that run it.
//!
//! Cargo sets `CARGO_BIN_EXE_motion` only for tests of the package that owns
//! the binary, and these tests live in `motion-e2e`. So the first call runs
//! `cargo build -p motion --bin motion` with this test's own target directory
//! and profile (taken from where the test executable sits:
//! `<target>/<profile>/deps/<test>`), and returns `<target>/<profile>/motion`.
//! Building every time, not only when the file is missing, means a test never
//! runs a stale binary; Cargo makes it a no-op when nothing changed.
//!
//! Set `MOTION_BIN=/path/to/motion` to test a binary built elsewhere instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path to an up-to-date `motion` binary. Panics with Cargo's output if the
/// build fails (a test cannot continue without it).
pub fn motion_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MOTION_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("path of the test executable");
        // <target>/<profile>/deps/<test-exe>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable is in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("profile dir has a parent");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("cannot tell the profile from {}", profile_dir.display()),
        };
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("cargo"));
        let out = Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "-p",
                "motion",
                "--bin",
                "motion",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", cargo.display()));
        assert!(
            out.status.success(),
            "cargo build -p motion failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join(format!("motion{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "cargo built motion but {} is not there",
            bin.display()
        );
        bin
    })
}

/// `motion run` with `args`, stdin closed; its whole output.
pub fn motion_run(args: &[&str]) -> std::process::Output {
    Command::new(motion_bin())
        .arg("run")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run motion")
}
