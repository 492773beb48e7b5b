//! Helpers shared by guests_qemu.rs and hostile_guests.rs (included with
//! `#[path]`): building and running `motion run`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Build the `motion` binary (same profile as this test) and return its path.
pub fn motion_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "-q", "-p", "motion", "--bin", "motion"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p motion failed");
        profile_dir.join("motion")
    })
}

/// `motion run` with `args`; stdin closed.
pub fn motion_run(args: &[&str]) -> Output {
    Command::new(motion_bin())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run motion")
}
