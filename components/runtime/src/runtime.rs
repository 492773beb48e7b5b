//! The supervisor: starts every domain, watches it, restarts it per policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use motion_ipc::endpoint::Transport;
use motion_ipc::{Client, ComponentContext, Endpoint, Interface, ShutdownSignal};
use supervisor_api::{DomainHealth, Reply, Request, Supervisor};

use crate::events::{DomainOutcome, Events, SupervisorEvent};
use crate::graph::{Capability, DomainDesc, RestartPolicy, SystemGraph};
use crate::{Registry, RuntimeError, agent};

/// How long a supervisor request to a domain may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a forbidden syscall does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OnViolation {
    /// `SECCOMP_RET_KILL_PROCESS`: the kernel kills the process with SIGSYS
    /// at once; nothing in the domain runs after the call.
    Kill,
    /// For writing allow-lists: `SECCOMP_RET_TRAP` plus a SIGSYS handler
    /// that prints the syscall's number and name to stderr, then the process
    /// dies of SIGSYS all the same. (A hostile component could install its
    /// own handler and live on with the call denied, so this is for
    /// development, not for recording evidence.)
    Report,
}

/// How domains run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One sandboxed process per domain.
    Processes,
    /// One group of threads per domain, in this process, unsandboxed.
    Threads,
}

/// How to start a graph.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Processes or threads.
    pub mode: Mode,
    /// A domain whose components are the caller: not started, their
    /// contexts are handed out by [`Runtime::take_host_context`]. Defaults
    /// to the graph's supervisor domain.
    pub host_domain: Option<String>,
    /// Where granted resources are: resource name (`log-dir`, `guest-image`,
    /// `disk-image`) → path. A domain's components see only the paths of
    /// resources their domain holds a capability for.
    pub resources: BTreeMap<String, PathBuf>,
    /// The executable domain processes run (default: the current one). It
    /// must call [`run_domain_if_requested`](crate::run_domain_if_requested)
    /// first thing, with the same registry.
    pub exe: Option<PathBuf>,
    /// Pause before the first restart; doubles per restart up to 2 s.
    pub restart_backoff: Duration,
    /// What a forbidden syscall does in a domain process. Default: kill;
    /// `report` (name the syscall on stderr, then die of SIGSYS) when the
    /// environment variable `MOTION_SECCOMP=report` is set, for writing
    /// allow-lists.
    pub on_violation: OnViolation,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            mode: Mode::Processes,
            host_domain: None,
            resources: BTreeMap::new(),
            exe: None,
            restart_backoff: Duration::from_millis(50),
            on_violation: match std::env::var("MOTION_SECCOMP").as_deref() {
                Ok("report") => OnViolation::Report,
                _ => OnViolation::Kill,
            },
        }
    }
}

/// A domain as the supervisor tracks it.
struct Slot {
    desc: DomainDesc,
    /// Client end of the running generation's control channel.
    control: Mutex<Option<Client<Supervisor>>>,
    /// The running generation's process, until it has exited (not reaped:
    /// see `process::wait_exited_no_reap`).
    pid: Mutex<Option<u32>>,
}

struct Shared {
    mode: Mode,
    registry: Registry,
    exe: PathBuf,
    resources: BTreeMap<String, PathBuf>,
    backoff: Duration,
    on_violation: OnViolation,
    stopping: AtomicBool,
    events: Sender<SupervisorEvent>,
}

impl Shared {
    fn emit(&self, event: SupervisorEvent) {
        match &event {
            SupervisorEvent::Exited { outcome, .. } if outcome.is_failure() => {
                tracing::error!(domain = event.domain(), "{event}");
            }
            SupervisorEvent::Down { failed: true, .. } => {
                tracing::error!(domain = event.domain(), "{event}");
            }
            _ => tracing::info!(domain = event.domain(), "{event}"),
        }
        let _ = self.events.send(event);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// A running graph. Dropping it shuts everything down.
pub struct Runtime {
    shared: Arc<Shared>,
    slots: BTreeMap<String, Arc<Slot>>,
    watchers: Vec<(String, JoinHandle<()>)>,
    events: Receiver<SupervisorEvent>,
    host: BTreeMap<String, ComponentContext>,
    host_shutdown: ShutdownSignal,
    stopped: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("mode", &self.shared.mode)
            .field("domains", &self.slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Check the graph, create every channel, and start every domain but the
    /// host domain.
    pub fn start(
        graph: &SystemGraph,
        registry: &Registry,
        config: RuntimeConfig,
    ) -> Result<Runtime, RuntimeError> {
        graph.check()?;
        let host = config
            .host_domain
            .as_deref()
            .or(graph.supervisor.as_deref());
        if let Some(h) = host {
            if !graph.domains.iter().any(|d| d.name == h) {
                return Err(RuntimeError::NoSuchDomain {
                    domain: h.to_owned(),
                });
            }
        }
        for d in graph
            .domains
            .iter()
            .filter(|d| Some(d.name.as_str()) != host)
        {
            for c in &d.components {
                if registry.get(c).is_none() {
                    return Err(RuntimeError::NoEntry {
                        component: c.clone(),
                        known: registry.names().collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        let exe = match config.mode {
            Mode::Threads => PathBuf::new(),
            Mode::Processes => {
                #[cfg(not(target_os = "linux"))]
                return Err(RuntimeError::Unsupported(
                    "domains as processes need Linux (seccomp); use Mode::Threads".into(),
                ));
                #[cfg(target_os = "linux")]
                crate::seccomp::probe().map_err(|why| {
                    RuntimeError::Unsupported(format!(
                        "cannot sandbox domain processes: {why}; use Mode::Threads"
                    ))
                })?;
                match config.exe.clone() {
                    Some(p) => p,
                    None => std::env::current_exe().map_err(|source| RuntimeError::Io {
                        what: "cannot find the current executable".into(),
                        source,
                    })?,
                }
            }
        };

        let placement = graph.placement();
        let mut per_domain: BTreeMap<&str, Vec<Endpoint>> = graph
            .domains
            .iter()
            .map(|d| (d.name.as_str(), Vec::new()))
            .collect();
        for ch in &graph.channels {
            let (cd, sd) = (placement[ch.client.as_str()], placement[ch.server.as_str()]);
            if ch.interface == Supervisor::NAME && Some(cd) == host && Some(sd) != host {
                // The domain's control channel: served by the runtime's agent.
                continue;
            }
            let transport = match config.mode {
                Mode::Threads => Transport::InProcess,
                _ if Some(cd) == host && Some(sd) == host => Transport::InProcess,
                #[cfg(unix)]
                Mode::Processes => Transport::Seqpacket,
                #[cfg(not(unix))]
                Mode::Processes => Transport::InProcess,
            };
            let (c, s) =
                Endpoint::pair(&ch.name, &ch.interface, &ch.client, &ch.server, transport)?;
            per_domain.entry(cd).or_default().push(c);
            per_domain.entry(sd).or_default().push(s);
        }

        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            mode: config.mode,
            registry: registry.clone(),
            exe,
            resources: config.resources.clone(),
            backoff: config.restart_backoff,
            on_violation: config.on_violation,
            stopping: AtomicBool::new(false),
            events: tx,
        });

        let host_shutdown = ShutdownSignal::new();
        let mut host_contexts = BTreeMap::new();
        let mut slots = BTreeMap::new();
        let mut watchers = Vec::new();
        for d in &graph.domains {
            let endpoints = per_domain.remove(d.name.as_str()).unwrap_or_default();
            if Some(d.name.as_str()) == host {
                for (component, eps) in split_by_component(&d.components, endpoints) {
                    let ctx = context_for(&component, d, eps, &config.resources, &host_shutdown);
                    host_contexts.insert(component, ctx);
                }
                continue;
            }
            let slot = Arc::new(Slot {
                desc: d.clone(),
                control: Mutex::new(None),
                pid: Mutex::new(None),
            });
            slots.insert(d.name.clone(), Arc::clone(&slot));
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("supervise:{}", d.name))
                .spawn(move || watch(&shared, &slot, endpoints))
                .map_err(|source| RuntimeError::Io {
                    what: format!("cannot start the watcher of domain `{}`", d.name),
                    source,
                })?;
            watchers.push((d.name.clone(), handle));
        }

        Ok(Runtime {
            shared,
            slots,
            watchers,
            events: rx,
            host: host_contexts,
            host_shutdown,
            stopped: false,
        })
    }

    /// Every start, end, restart and final stop of every domain, in order.
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// The context of a component of the host domain (once).
    pub fn take_host_context(&mut self, component: &str) -> Option<ComponentContext> {
        self.host.remove(component)
    }

    /// The running domains' names.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// Ask a domain to echo a nonce over its control channel.
    pub fn ping(&self, domain: &str) -> Result<(), RuntimeError> {
        let nonce = 0x6d6f74696f6e ^ u64::from(std::process::id());
        match self.control_call(domain, &Request::Ping { nonce })? {
            Reply::Pong { nonce: n } if n == nonce => Ok(()),
            other => Err(RuntimeError::Internal(format!(
                "domain `{domain}` answered a ping with {other:?}"
            ))),
        }
    }

    /// A domain's health, from the domain itself.
    pub fn health(&self, domain: &str) -> Result<DomainHealth, RuntimeError> {
        match self.control_call(domain, &Request::Health)? {
            Reply::Health(h) => Ok(h),
            other => Err(RuntimeError::Internal(format!(
                "domain `{domain}` answered a health request with {other:?}"
            ))),
        }
    }

    fn control_call(&self, domain: &str, request: &Request) -> Result<Reply, RuntimeError> {
        let slot = self
            .slots
            .get(domain)
            .ok_or_else(|| RuntimeError::NoSuchDomain {
                domain: domain.to_owned(),
            })?;
        let mut guard = lock(&slot.control);
        let client = guard.as_mut().ok_or_else(|| RuntimeError::NotRunning {
            domain: domain.to_owned(),
        })?;
        client
            .call_timeout(request, CONTROL_TIMEOUT)?
            .map_err(|error| RuntimeError::Refused {
                domain: domain.to_owned(),
                error,
            })
    }

    /// Wait until every domain is down for good (or `timeout` passes);
    /// returns whether they all are.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.watchers.iter().all(|(_, h)| h.is_finished()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ask every domain to stop, wait up to `grace`, then kill what is left.
    pub fn shutdown(mut self, grace: Duration) -> Result<(), RuntimeError> {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> Result<(), RuntimeError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.host_shutdown.request();
        self.host.clear();
        for slot in self.slots.values() {
            if let Some(client) = lock(&slot.control).as_mut() {
                let _ = client.call_timeout(
                    &Request::Shutdown {
                        reason: "the runtime is shutting down".into(),
                    },
                    grace.min(CONTROL_TIMEOUT),
                );
            }
        }
        if !self.wait(grace) {
            for slot in self.slots.values() {
                if let Some(pid) = *lock(&slot.pid) {
                    tracing::warn!(domain = %slot.desc.name, pid, "did not stop in time: killing");
                    #[cfg(target_os = "linux")]
                    crate::process::kill(pid);
                }
            }
            self.wait(Duration::from_secs(5));
        }
        let mut stuck = Vec::new();
        for (name, handle) in std::mem::take(&mut self.watchers) {
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                stuck.push(name);
            }
        }
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Stuck(stuck.join(", ")))
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(5)) {
            tracing::error!("runtime shutdown: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn split_by_component(
    components: &[String],
    endpoints: Vec<Endpoint>,
) -> BTreeMap<String, Vec<Endpoint>> {
    let mut map: BTreeMap<String, Vec<Endpoint>> =
        components.iter().map(|c| (c.clone(), Vec::new())).collect();
    for ep in endpoints {
        map.entry(ep.info().local.clone()).or_default().push(ep);
    }
    map
}

fn context_for(
    component: &str,
    domain: &DomainDesc,
    endpoints: Vec<Endpoint>,
    resources: &BTreeMap<String, PathBuf>,
    shutdown: &ShutdownSignal,
) -> ComponentContext {
    ComponentContext::new(
        component,
        &domain.name,
        endpoints,
        domain.grants.iter().map(Capability::to_string).collect(),
        granted_resources(&domain.grants, resources),
        shutdown.clone(),
    )
}

fn granted_resources(
    grants: &[Capability],
    resources: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, PathBuf> {
    resources
        .iter()
        .filter(|(r, _)| grants.iter().any(|g| g.resource() == r.as_str()))
        .map(|(r, p)| (r.clone(), p.clone()))
        .collect()
}

/// Supervise one domain until it is down for good.
fn watch(shared: &Shared, slot: &Slot, endpoints: Vec<Endpoint>) {
    let domain = slot.desc.name.clone();
    let mut generation = 0u32;
    let mut restarts = 0u32;
    let failed = loop {
        let outcome = match shared.mode {
            Mode::Threads => run_threads(shared, slot, &endpoints, generation),
            #[cfg(target_os = "linux")]
            Mode::Processes => run_process(shared, slot, &endpoints, generation),
            #[cfg(not(target_os = "linux"))]
            Mode::Processes => DomainOutcome::BootFailed {
                error: "domains as processes need Linux".into(),
            },
        };
        let failure = outcome.is_failure();
        shared.emit(SupervisorEvent::Exited {
            domain: domain.clone(),
            generation,
            outcome,
        });
        if shared.stopping() {
            break failure;
        }
        let max_restarts = match slot.desc.restart {
            RestartPolicy::Never => break failure,
            RestartPolicy::OnFailure { max_restarts } => {
                if !failure {
                    break false;
                }
                if restarts >= max_restarts {
                    break true;
                }
                Some(max_restarts)
            }
            RestartPolicy::Always => None,
        };
        restarts = restarts.saturating_add(1);
        shared.emit(SupervisorEvent::Restarting {
            domain: domain.clone(),
            restart: restarts,
            max_restarts,
        });
        let pause = shared
            .backoff
            .saturating_mul(1 << (restarts - 1).min(16))
            .min(MAX_BACKOFF);
        let until = Instant::now() + pause;
        while Instant::now() < until && !shared.stopping() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if shared.stopping() {
            break failure;
        }
        generation += 1;
    };
    // Closing our copies of the domain's ends tells its peers it is gone.
    drop(endpoints);
    shared.emit(SupervisorEvent::Down { domain, failed });
}

fn run_threads(
    shared: &Shared,
    slot: &Slot,
    endpoints: &[Endpoint],
    generation: u32,
) -> DomainOutcome {
    let d = &slot.desc;
    let (control, child_control) = match Endpoint::pair_for::<Supervisor>(
        &format!("control:{}", d.name),
        "supervisor",
        &d.name,
        Transport::InProcess,
    ) {
        Ok(pair) => pair,
        Err(e) => {
            return DomainOutcome::BootFailed {
                error: e.to_string(),
            };
        }
    };
    let mut clones = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        match ep.try_clone() {
            Ok(c) => clones.push(c),
            Err(e) => {
                return DomainOutcome::BootFailed {
                    error: e.to_string(),
                };
            }
        }
    }
    *lock(&slot.control) = Client::new(control).ok();
    let shutdown = ShutdownSignal::new();
    let contexts = split_by_component(&d.components, clones)
        .into_iter()
        .map(|(component, eps)| context_for(&component, d, eps, &shared.resources, &shutdown))
        .collect();
    shared.emit(SupervisorEvent::Started {
        domain: d.name.clone(),
        generation,
        pid: None,
    });
    let (outcome, _control) = agent::run(
        agent::DomainRun {
            domain: d.name.clone(),
            contexts,
            control: child_control,
            shutdown,
            pid: std::process::id(),
        },
        &shared.registry,
    );
    lock(&slot.control).take();
    outcome
}

#[cfg(target_os = "linux")]
fn run_process(
    shared: &Shared,
    slot: &Slot,
    endpoints: &[Endpoint],
    generation: u32,
) -> DomainOutcome {
    use std::os::unix::process::ExitStatusExt;

    use crate::process::{self, Boot, BootEndpoint};

    let d = &slot.desc;
    let boot = Boot {
        domain: d.name.clone(),
        generation,
        components: d.components.clone(),
        endpoints: endpoints
            .iter()
            .map(|ep| BootEndpoint {
                info: ep.info().clone(),
                fd: -1,
            })
            .collect(),
        grants: d.grants.iter().map(Capability::to_string).collect(),
        on_violation: shared.on_violation,
        resources: granted_resources(&d.grants, &shared.resources),
    };
    let mut spawned = match process::spawn(&shared.exe, boot, endpoints) {
        Ok(s) => s,
        Err(e) => {
            return DomainOutcome::BootFailed {
                error: e.to_string(),
            };
        }
    };
    let pid = spawned.child.id();
    *lock(&slot.pid) = Some(pid);
    *lock(&slot.control) = Client::new(spawned.control).ok();
    shared.emit(SupervisorEvent::Started {
        domain: d.name.clone(),
        generation,
        pid: Some(pid),
    });

    let waited = process::wait_exited_no_reap(pid);
    *lock(&slot.pid) = None;
    let status = spawned.child.wait();
    let note = lock(&slot.control)
        .take()
        .and_then(|c| process::take_exit_note(c.into_endpoint()));
    let status = match (waited, status) {
        (_, Ok(s)) => s,
        (_, Err(e)) => {
            return DomainOutcome::Failed {
                component: None,
                error: format!("cannot wait for process {pid}: {e}"),
                exit_code: None,
            };
        }
    };
    if let Some(signal) = status.signal() {
        return DomainOutcome::Killed { signal };
    }
    let code = status.code().unwrap_or(-1);
    match (code, note) {
        (0, _) => DomainOutcome::Finished,
        (
            _,
            Some(DomainOutcome::Failed {
                component, error, ..
            }),
        ) => DomainOutcome::Failed {
            component,
            error,
            exit_code: Some(code),
        },
        (_, Some(note @ (DomainOutcome::Panicked { .. } | DomainOutcome::BootFailed { .. }))) => {
            note
        }
        (_, _) => DomainOutcome::Failed {
            component: None,
            error: format!("exited with status {code}"),
            exit_code: Some(code),
        },
    }
}
