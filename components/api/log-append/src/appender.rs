//! Client-side batching for `LogAppend`.

use motion_ipc::{Client, IpcError, MAX_PAYLOAD_SIZE};

use crate::{Ack, CreateLog, LogAppend, LogAppendError, Record, Reply, Request};

/// Postcard bytes of an `Append` request around its records (variant index,
/// sequence length), rounded up.
const REQUEST_OVERHEAD: usize = 16;

/// When a batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Send once this many records are pending.
    pub max_records: usize,
    /// Send once the pending records' encoded size bound reaches this;
    /// clamped to what fits in one message.
    pub max_bytes: usize,
    /// Batches in flight before waiting for an acknowledgement.
    pub window: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_records: 1024,
            max_bytes: 64 * 1024,
            window: 8,
        }
    }
}

/// Why an append did not go through.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The channel failed.
    #[error(transparent)]
    Ipc(#[from] IpcError),
    /// The log store refused.
    #[error(transparent)]
    Log(#[from] LogAppendError),
    /// One record cannot fit in a message.
    #[error("record of {len} payload bytes cannot fit in one message (at most {max})")]
    RecordTooLarge {
        /// Its payload length.
        len: usize,
        /// The largest payload that fits.
        max: usize,
    },
    /// The store answered with a reply that does not fit the request.
    #[error("log store answered {0:?} to an append")]
    UnexpectedReply(Box<Reply>),
}

/// Batches records into `Append` requests and pipelines them.
///
/// [`push`](Appender::push) queues a record and sends the batch when a limit
/// is reached; up to `window` batches are in flight before the appender
/// waits for the oldest acknowledgement. [`ack`](Appender::ack) is the latest
/// acknowledgement seen; [`flush`](Appender::flush) waits until everything
/// pushed is durable.
#[derive(Debug)]
pub struct Appender {
    client: Client<LogAppend>,
    limits: BatchLimits,
    pending: Vec<Record>,
    pending_bytes: usize,
    ack: Ack,
    pushed: u64,
}

impl Appender {
    /// Wrap the `LogAppend` client.
    pub fn new(client: Client<LogAppend>, limits: BatchLimits) -> Appender {
        let limits = BatchLimits {
            max_records: limits.max_records.max(1),
            max_bytes: limits
                .max_bytes
                .clamp(1, MAX_PAYLOAD_SIZE - REQUEST_OVERHEAD),
            window: limits.window.max(1),
        };
        let client = client.with_window(limits.window);
        Appender {
            client,
            pending: Vec::with_capacity(limits.max_records),
            limits,
            pending_bytes: 0,
            ack: Ack::default(),
            pushed: 0,
        }
    }

    /// The latest acknowledgement from the store.
    pub fn ack(&self) -> Ack {
        self.ack
    }

    /// Records pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Queue one record; sends a batch when it is full.
    pub fn push(&mut self, record: Record) -> Result<(), AppendError> {
        let size = record.encoded_size_bound();
        let max = MAX_PAYLOAD_SIZE - REQUEST_OVERHEAD;
        if size > max {
            return Err(AppendError::RecordTooLarge {
                len: record.payload.len(),
                max: max - Record::MAX_OVERHEAD,
            });
        }
        if self.pending_bytes + size > max {
            self.send_batch()?;
        }
        self.pending_bytes += size;
        self.pending.push(record);
        self.pushed += 1;
        if self.pending.len() >= self.limits.max_records
            || self.pending_bytes >= self.limits.max_bytes
        {
            self.send_batch()?;
        }
        Ok(())
    }

    /// Send what is pending now, without waiting for acknowledgements.
    pub fn send_batch(&mut self) -> Result<(), AppendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while self.client.in_flight() >= self.limits.window {
            self.collect_one()?;
        }
        let request = Request::Append {
            records: std::mem::take(&mut self.pending),
        };
        self.pending_bytes = 0;
        let sent = self.client.send(&request);
        if let Request::Append { mut records } = request {
            // Reuse the allocation for the next batch.
            records.clear();
            self.pending = records;
        }
        sent?;
        Ok(())
    }

    /// Open the recording (the first thing on a session): create the log
    /// `create` names, with its machine description in the header.
    pub fn create(&mut self, create: CreateLog) -> Result<Ack, AppendError> {
        self.settle()?;
        match self.client.call(&Request::Create(Box::new(create)))?? {
            Reply::Created(ack) => {
                self.ack = ack;
                Ok(ack)
            }
            other => Err(AppendError::UnexpectedReply(Box::new(other))),
        }
    }

    /// Take the acknowledgements that have already arrived, without waiting
    /// (a producer that wants its durable count to move between batches).
    pub fn collect_ready(&mut self) -> Result<Ack, AppendError> {
        while self.client.in_flight() > 0 {
            match self.client.recv_timeout(std::time::Duration::ZERO) {
                Ok((_, reply)) => {
                    let ack = reply?.ack();
                    self.ack.accepted = self.ack.accepted.max(ack.accepted);
                    self.ack.durable = self.ack.durable.max(ack.durable);
                }
                Err(IpcError::Timeout { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.ack)
    }

    /// Send what is pending, collect every acknowledgement, then ask the
    /// store to make everything durable. Returns the final acknowledgement.
    pub fn flush(&mut self) -> Result<Ack, AppendError> {
        self.settle()?;
        let reply = self.client.call(&Request::Flush)??;
        self.ack = reply.ack();
        Ok(self.ack)
    }

    /// Flush and seal the log.
    pub fn seal(&mut self) -> Result<Ack, AppendError> {
        self.settle()?;
        let reply = self.client.call(&Request::Seal)??;
        match reply {
            Reply::Sealed(ack) => {
                self.ack = ack;
                Ok(ack)
            }
            other => Err(AppendError::UnexpectedReply(Box::new(other))),
        }
    }

    /// The client back, with every batch acknowledged first.
    pub fn into_client(mut self) -> Result<Client<LogAppend>, AppendError> {
        self.settle()?;
        Ok(self.client)
    }

    fn settle(&mut self) -> Result<(), AppendError> {
        self.send_batch()?;
        while self.client.in_flight() > 0 {
            self.collect_one()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> Result<(), AppendError> {
        let (_, reply) = self.client.recv()?;
        let reply = reply?;
        let ack = reply.ack();
        // Replies may arrive out of order; counts only grow.
        self.ack.accepted = self.ack.accepted.max(ack.accepted);
        self.ack.durable = self.ack.durable.max(ack.durable);
        Ok(())
    }
}
