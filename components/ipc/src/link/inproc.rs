//! In-process link: a pair of bounded crossbeam queues carrying owned frames.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError};

use super::{INPROC_QUEUE_DEPTH, LinkError, Received, wait_slice};
use crate::ShutdownSignal;

/// One end of an in-process channel. A message is an owned `Vec<u8>` handed
/// over without copying; it still is a complete encoded frame, so the
/// receiver checks it exactly as it checks one from a socket.
#[derive(Debug)]
pub struct InProcLink {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
}

impl InProcLink {
    /// A connected pair of ends.
    pub fn pair() -> (InProcLink, InProcLink) {
        let (a_tx, b_rx) = crossbeam_channel::bounded(INPROC_QUEUE_DEPTH);
        let (b_tx, a_rx) = crossbeam_channel::bounded(INPROC_QUEUE_DEPTH);
        (
            InProcLink {
                tx: a_tx,
                rx: a_rx,
                current: Vec::new(),
            },
            InProcLink {
                tx: b_tx,
                rx: b_rx,
                current: Vec::new(),
            },
        )
    }

    /// Another handle on this end. The peer sees a disconnect only once
    /// every handle on this end is dropped.
    pub fn clone_end(&self) -> InProcLink {
        InProcLink {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            current: Vec::new(),
        }
    }

    pub(super) fn send(
        &mut self,
        frame: &mut Vec<u8>,
        shutdown: Option<&ShutdownSignal>,
    ) -> Result<(), LinkError> {
        let mut msg = std::mem::take(frame);
        loop {
            let result = match wait_slice(None, shutdown)? {
                Some(slice) => self.tx.send_timeout(msg, slice),
                None => self
                    .tx
                    .send(msg)
                    .map_err(|e| SendTimeoutError::Disconnected(e.0)),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => msg = m,
                Err(SendTimeoutError::Disconnected(_)) => return Err(LinkError::Disconnected),
            }
        }
    }

    pub(super) fn recv(
        &mut self,
        deadline: Option<Instant>,
        shutdown: Option<&ShutdownSignal>,
    ) -> Result<Received<'_>, LinkError> {
        let msg = match self.rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Disconnected) => return Err(LinkError::Disconnected),
            Err(TryRecvError::Empty) => loop {
                let result = match wait_slice(deadline, shutdown)? {
                    Some(slice) => self.rx.recv_timeout(slice),
                    None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match result {
                    Ok(m) => break m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Err(LinkError::Disconnected),
                }
            },
        };
        self.current = msg;
        Ok(Received {
            bytes: &self.current,
            total_len: self.current.len(),
        })
    }
}
