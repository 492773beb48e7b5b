//! The system description (`system.toml`): its model and its validator.
//!
//! `system.toml` declares CAS Motion's component graph: components (what
//! interfaces each serves and uses, what capabilities it needs), domains (one
//! OS process each, with the capabilities granted to it and a restart
//! policy), and typed channels between components. The runtime starts exactly
//! this graph and nothing else, so the file is the security policy: a
//! component can reach another only over a declared channel, and a process
//! holds only the capabilities its domain grants.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../system.toml"))?;
//! let interfaces = ["LogAppend", "LogRead", "Pmu", "VmControl", "Supervisor"];
//! let system = motion_system::parse("system.toml".as_ref(), &src, &interfaces)?;
//! for end in system.channels_of("vm-monitor") {
//!     println!("{} {:?} {} -> {}", end.channel.name, end.role, end.channel.interface, end.peer());
//! }
//! assert_eq!(system.domain_of("log-store").unwrap().components, ["log-store"]);
//! # Ok(())
//! # }
//! ```
//!
//! The format is described in `docs/system-toml.md`; every rule is in
//! [`validate`] and listed by [`Rule::ALL`].

mod capability;
mod decl;
mod diagnostic;
mod model;
pub mod validate;

use std::path::{Path, PathBuf};

pub use capability::{Access, Capability, UnknownCapability};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::{Channel, ChannelEnd, ChannelKind, Component, Domain, RestartPolicy, Role, System};
pub use validate::{Rule, SUPERVISOR_INTERFACE};

/// Why a system description could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file as named by the caller.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but breaks at least one rule.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Read and validate the system description at `path`. `interfaces` are the
/// interface names channels may carry: pass `motion_ipc::INTERFACE_NAMES`.
pub fn load(path: &Path, interfaces: &[&str]) -> Result<System, LoadError> {
    let src = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &src, interfaces).map_err(LoadError::Invalid)
}

/// Validate `src`, the text of a system description. `file` only labels the
/// findings (`FILE:LINE: rule: message`).
pub fn parse(file: &Path, src: &str, interfaces: &[&str]) -> Result<System, Diagnostics> {
    validate::check(file, src, interfaces)
}

/// The fuzz target's body, shared with the seeded test in the normal test
/// run: validate arbitrary bytes and check the result is well formed.
/// Panics only if the validator misbehaves.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    const INTERFACES: &[&str] = &["LogAppend", "LogRead", "Pmu", "VmControl", "Supervisor"];
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match parse(Path::new("fuzz.toml"), src, INTERFACES) {
        Ok(system) => {
            for c in system.components() {
                let d = system.domain(&c.domain).expect("component's domain exists");
                assert!(d.components.contains(&c.name));
                for need in &c.needs {
                    assert!(d.allows(*need));
                }
            }
            for ch in system.channels() {
                assert_eq!(
                    system.component(&ch.client).unwrap().domain,
                    ch.client_domain
                );
                assert_eq!(
                    system.component(&ch.server).unwrap().domain,
                    ch.server_domain
                );
            }
            assert!(system.supervisor().supervisor);
        }
        Err(findings) => {
            assert!(!findings.is_empty());
            let lines = src.lines().count().max(1) + 1;
            for d in &findings {
                assert!((1..=lines).contains(&d.line), "{d} beyond {lines} lines");
                assert!(!d.message.is_empty());
            }
            assert!(
                findings
                    .iter()
                    .zip(findings.iter().skip(1))
                    .all(|(a, b)| a.line <= b.line)
            );
        }
    }
}
