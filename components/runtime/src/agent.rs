//! The domain agent: runs a domain's components and answers the supervisor.
//!
//! The same code runs inside a domain process (after the sandbox is up) and
//! on a thread of the runtime's own process in threaded mode, so both modes
//! behave alike: one thread per component, a control thread serving the
//! `Supervisor` interface, and fail-stop — the first component to fail or
//! panic ends the domain (its siblings are asked to stop).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use motion_ipc::{ComponentContext, Endpoint, IpcError, Server, ShutdownSignal};
use supervisor_api::{ComponentHealth, ComponentState, DomainHealth, Reply, Request, Supervisor};

use crate::Registry;
use crate::events::DomainOutcome;

/// How long siblings get to stop after a component failed, before the
/// domain ends without them (a process exits; in threaded mode their
/// threads are left behind).
const FAIL_STOP_GRACE: Duration = Duration::from_secs(2);

/// One run of a domain.
pub(crate) struct DomainRun {
    pub domain: String,
    pub contexts: Vec<ComponentContext>,
    /// Server end of the domain's `Supervisor` control channel.
    pub control: Endpoint,
    /// Set by a `Shutdown` request, or by the agent when a component fails.
    pub shutdown: ShutdownSignal,
    pub pid: u32,
}

/// Run the domain's components to the end. Gives the control endpoint back
/// (for the exit note) when the control thread ended normally.
pub(crate) fn run(run: DomainRun, registry: &Registry) -> (DomainOutcome, Option<Endpoint>) {
    let DomainRun {
        domain,
        contexts,
        control,
        shutdown,
        pid,
    } = run;
    let started = Instant::now();

    let mut entries = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        match registry.get(ctx.name()) {
            Some(entry) => entries.push((entry, ctx)),
            None => {
                let outcome = DomainOutcome::BootFailed {
                    error: format!(
                        "no entry function registered for component `{}`",
                        ctx.name()
                    ),
                };
                return (outcome, Some(control));
            }
        }
    }

    let states = Arc::new(Mutex::new(
        entries
            .iter()
            .map(|(_, ctx)| ComponentHealth {
                name: ctx.name().to_owned(),
                state: ComponentState::Running,
            })
            .collect::<Vec<_>>(),
    ));

    let control_stop = ShutdownSignal::new();
    let control_thread = {
        let mut control = control;
        control.set_shutdown(control_stop.clone());
        let states = Arc::clone(&states);
        let shutdown = shutdown.clone();
        let domain = domain.clone();
        std::thread::Builder::new()
            .name(format!("{domain}:control"))
            .spawn(move || serve_control(control, &domain, pid, started, &states, &shutdown))
    };

    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, ComponentState)>();
    let mut running = 0usize;
    let mut first_failure: Option<DomainOutcome> = None;
    for (index, (entry, ctx)) in entries.into_iter().enumerate() {
        let name = ctx.name().to_owned();
        let tx = done_tx.clone();
        let span_domain = domain.clone();
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _span =
                    tracing::info_span!("component", domain = %span_domain, name = %ctx.name())
                        .entered();
                let state = match catch_unwind(AssertUnwindSafe(|| entry(ctx))) {
                    Ok(Ok(())) => ComponentState::Finished,
                    Ok(Err(e)) => ComponentState::Failed {
                        error: error_chain(&*e),
                    },
                    Err(payload) => ComponentState::Panicked {
                        message: panic_message(&*payload),
                    },
                };
                let _ = tx.send((index, state));
            });
        match spawned {
            Ok(_) => running += 1,
            Err(e) => {
                let state = ComponentState::Failed {
                    error: format!("cannot start its thread: {e}"),
                };
                let _ = done_tx.send((index, state));
                running += 1;
            }
        }
    }
    drop(done_tx);

    let mut deadline: Option<Instant> = None;
    while running > 0 {
        let next = match deadline {
            None => done_rx.recv().ok(),
            Some(d) => done_rx.recv_deadline(d).ok(),
        };
        let Some((index, state)) = next else { break };
        running -= 1;
        let name = lock(&states)[index].name.clone();
        let outcome = match &state {
            ComponentState::Failed { error } => {
                tracing::error!(domain, component = %name, "component failed: {error}");
                Some(DomainOutcome::Failed {
                    component: Some(name),
                    error: error.clone(),
                    exit_code: None,
                })
            }
            ComponentState::Panicked { message } => {
                tracing::error!(domain, component = %name, "component panicked: {message}");
                Some(DomainOutcome::Panicked {
                    component: Some(name),
                    message: message.clone(),
                })
            }
            _ => None,
        };
        lock(&states)[index].state = state;
        if first_failure.is_none() && outcome.is_some() {
            first_failure = outcome;
            shutdown.request();
            deadline = Some(Instant::now() + FAIL_STOP_GRACE);
        }
    }
    if running > 0 {
        tracing::warn!(
            domain,
            "{running} component(s) did not stop within the fail-stop grace"
        );
    }

    control_stop.request();
    let control = control_thread.ok().and_then(|h| h.join().ok()).flatten();
    (first_failure.unwrap_or(DomainOutcome::Finished), control)
}

fn serve_control(
    control: Endpoint,
    domain: &str,
    pid: u32,
    started: Instant,
    states: &Mutex<Vec<ComponentHealth>>,
    shutdown: &ShutdownSignal,
) -> Option<Endpoint> {
    let mut server = match Server::<Supervisor>::new(control) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(domain, "control channel unusable: {e}");
            return None;
        }
    };
    let result = server.serve(|request| match request {
        Request::Ping { nonce } => Ok(Reply::Pong { nonce }),
        Request::Health => Ok(Reply::Health(DomainHealth {
            domain: domain.to_owned(),
            pid,
            uptime_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            components: lock(states).clone(),
        })),
        Request::Shutdown { reason } => {
            tracing::info!(domain, "shutdown requested: {reason}");
            shutdown.request();
            Ok(Reply::ShuttingDown)
        }
    });
    match result {
        Ok(()) | Err(IpcError::Shutdown) => {}
        Err(e) => tracing::warn!(domain, "control channel failed: {e}"),
    }
    Some(server.into_endpoint())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its sources, "outer: inner: innermost".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
