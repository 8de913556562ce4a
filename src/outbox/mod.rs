//! The durable outbox shared by every sink: persist first, then wake the sink's worker; delete
//! only on acknowledgement; resume at start-up.
//!
//! Each sink has its own queue in the store (`store::queue`), so a dead endpoint only grows its
//! own backlog. The presence service persists every event into every sink's queue through
//! `events::fanout::Fanout::publish_many` (one [`worker::Lane`] per sink) and wakes the workers.
//! Each worker delivers its queue in `seq` order:
//!
//! - [`worker::run`] through a [`Transport`] (webhooks), one batch at a time, acting on the
//!   [`Verdict`]: delivered → delete; retry → the same batch again (same batch id) after a
//!   jittered exponential backoff; dead letter → move the batch to the sink's dead letters with
//!   the answer that killed it. A later batch is never attempted before an earlier one is
//!   acknowledged or dead-lettered.
//! - [`worker::run_pipelined`] through a [`Pipelined`] transport (XMPP), many batches ahead of
//!   their acknowledgements, sending again only what a dead connection left unacknowledged.
//!
//! A queue record that cannot be decoded goes to the dead letters as it is, and delivery goes
//! on with the next records.

pub mod worker;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crate::store::queue::{DeadLetter, QueuedEvent};

/// A batch of events for one sink, oldest first. `id` stays the same across retries.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub events: Vec<QueuedEvent>,
}

impl Batch {
    /// The events as a JSON array, in `seq` order (each event is stored as its JSON text).
    pub fn json_array(&self) -> Vec<u8> {
        let len: usize = self.events.iter().map(|e| e.json.len() + 1).sum();
        let mut body = Vec::with_capacity(len + 2);
        body.push(b'[');
        for (i, e) in self.events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&e.json);
        }
        body.push(b']');
        body
    }

    pub fn first_seq(&self) -> u64 {
        self.events.first().map(|e| e.seq).unwrap_or(0)
    }

    pub fn last_seq(&self) -> u64 {
        self.events.last().map(|e| e.seq).unwrap_or(0)
    }
}

/// What an attempt to deliver a batch came to. Each sink decides it in one place (for webhooks:
/// `sinks::retry::classify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Acknowledged: delete the batch.
    Delivered,
    /// Try the same batch again, after `after` if the endpoint said so (`Retry-After`), else
    /// after the worker's backoff.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Will never succeed: move the batch to the dead letters with `reason`.
    DeadLetter { reason: String },
}

/// Delivers batches to one endpoint.
pub trait Transport: Send + Sync + 'static {
    /// A short name for logs, e.g. `webhook https://game.example.org/hooks/presence`.
    fn describe(&self) -> String;
    /// One attempt; must finish within the sink's timeout.
    fn deliver(&self, batch: &Batch) -> impl Future<Output = Verdict> + Send;
}

/// The acknowledgement of a batch a [`Pipelined`] transport has sent; `Err` says why it failed.
///
/// It must not time out on its own: it resolves `Ok` when the endpoint has acknowledged the
/// batch, and `Err` only when it never will on this connection (the connection died, or the
/// batch did not all go out on it). The worker waits for it as long as it takes and sends the
/// unacknowledged events again only after an `Err`, so nothing is sent twice on a live stream.
pub type PendingAck = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Why a [`Pipelined`] transport did not send a batch.
#[derive(Debug)]
pub enum SendRefused {
    /// The batch can never be delivered (e.g. a corrupt stored event).
    DeadLetter(String),
    /// The transport is gone (herald is stopping).
    Closed,
}

/// Delivers batches to an endpoint that acknowledges them in order, later: the worker sends the
/// next batches without waiting ([`worker::run_pipelined`]). The transport's connection decides
/// liveness (for XMPP: the stream's keepalive and read timeout) and fails every pending
/// [`PendingAck`] when it dies.
pub trait Pipelined: Send + Sync + 'static {
    /// A short name for logs, e.g. `xmpp world@example.org`.
    fn describe(&self) -> String;
    /// Sends the batch behind every batch sent before it; returns its acknowledgement.
    fn send(&self, batch: &Batch) -> impl Future<Output = Result<PendingAck, SendRefused>> + Send;
}
