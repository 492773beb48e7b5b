//! Starts the domains of a system description as sandboxed processes (or as
//! threads), hands each component exactly its declared endpoints, and
//! supervises them.
//!
//! ```no_run
//! use motion_runtime::{Registry, Runtime, RuntimeConfig, SystemGraph};
//! # fn log_store_entry(_: motion_ipc::ComponentContext) -> motion_ipc::ComponentResult { Ok(()) }
//! # fn system() -> SystemGraph { SystemGraph::default() }
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::new();
//!     registry.register("log-store", log_store_entry);
//!     // A domain process is this executable started again: it runs its
//!     // components here and never reaches the rest of `main`.
//!     if let Some(code) = motion_runtime::run_domain_if_requested(&registry) {
//!         return code;
//!     }
//!     let runtime = Runtime::start(&system(), &registry, RuntimeConfig::default()).unwrap();
//!     for event in runtime.events().iter() {
//!         println!("{event}");
//!     }
//!     std::process::ExitCode::SUCCESS
//! }
//! ```
//!
//! * **Processes** ([`Mode::Processes`]): each domain is the current
//!   executable re-executed with a hidden argument, given only its channel
//!   descriptors (everything else is close-on-exec), its control channel and
//!   its grants. It installs a seccomp filter derived from its capabilities
//!   ([`seccomp`]) before any component code runs.
//! * **Threads** ([`Mode::Threads`]): the same graph in one process, each
//!   domain's components on threads, with in-process channels and no sandbox
//!   (for tests and debugging).
//! * **Host domain**: the supervisor domain of `system.toml` (or another
//!   chosen in [`RuntimeConfig::host_domain`]) is the caller itself; its
//!   components are not started, their contexts are handed to the caller
//!   ([`Runtime::take_host_context`]), e.g. for the CLI to talk to the log
//!   store. Its `Supervisor` channels to the other domains are those
//!   domains' control channels: the runtime serves them inside each domain
//!   (ping, health, shutdown) and drives them through [`Runtime::ping`],
//!   [`Runtime::health`] and [`Runtime::shutdown`]; no component gets an
//!   endpoint for them.
//! * **Supervision** (Hubris jefe style): a watcher per domain reports every
//!   start and end on [`Runtime::events`] (and through `tracing`), and
//!   restarts per the domain's [`RestartPolicy`]. The supervisor holds on to
//!   each domain's channel ends while it may restart, so its peers keep their
//!   endpoints and queued messages wait for the new run; a call in progress
//!   when a domain dies gets no reply (use a timeout). Once a domain is down
//!   for good its ends close and its peers see it disconnected.

mod agent;
pub mod bench;
pub mod events;
pub mod graph;
#[cfg(target_os = "linux")]
mod process;
mod registry;
mod runtime;
#[cfg(target_os = "linux")]
pub mod seccomp;

pub use events::{DomainOutcome, Events, SupervisorEvent, signal_name};
pub use graph::{
    Access, Capability, ChannelDesc, DomainDesc, GraphError, RestartPolicy, SystemGraph,
};
#[cfg(target_os = "linux")]
pub use process::{DOMAIN_ARG, fuzz_boot, fuzz_exit_note, fuzz_seeds, run_domain_if_requested};
pub use registry::Registry;
pub use runtime::{Mode, OnViolation, Runtime, RuntimeConfig};

use motion_ipc::IpcError;

/// Why the runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The graph breaks a rule the runtime relies on.
    #[error("system description: {0}")]
    Graph(#[from] GraphError),
    /// A component has no entry function in the registry.
    #[error("component `{component}` has no registered entry function (registered: {known})")]
    NoEntry {
        /// The component.
        component: String,
        /// What is registered.
        known: String,
    },
    /// No such domain.
    #[error("no domain `{domain}`")]
    NoSuchDomain {
        /// The name.
        domain: String,
    },
    /// The domain is not running now.
    #[error("domain `{domain}` is not running")]
    NotRunning {
        /// The name.
        domain: String,
    },
    /// A channel operation failed.
    #[error(transparent)]
    Ipc(#[from] IpcError),
    /// The domain refused a supervisor request.
    #[error("domain `{domain}` refused: {error}")]
    Refused {
        /// The domain.
        domain: String,
        /// Its answer.
        error: supervisor_api::SupervisorError,
    },
    /// The OS failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Domains that did not stop (threads cannot be killed).
    #[error("domains did not stop: {0}")]
    Stuck(String),
    /// This platform cannot do it.
    #[error("not supported on this platform: {0}")]
    Unsupported(String),
    /// A broken invariant of the runtime itself.
    #[error("runtime bug: {0}")]
    Internal(String),
}
