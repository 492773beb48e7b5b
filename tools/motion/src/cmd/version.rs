//! `motion version`.

use std::process::ExitCode;

/// Print the version.
pub fn run() -> anyhow::Result<ExitCode> {
    println!("motion {}", env!("CARGO_PKG_VERSION"));
    Ok(ExitCode::SUCCESS)
}
