//! What the supervisor reports: a typed event stream (also logged with tracing).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The supervisor's event stream (a crossbeam receiver: `recv`,
/// `recv_timeout`, `recv_deadline`, `try_iter`, ...).
pub type Events = crossbeam_channel::Receiver<SupervisorEvent>;

/// How one run of a domain ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainOutcome {
    /// Every component returned `Ok` (or stopped on shutdown).
    Finished,
    /// A component returned an error.
    Failed {
        /// The component, when the domain said which.
        component: Option<String>,
        /// The error, when the domain said.
        error: String,
        /// The process exit status (process mode).
        exit_code: Option<i32>,
    },
    /// A component panicked.
    Panicked {
        /// The component, when the domain said which.
        component: Option<String>,
        /// The panic message.
        message: String,
    },
    /// The process was killed by a signal.
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// The domain could not start (bad boot message, missing entry
    /// function, sandbox setup failed, exec failed).
    BootFailed {
        /// Why.
        error: String,
    },
}

impl DomainOutcome {
    /// Whether this counts as a failure for the restart policy.
    pub fn is_failure(&self) -> bool {
        !matches!(self, DomainOutcome::Finished)
    }

    /// The signal number, if the process was killed.
    pub fn signal(&self) -> Option<i32> {
        match self {
            DomainOutcome::Killed { signal } => Some(*signal),
            _ => None,
        }
    }
}

/// A signal's name ("SIGSYS"), or its number.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// Something that happened to a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorEvent {
    /// A run of the domain started.
    Started {
        /// The domain.
        domain: String,
        /// 0 for the first run, +1 per restart.
        generation: u32,
        /// Its process id (process mode).
        pid: Option<u32>,
    },
    /// A run of the domain ended.
    Exited {
        /// The domain.
        domain: String,
        /// Which run.
        generation: u32,
        /// How.
        outcome: DomainOutcome,
    },
    /// The domain will be started again (its channels stay open meanwhile).
    Restarting {
        /// The domain.
        domain: String,
        /// Restarts so far, this one included.
        restart: u32,
        /// The policy's limit (`None`: restart always).
        max_restarts: Option<u32>,
    },
    /// The domain is down for good; its channel ends are closed, so its
    /// peers now see it disconnected.
    Down {
        /// The domain.
        domain: String,
        /// Whether it ended in failure with no restart left (or allowed).
        failed: bool,
    },
}

impl SupervisorEvent {
    /// The domain the event is about.
    pub fn domain(&self) -> &str {
        match self {
            SupervisorEvent::Started { domain, .. }
            | SupervisorEvent::Exited { domain, .. }
            | SupervisorEvent::Restarting { domain, .. }
            | SupervisorEvent::Down { domain, .. } => domain,
        }
    }
}

impl fmt::Display for SupervisorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorEvent::Started {
                domain,
                generation,
                pid,
            } => {
                write!(f, "domain `{domain}` started")?;
                if let Some(pid) = pid {
                    write!(f, " as pid {pid}")?;
                }
                if *generation > 0 {
                    write!(f, " (restart {generation})")?;
                }
                Ok(())
            }
            SupervisorEvent::Exited {
                domain, outcome, ..
            } => match outcome {
                DomainOutcome::Finished => write!(f, "domain `{domain}` finished"),
                DomainOutcome::Failed {
                    component,
                    error,
                    exit_code,
                } => {
                    write!(f, "domain `{domain}` failed")?;
                    if let Some(code) = exit_code {
                        write!(f, " (exit status {code})")?;
                    }
                    match component {
                        Some(c) => write!(f, ": component `{c}`: {error}"),
                        None => write!(f, ": {error}"),
                    }
                }
                DomainOutcome::Panicked { component, message } => match component {
                    Some(c) => write!(
                        f,
                        "domain `{domain}` panicked in component `{c}`: {message}"
                    ),
                    None => write!(f, "domain `{domain}` panicked: {message}"),
                },
                DomainOutcome::Killed { signal } => {
                    write!(f, "domain `{domain}` killed by {}", signal_name(*signal))?;
                    if *signal == libc::SIGSYS {
                        write!(f, " (seccomp: forbidden syscall)")?;
                    }
                    Ok(())
                }
                DomainOutcome::BootFailed { error } => {
                    write!(f, "domain `{domain}` failed to start: {error}")
                }
            },
            SupervisorEvent::Restarting {
                domain,
                restart,
                max_restarts: Some(max),
            } => write!(
                f,
                "restarting domain `{domain}` (restart {restart} of {max})"
            ),
            SupervisorEvent::Restarting {
                domain,
                restart,
                max_restarts: None,
            } => write!(f, "restarting domain `{domain}` (restart {restart})"),
            SupervisorEvent::Down { domain, failed } => {
                if *failed {
                    write!(f, "domain `{domain}` is down (failed, not restarted)")
                } else {
                    write!(f, "domain `{domain}` is down")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_kill_names_domain_and_signal() {
        let e = SupervisorEvent::Exited {
            domain: "log-store".into(),
            generation: 0,
            outcome: DomainOutcome::Killed {
                signal: libc::SIGSYS,
            },
        };
        assert_eq!(
            e.to_string(),
            "domain `log-store` killed by SIGSYS (seccomp: forbidden syscall)"
        );
        let e = SupervisorEvent::Exited {
            domain: "vmm".into(),
            generation: 2,
            outcome: DomainOutcome::Killed { signal: 99 },
        };
        assert_eq!(e.to_string(), "domain `vmm` killed by signal 99");
    }
}
