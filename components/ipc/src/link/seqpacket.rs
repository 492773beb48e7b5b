//! Cross-process link: one end of a Unix `SOCK_SEQPACKET` socket pair.
//!
//! Seqpacket keeps message boundaries (one `send` is one `recv`), is reliable
//! and ordered, and reports the peer's close, so a frame needs no length
//! prefix or resynchronisation and a hostile peer cannot desynchronise the
//! stream. File descriptors a peer might attach (SCM_RIGHTS) are never
//! accepted: messages are read with `recv`, which discards control data.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{LinkError, Received, wait_slice};
use crate::{MAX_MESSAGE_SIZE, ShutdownSignal};

/// Socket buffer size asked for. A datagram must fit the sender's buffer
/// whole, so this must exceed [`MAX_MESSAGE_SIZE`]; the kernel caps it at
/// `net.core.wmem_max` (≥ 208 KiB on Linux, doubled for bookkeeping).
const SOCKET_BUFFER: usize = 1024 * 1024;

/// One end of a seqpacket socket pair.
#[derive(Debug)]
pub struct SeqpacketLink {
    fd: OwnedFd,
    rx: Vec<u8>,
}

impl SeqpacketLink {
    /// A connected pair of ends, both close-on-exec (the runtime clears that
    /// flag only on the descriptors it hands to a child).
    pub fn pair() -> io::Result<(SeqpacketLink, SeqpacketLink)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as socketpair requires.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Self::from_fd(a)?, Self::from_fd(b)?))
    }

    /// Adopt a descriptor (e.g. one inherited by a domain process). Refuses
    /// anything but a Unix seqpacket socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SeqpacketLink> {
        let ty = getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE)?;
        let domain = getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)?;
        if ty != libc::SOCK_SEQPACKET || domain != libc::AF_UNIX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} is not a Unix seqpacket socket",
                    fd.as_raw_fd()
                ),
            ));
        }
        let buf = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
        // Best effort: a smaller buffer only limits pipelining, and
        // MAX_MESSAGE_SIZE stays below the smallest default cap.
        let _ = setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, buf);
        let _ = setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, buf);
        Ok(SeqpacketLink { fd, rx: Vec::new() })
    }

    /// Another descriptor for the same end.
    pub fn try_clone(&self) -> io::Result<SeqpacketLink> {
        Ok(SeqpacketLink {
            fd: self.fd.try_clone()?,
            rx: Vec::new(),
        })
    }

    pub(super) fn send(
        &mut self,
        frame: &mut Vec<u8>,
        shutdown: Option<&ShutdownSignal>,
    ) -> Result<(), LinkError> {
        loop {
            // SAFETY: the pointer and length describe `frame`'s initialised bytes,
            // which stay borrowed for the duration of the call.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                frame.clear();
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let slice = wait_slice(None, shutdown)?;
                    let revents = poll(self.fd.as_fd(), libc::POLLOUT, slice)?;
                    if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                        return Err(LinkError::Disconnected);
                    }
                }
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => {
                    return Err(LinkError::Disconnected);
                }
                _ => return Err(LinkError::Io(err)),
            }
        }
    }

    pub(super) fn recv(
        &mut self,
        deadline: Option<Instant>,
        shutdown: Option<&ShutdownSignal>,
    ) -> Result<Received<'_>, LinkError> {
        if self.rx.len() != MAX_MESSAGE_SIZE {
            self.rx = vec![0; MAX_MESSAGE_SIZE];
        }
        loop {
            // SAFETY: `rx` is an initialised buffer of `rx.len()` bytes that we
            // borrow mutably for the call. MSG_TRUNC makes the kernel return the
            // datagram's real length even when it keeps only `rx.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rx.as_mut_ptr().cast(),
                    self.rx.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n > 0 {
                let total_len = n as usize;
                let kept = total_len.min(self.rx.len());
                return Ok(Received {
                    bytes: &self.rx[..kept],
                    total_len,
                });
            }
            if n == 0 {
                // End of stream, or a zero-length datagram: only the first
                // leaves the socket hung up.
                let revents = poll(self.fd.as_fd(), 0, Some(Duration::ZERO))?;
                if revents & libc::POLLHUP != 0 {
                    return Err(LinkError::Disconnected);
                }
                return Ok(Received {
                    bytes: &[],
                    total_len: 0,
                });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let slice = wait_slice(deadline, shutdown)?;
                    poll(self.fd.as_fd(), libc::POLLIN, slice)?;
                }
                Some(libc::ECONNRESET | libc::ENOTCONN) => return Err(LinkError::Disconnected),
                _ => return Err(LinkError::Io(err)),
            }
        }
    }
}

impl AsFd for SeqpacketLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// poll(2) one descriptor; returns its revents (0 on timeout).
fn poll(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Option<Duration>) -> io::Result<i16> {
    let ms = match timeout {
        None => -1,
        // Round up so a short remaining time does not become a busy loop.
        Some(t) => libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX),
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd, and we pass a count of 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(if rc == 0 { 0 } else { pfd.revents });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds value's size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_boundaries_survive_and_close_is_seen() {
        let (mut a, mut b) = SeqpacketLink::pair().unwrap();
        let mut m1 = b"hello".to_vec();
        let mut m2 = b"world!".to_vec();
        a.send(&mut m1, None).unwrap();
        a.send(&mut m2, None).unwrap();
        assert_eq!(b.recv(None, None).unwrap().bytes, b"hello");
        assert_eq!(b.recv(None, None).unwrap().bytes, b"world!");
        let mut empty = Vec::new();
        a.send(&mut empty, None).unwrap();
        assert_eq!(b.recv(None, None).unwrap().total_len, 0);
        drop(a);
        assert!(matches!(b.recv(None, None), Err(LinkError::Disconnected)));
    }

    #[test]
    fn timeout_and_shutdown_interrupt_a_wait() {
        let (_a, mut b) = SeqpacketLink::pair().unwrap();
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_millis(30));
        assert!(matches!(b.recv(deadline, None), Err(LinkError::Timeout)));
        let stop = ShutdownSignal::new();
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.request();
        });
        assert!(matches!(
            b.recv(None, Some(&stop)),
            Err(LinkError::Shutdown)
        ));
        h.join().unwrap();
    }

    #[test]
    fn oversized_datagram_reports_its_real_length() {
        let (mut a, mut b) = SeqpacketLink::pair().unwrap();
        let mut big = vec![7u8; MAX_MESSAGE_SIZE + 100];
        a.send(&mut big, None).unwrap();
        let r = b.recv(None, None).unwrap();
        assert_eq!(r.total_len, MAX_MESSAGE_SIZE + 100);
        assert_eq!(r.bytes.len(), MAX_MESSAGE_SIZE);
    }

    #[test]
    fn refuses_a_non_seqpacket_descriptor() {
        let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = SeqpacketLink::from_fd(OwnedFd::from(s)).unwrap_err();
        assert!(e.to_string().contains("not a Unix seqpacket socket"), "{e}");
    }
}
