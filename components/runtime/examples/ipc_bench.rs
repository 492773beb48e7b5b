//! Append throughput of the IPC path, in-process and across processes,
//! beside a no-IPC baseline:
//!
//! ```sh
//! cargo run --release -p motion-runtime --example ipc_bench [RECORDS] [PAYLOAD_BYTES]
//! ```

use std::process::ExitCode;

use motion_runtime::Registry;
use motion_runtime::bench::{self, AppendBench};

fn main() -> ExitCode {
    let mut registry = Registry::new();
    bench::register(&mut registry);
    // The cross-process run starts the null log as this binary again.
    if let Some(code) = motion_runtime::run_domain_if_requested(&registry) {
        return code;
    }
    let mut args = std::env::args().skip(1);
    let mut config = AppendBench::default();
    if let Some(n) = args.next().and_then(|a| a.parse().ok()) {
        config.records = n;
    }
    if let Some(n) = args.next().and_then(|a| a.parse().ok()) {
        config.payload_bytes = n;
    }
    match bench::run_all(&registry, &config) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipc_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
