//! Domains as processes: re-executing the binary with a hidden entry
//! argument, handing over exactly the domain's descriptors, and the domain
//! side of that hand-over. All Linux specifics of the runtime live here and in
//! [`seccomp`](crate::seccomp).
//!
//! Hand-over protocol. The child is `EXE __motion-domain NAME` with
//! * fd 0: /dev/null; fd 1: the runtime's stdout with the `stdout`
//!   capability, else /dev/null; fd 2: the runtime's stderr (diagnostics);
//! * fd 3: the domain's control socket (it serves `Supervisor` on it);
//! * fd 4..: its channel endpoints, in the order the boot message lists them;
//! * nothing else: every other descriptor is close-on-exec;
//! * SIGINT, SIGQUIT and SIGTERM ignored (see [`TERMINAL_SIGNALS`]), and
//!   SIGKILL as its parent-death signal: the supervisor alone decides when a
//!   domain stops, and no domain outlives it.
//!
//! The first message on fd 3 is the boot message (frame interface id 0):
//! the domain's name, components, endpoints, grants and resource paths. The
//! domain then installs its seccomp filter, runs its components, and before
//! exiting leaves an exit note (interface id 0) saying how they ended.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use motion_ipc::endpoint::Transport;
use motion_ipc::frame::{self, Kind};
use motion_ipc::link::{Link, SeqpacketLink};
use motion_ipc::{ComponentContext, Endpoint, EndpointInfo, Interface, Role, ShutdownSignal};
use serde::{Deserialize, Serialize};
use supervisor_api::Supervisor;

use crate::events::DomainOutcome;
use crate::graph::Capability;
use crate::{Registry, RuntimeError, agent, seccomp};

/// The hidden first argument that makes the binary a domain process.
pub const DOMAIN_ARG: &str = "__motion-domain";
/// The control socket's descriptor in a domain process.
const CONTROL_FD: RawFd = 3;
/// The first endpoint's descriptor in a domain process.
const FIRST_ENDPOINT_FD: RawFd = 4;
/// Interface id of the runtime's own frames (boot message, exit note):
/// never a declared interface's.
const RUNTIME_FRAME_ID: u16 = 0;
/// How long a new domain waits for its boot message.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Signals a domain process ignores from the start (set to `SIG_IGN` before
/// exec, which exec keeps).
///
/// A terminal's `Ctrl-C` (SIGINT) and `Ctrl-\` (SIGQUIT) go to every process of
/// the foreground process group, and shells (`kill %1`), `timeout` and
/// service managers send SIGTERM to a whole group too. Domains stay in the
/// supervisor's group (a group of their own would be a background job: with
/// `stty tostop` their diagnostics on the terminal would stop them with
/// SIGTTOU, and job control would no longer suspend the session as one), so
/// they ignore these signals instead: the supervisor receives them, decides
/// (`motion record` seals the log and then stops the domains over their
/// control channels), and if it dies, `PR_SET_PDEATHSIG` ends the domains.
/// Ignoring happens before exec and the seccomp filter, so it holds whatever
/// the domain's own code or filter allow; SIGKILL still ends a domain.
pub(crate) const TERMINAL_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// Everything a domain process is told at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub domain: String,
    pub generation: u32,
    pub components: Vec<String>,
    pub endpoints: Vec<BootEndpoint>,
    /// Capabilities, as spelled in `system.toml`.
    pub grants: Vec<String>,
    /// What a forbidden syscall does.
    pub on_violation: crate::OnViolation,
    pub resources: BTreeMap<String, PathBuf>,
}

/// One endpoint: what it is, and where it was put.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BootEndpoint {
    pub info: EndpointInfo,
    pub fd: i32,
}

/// The domain's last word.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExitNote {
    outcome: DomainOutcome,
}

/// A started domain process.
pub(crate) struct Spawned {
    pub child: Child,
    /// Client end of its control channel.
    pub control: Endpoint,
}

/// Start `exe` as domain `boot.domain` with `endpoints` (this domain's ends,
/// in `boot.endpoints` order; the caller keeps them open across restarts).
pub(crate) fn spawn(
    exe: &Path,
    mut boot: Boot,
    endpoints: &[Endpoint],
) -> Result<Spawned, RuntimeError> {
    let domain = boot.domain.clone();
    let io_err = |what: &str, source: io::Error| RuntimeError::Io {
        what: format!("{what} for domain `{domain}`"),
        source,
    };
    let (control, child_control) = Endpoint::pair_for::<Supervisor>(
        &format!("control:{domain}"),
        "supervisor",
        &domain,
        Transport::Seqpacket,
    )?;

    // (descriptor in this process, descriptor in the child)
    let mut moves: Vec<(RawFd, RawFd)> = Vec::with_capacity(endpoints.len() + 1);
    moves.push((seqpacket_fd(&child_control)?, CONTROL_FD));
    for (i, (ep, slot)) in endpoints.iter().zip(boot.endpoints.iter_mut()).enumerate() {
        let target =
            FIRST_ENDPOINT_FD + RawFd::try_from(i).unwrap_or(RawFd::MAX - FIRST_ENDPOINT_FD);
        moves.push((seqpacket_fd(ep)?, target));
        slot.fd = target;
    }

    let stdout = if boot
        .grants
        .iter()
        .any(|g| g.parse() == Ok(Capability::Stdout))
    {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    // The pid the child must see as its parent once its parent-death signal
    // is armed (see `place_descriptors`).
    let parent = std::process::id();
    let mut cmd = Command::new(exe);
    cmd.arg(DOMAIN_ARG)
        .arg(&domain)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (fcntl, dup2, close_range, prctl,
    // getppid, sigaction) on a vector allocated before the fork; it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            place_descriptors(&mut moves)?;
            die_with_parent(parent)?;
            ignore_terminal_signals()
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| io_err("cannot start the process", e))?;
    drop(child_control);

    let mut control = control;
    let mut buf = Vec::new();
    frame::encode_into(&mut buf, Kind::Notify, RUNTIME_FRAME_ID, 0, &boot)?;
    control.send_raw(&buf)?;
    Ok(Spawned { child, control })
}

fn seqpacket_fd(ep: &Endpoint) -> Result<RawFd, RuntimeError> {
    match ep.link() {
        Link::Seqpacket(l) => Ok(l.as_fd().as_raw_fd()),
        Link::InProc(_) => Err(RuntimeError::Internal(format!(
            "channel `{}` is in-process but its domain is a process",
            ep.info().channel
        ))),
    }
}

/// In the forked child: put each descriptor at its target number and mark
/// every other descriptor close-on-exec.
fn place_descriptors(moves: &mut [(RawFd, RawFd)]) -> io::Result<()> {
    let top = CONTROL_FD + RawFd::try_from(moves.len()).unwrap_or(RawFd::MAX - CONTROL_FD);
    // First lift every source above the target range, so no dup2 below
    // overwrites a source not yet moved.
    for m in moves.iter_mut() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own; no memory is passed.
        let lifted = unsafe { libc::fcntl(m.0, libc::F_DUPFD_CLOEXEC, top) };
        if lifted < 0 {
            return Err(io::Error::last_os_error());
        }
        m.0 = lifted;
    }
    for &(from, to) in moves.iter() {
        // SAFETY: dup2 between two descriptor numbers; the new one is not close-on-exec.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors >= top.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            top as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In the forked child: be killed (SIGKILL) when the runtime dies. The signal
/// comes when the thread that forked this child ends — a watcher thread that
/// waits for the child, so in practice when the runtime's process dies.
/// If the runtime already died between the fork and the `prctl` (the child
/// was adopted by another process), no signal would ever come: fail the
/// spawn instead of running an orphan.
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid takes no arguments and cannot fail.
    let now = unsafe { libc::getppid() };
    if u32::try_from(now).ok() != Some(parent) {
        return Err(io::Error::other(
            "the runtime died while starting the domain",
        ));
    }
    Ok(())
}

/// In the forked child: ignore [`TERMINAL_SIGNALS`] (why: see there).
fn ignore_terminal_signals() -> io::Result<()> {
    for sig in TERMINAL_SIGNALS {
        // SAFETY: sigaction with a zeroed action whose handler is SIG_IGN;
        // both structures live on this stack frame.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_IGN;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Wait until process `pid` has exited, without reaping it, so its pid stays
/// reserved (a zombie) while the supervisor marks it gone; killing by that pid
/// up to then cannot hit another process.
pub(crate) fn wait_exited_no_reap(pid: u32) -> io::Result<()> {
    let pid = libc::id_t::from(pid);
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value for waitid to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writes; the other arguments are integers.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Send SIGKILL to a child that has not been reaped.
pub(crate) fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill takes integers; the caller guarantees `pid` is our
        // unreaped child, so the number cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// After a domain process ended: the exit note it left on the control
/// channel, if any.
pub(crate) fn take_exit_note(control: Endpoint) -> Option<DomainOutcome> {
    let mut control = control;
    let mut note = None;
    while let Ok(bytes) = control.recv_raw(Some(Duration::ZERO)) {
        if let Some(outcome) = decode_exit_note(&bytes) {
            note = Some(outcome);
        }
    }
    note
}

/// The domain side: if this process was started as a domain, run it and
/// return its exit code; otherwise `None`.
pub fn run_domain_if_requested(registry: &Registry) -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let _exe = args.next();
    if args.next().as_deref() != Some(DOMAIN_ARG.as_ref()) {
        return None;
    }
    let name = args
        .next()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(ExitCode::from(domain_main(&name, registry)))
}

fn domain_main(name: &str, registry: &Registry) -> u8 {
    let control = match adopt_control(name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("motion domain `{name}`: {e}");
            return exit_code(&DomainOutcome::BootFailed { error: e });
        }
    };
    let (outcome, control) = boot_and_run(name, control, registry);
    let Some(mut control) = control else {
        return exit_code(&outcome);
    };
    let mut buf = Vec::new();
    if frame::encode_into(
        &mut buf,
        Kind::Notify,
        RUNTIME_FRAME_ID,
        0,
        &ExitNote {
            outcome: outcome.clone(),
        },
    )
    .is_ok()
    {
        let _ = control.send_raw(&buf);
    }
    exit_code(&outcome)
}

fn exit_code(outcome: &DomainOutcome) -> u8 {
    match outcome {
        DomainOutcome::Finished => 0,
        DomainOutcome::Failed { .. } | DomainOutcome::Killed { .. } => 1,
        DomainOutcome::BootFailed { .. } => 2,
        DomainOutcome::Panicked { .. } => 101,
    }
}

fn adopt_control(name: &str) -> Result<Endpoint, String> {
    let link = adopt_fd(CONTROL_FD).map_err(|e| {
        format!("descriptor {CONTROL_FD} is not a control socket ({e}): domains are started by the runtime")
    })?;
    let info = EndpointInfo {
        channel: format!("control:{name}"),
        interface: Supervisor::NAME.to_owned(),
        interface_id: Supervisor::ID,
        local: name.to_owned(),
        peer: "supervisor".to_owned(),
        role: Role::Server,
    };
    Ok(Endpoint::new(info, Link::Seqpacket(link)))
}

/// Take ownership of an inherited descriptor that must be a seqpacket socket.
fn adopt_fd(fd: RawFd) -> io::Result<SeqpacketLink> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and, by the hand-over
    // protocol, belongs to this process alone; nothing else wraps it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    SeqpacketLink::from_fd(owned)
}

/// Boot and run the domain; gives back the control channel, when there
/// still is one, to leave the exit note on.
fn boot_and_run(
    name: &str,
    mut control: Endpoint,
    registry: &Registry,
) -> (DomainOutcome, Option<Endpoint>) {
    match setup(name, &mut control) {
        Ok((contexts, shutdown)) => agent::run(
            agent::DomainRun {
                domain: name.to_owned(),
                contexts,
                control,
                shutdown,
                pid: std::process::id(),
            },
            registry,
        ),
        Err(error) => {
            eprintln!("motion domain `{name}`: cannot start: {error}");
            (DomainOutcome::BootFailed { error }, Some(control))
        }
    }
}

/// Read the boot message, adopt the endpoints, build the contexts, and
/// close the sandbox.
fn setup(
    name: &str,
    control: &mut Endpoint,
) -> Result<(Vec<ComponentContext>, ShutdownSignal), String> {
    let raw = control
        .recv_raw(Some(BOOT_TIMEOUT))
        .map_err(|e| format!("no boot message: {e}"))?;
    let (boot, capabilities) = decode_boot(&raw, name)?;

    let mut by_component: BTreeMap<&str, Vec<Endpoint>> = boot
        .components
        .iter()
        .map(|c| (c.as_str(), Vec::new()))
        .collect();
    for be in &boot.endpoints {
        let link = adopt_fd(be.fd).map_err(|e| format!("endpoint descriptor {}: {e}", be.fd))?;
        if let Some(list) = by_component.get_mut(be.info.local.as_str()) {
            list.push(Endpoint::new(be.info.clone(), Link::Seqpacket(link)));
        }
    }

    init_tracing(name);
    install_panic_hook(name);

    let grants = boot.grants.clone();
    let resources: BTreeMap<String, PathBuf> = boot
        .resources
        .iter()
        .filter(|(r, _)| capabilities.iter().any(|g| g.resource() == r.as_str()))
        .map(|(r, p)| (r.clone(), p.clone()))
        .collect();
    let shutdown = ShutdownSignal::new();
    let contexts = by_component
        .into_iter()
        .map(|(component, endpoints)| {
            ComponentContext::new(
                component,
                name,
                endpoints,
                grants.clone(),
                resources.clone(),
                shutdown.clone(),
            )
        })
        .collect();

    one_malloc_arena();
    seccomp::install(name, &capabilities, boot.on_violation)
        .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    Ok((contexts, shutdown))
}

/// Keep glibc's malloc to its main arena. By default each thread gets an
/// arena of its own, whose heap glibc shrinks when enough of it is freed,
/// and the first shrink reads /proc/sys/vm/overcommit_memory: an `openat`
/// no domain may make, so a domain died of SIGSYS at whatever free() first
/// shrank a thread's heap (seen as a `replay` domain killed mid-replay,
/// now and then, when large record batches were freed). The main arena
/// trims with brk/madvise and reads no file. Its one lock is shared by the
/// domain's few threads, which allocate little on their hot paths.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc tunable; called before the
    // components' threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Check and decode the boot message meant for domain `name`: every
/// endpoint at its own descriptor in the endpoint range and owned by a
/// component of the domain, every grant a known capability.
pub(crate) fn decode_boot(raw: &[u8], name: &str) -> Result<(Boot, Vec<Capability>), String> {
    let f = frame::parse(raw, raw.len()).map_err(|e| format!("bad boot message: {e}"))?;
    if f.interface != RUNTIME_FRAME_ID || f.kind != Kind::Notify {
        return Err("first control message is not a boot message".into());
    }
    let boot: Boot =
        frame::decode_payload(f.payload).map_err(|e| format!("bad boot message: {e}"))?;
    if boot.domain != name {
        return Err(format!("boot message is for domain `{}`", boot.domain));
    }
    let end_fd = RawFd::try_from(boot.endpoints.len())
        .ok()
        .and_then(|n| FIRST_ENDPOINT_FD.checked_add(n))
        .ok_or("too many endpoints")?;
    let mut seen = std::collections::BTreeSet::new();
    for be in &boot.endpoints {
        if !(FIRST_ENDPOINT_FD..end_fd).contains(&be.fd) || !seen.insert(be.fd) {
            return Err(format!("endpoint descriptor {} out of place", be.fd));
        }
        if !boot.components.contains(&be.info.local) {
            return Err(format!(
                "endpoint of channel `{}` is for `{}`, not a component of this domain",
                be.info.channel, be.info.local
            ));
        }
    }
    let capabilities = boot
        .grants
        .iter()
        .map(|g| g.parse::<Capability>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad grant in boot message: {e}"))?;
    Ok((boot, capabilities))
}

/// The exit note in one message from a domain (`None` for anything else).
pub(crate) fn decode_exit_note(raw: &[u8]) -> Option<DomainOutcome> {
    let f = frame::parse(raw, raw.len()).ok()?;
    if f.interface != RUNTIME_FRAME_ID || f.kind != Kind::Notify {
        return None;
    }
    frame::decode_payload::<ExitNote>(f.payload)
        .ok()
        .map(|n| n.outcome)
}

/// Fuzz entry: the boot message decoder (a domain's first input).
#[doc(hidden)]
pub fn fuzz_boot(data: &[u8]) {
    if let Ok((boot, caps)) = decode_boot(data, "d") {
        assert_eq!(boot.domain, "d");
        assert_eq!(caps.len(), boot.grants.len());
    }
}

/// Fuzz entry: the exit-note decoder (the supervisor reading what a
/// possibly compromised domain left behind).
#[doc(hidden)]
pub fn fuzz_exit_note(data: &[u8]) {
    if let Some(outcome) = decode_exit_note(data) {
        let _ = outcome.is_failure();
    }
}

/// Valid inputs for the two fuzz entries above (a boot message for domain
/// `d`, exit notes), to seed corpora.
#[doc(hidden)]
pub fn fuzz_seeds() -> Vec<Vec<u8>> {
    let info = EndpointInfo {
        channel: "record".into(),
        interface: "LogAppend".into(),
        interface_id: 1,
        local: "a".into(),
        peer: "log-store".into(),
        role: Role::Client,
    };
    let boot = Boot {
        domain: "d".into(),
        generation: 1,
        components: vec!["a".into(), "b".into()],
        endpoints: vec![
            BootEndpoint {
                info: info.clone(),
                fd: FIRST_ENDPOINT_FD,
            },
            BootEndpoint {
                info: info.reversed(),
                fd: FIRST_ENDPOINT_FD + 1,
            },
        ],
        grants: vec!["log-dir:write".into(), "stdout".into()],
        on_violation: crate::OnViolation::Kill,
        resources: BTreeMap::from([("log-dir".into(), PathBuf::from("/var/log/motion"))]),
    };
    let mut seeds = Vec::new();
    let mut buf = Vec::new();
    if frame::encode_into(&mut buf, Kind::Notify, RUNTIME_FRAME_ID, 0, &boot).is_ok() {
        seeds.push(buf.clone());
    }
    for outcome in [
        DomainOutcome::Finished,
        DomainOutcome::Failed {
            component: Some("a".into()),
            error: "disk full".into(),
            exit_code: None,
        },
        DomainOutcome::Panicked {
            component: None,
            message: "index out of bounds".into(),
        },
        DomainOutcome::Killed { signal: 31 },
        DomainOutcome::BootFailed {
            error: "no boot".into(),
        },
    ] {
        if frame::encode_into(
            &mut buf,
            Kind::Notify,
            RUNTIME_FRAME_ID,
            0,
            &ExitNote { outcome },
        )
        .is_ok()
        {
            seeds.push(buf.clone());
        }
    }
    seeds
}

/// Report panics in one line without a backtrace: capturing one reads
/// files under /proc, which the sandbox forbids, and would turn a component's
/// panic into a SIGSYS kill that hides the message.
fn install_panic_hook(domain: &str) {
    let domain = domain.to_owned();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "domain `{domain}`: thread `{}` panicked{location}: {message}",
            thread.name().unwrap_or("?")
        );
    }));
}

/// Log to stderr, prefixed with the domain; `RUST_LOG` filters as usual.
/// Done before the sandbox closes (the filter reads the environment).
fn init_tracing(domain: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(io::stderr)
        .try_init();
    tracing::debug!(domain, "domain process up");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        let info = |local: &str| EndpointInfo {
            channel: format!("{local}-ch"),
            interface: "LogAppend".into(),
            interface_id: 1,
            local: local.into(),
            peer: "elsewhere".into(),
            role: Role::Client,
        };
        Boot {
            domain: "d".into(),
            generation: 0,
            components: vec!["a".into(), "b".into()],
            endpoints: vec![
                BootEndpoint {
                    info: info("a"),
                    fd: 4,
                },
                BootEndpoint {
                    info: info("b"),
                    fd: 5,
                },
            ],
            grants: vec!["log-dir:read".into(), "stdout".into()],
            on_violation: crate::OnViolation::Kill,
            resources: BTreeMap::new(),
        }
    }

    fn encode(b: &Boot) -> Vec<u8> {
        let mut buf = Vec::new();
        frame::encode_into(&mut buf, Kind::Notify, RUNTIME_FRAME_ID, 0, b).unwrap();
        buf
    }

    #[test]
    fn a_boot_message_decodes_and_each_check_bites() {
        let (b, caps) = decode_boot(&encode(&boot()), "d").unwrap();
        assert_eq!(b.endpoints.len(), 2);
        assert_eq!(
            caps,
            [
                Capability::LogDir(motion_system::Access::Read),
                Capability::Stdout
            ]
        );

        let e = decode_boot(&encode(&boot()), "other").unwrap_err();
        assert!(e.contains("for domain `d`"), "{e}");
        let mut b = boot();
        b.endpoints[1].fd = 3;
        assert!(
            decode_boot(&encode(&b), "d")
                .unwrap_err()
                .contains("out of place")
        );
        let mut b = boot();
        b.endpoints[1].fd = 4;
        assert!(
            decode_boot(&encode(&b), "d")
                .unwrap_err()
                .contains("out of place")
        );
        let mut b = boot();
        b.endpoints[0].info.local = "intruder".into();
        assert!(
            decode_boot(&encode(&b), "d")
                .unwrap_err()
                .contains("not a component")
        );
        let mut b = boot();
        b.grants.push("root".into());
        assert!(
            decode_boot(&encode(&b), "d")
                .unwrap_err()
                .contains("bad grant")
        );
        assert!(decode_boot(b"junk", "d").is_err());
    }

    #[test]
    fn exit_notes_decode_and_other_frames_do_not() {
        let mut buf = Vec::new();
        let note = ExitNote {
            outcome: DomainOutcome::Panicked {
                component: Some("c".into()),
                message: "m".into(),
            },
        };
        frame::encode_into(&mut buf, Kind::Notify, RUNTIME_FRAME_ID, 0, &note).unwrap();
        assert_eq!(decode_exit_note(&buf), Some(note.outcome.clone()));
        frame::encode_into(&mut buf, Kind::Reply, 5, 1, &note).unwrap();
        assert_eq!(decode_exit_note(&buf), None);
        assert_eq!(decode_exit_note(b"CM"), None);
    }
}
