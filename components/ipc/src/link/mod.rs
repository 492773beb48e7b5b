//! Transports: a link moves whole messages between the two ends of a channel.
//!
//! Both links preserve message boundaries, deliver in order, and apply
//! backpressure (a bounded queue, a bounded socket buffer): a sender that
//! outruns its receiver blocks instead of growing memory. Blocking waits are
//! cut into short slices so a [`ShutdownSignal`] set meanwhile is noticed.

mod inproc;
#[cfg(unix)]
mod seqpacket;

use std::time::{Duration, Instant};

pub use inproc::InProcLink;
#[cfg(unix)]
pub use seqpacket::SeqpacketLink;

use crate::ShutdownSignal;

/// How often a blocked send or receive looks at the shutdown flag.
pub(crate) const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Messages a channel's in-process queue holds in each direction. Larger than
/// any client's pipelining window, so a client and server that each respect
/// the window never block each other.
pub const INPROC_QUEUE_DEPTH: usize = 128;

/// A received message, borrowed from the link until the next receive.
#[derive(Debug)]
pub struct Received<'a> {
    /// The bytes kept (at most [`MAX_MESSAGE_SIZE`](crate::MAX_MESSAGE_SIZE)).
    pub bytes: &'a [u8],
    /// The message's real length, which exceeds `bytes.len()` for a message
    /// too large to keep.
    pub total_len: usize,
}

/// Why a link operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The other end is closed for good.
    #[error("peer disconnected")]
    Disconnected,
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The shutdown flag was set while waiting.
    #[error("shutdown requested")]
    Shutdown,
    /// The OS failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One end of a channel's transport.
#[derive(Debug)]
pub enum Link {
    /// Bounded in-memory queues between threads of one process.
    InProc(InProcLink),
    /// A Unix `SOCK_SEQPACKET` socket: between processes.
    #[cfg(unix)]
    Seqpacket(SeqpacketLink),
}

impl Link {
    /// Send one whole message. The in-process link takes `frame`'s buffer
    /// (leaving it empty) instead of copying it.
    pub fn send(
        &mut self,
        frame: &mut Vec<u8>,
        shutdown: Option<&ShutdownSignal>,
    ) -> Result<(), LinkError> {
        match self {
            Link::InProc(l) => l.send(frame, shutdown),
            #[cfg(unix)]
            Link::Seqpacket(l) => l.send(frame, shutdown),
        }
    }

    /// Receive one whole message, waiting until `deadline` (forever if `None`).
    pub fn recv(
        &mut self,
        deadline: Option<Instant>,
        shutdown: Option<&ShutdownSignal>,
    ) -> Result<Received<'_>, LinkError> {
        match self {
            Link::InProc(l) => l.recv(deadline, shutdown),
            #[cfg(unix)]
            Link::Seqpacket(l) => l.recv(deadline, shutdown),
        }
    }

    /// Another handle on the same end (the runtime keeps one so a restarted
    /// domain finds its channels where it left them).
    pub fn try_clone(&self) -> std::io::Result<Link> {
        Ok(match self {
            Link::InProc(l) => Link::InProc(l.clone_end()),
            #[cfg(unix)]
            Link::Seqpacket(l) => Link::Seqpacket(l.try_clone()?),
        })
    }
}

/// Time left until `deadline`, capped at `cap` when a shutdown flag must be
/// polled; `None` means wait without limit.
pub(crate) fn wait_slice(
    deadline: Option<Instant>,
    shutdown: Option<&ShutdownSignal>,
) -> Result<Option<Duration>, LinkError> {
    if shutdown.is_some_and(ShutdownSignal::is_requested) {
        return Err(LinkError::Shutdown);
    }
    let left = match deadline {
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(LinkError::Timeout);
            }
            Some(d - now)
        }
        None => None,
    };
    Ok(match (left, shutdown.is_some()) {
        (Some(l), true) => Some(l.min(SHUTDOWN_POLL)),
        (None, true) => Some(SHUTDOWN_POLL),
        (l, false) => l,
    })
}
