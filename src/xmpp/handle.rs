//! The cloneable front end of the connection task.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use minidom::Element;
use tokio::sync::mpsc;

use super::iq_tracker::{IqError, IqTracker};

/// Sends stanzas through the one connection task and awaits answers to IQs.
///
/// Stanzas travel as XML text, rendered by the sender, so the connection's writer only writes.
/// Outbound channel: every task that emits stanzas sends; the connection's writer receives. It is
/// bounded: when full (the server is slow or herald is reconnecting) senders wait, which slows the
/// producers instead of growing memory. Stanzas queued while disconnected go out after the
/// reconnect.
#[derive(Clone)]
pub struct XmppHandle {
    outbound: mpsc::Sender<Outbound>,
    tracker: IqTracker,
    jid: Arc<str>,
    counter: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the connection task has stopped")]
pub struct Closed;

/// A queued piece of the outbound stream.
#[derive(Debug)]
pub struct Outbound {
    /// The connection generation when it was queued.
    pub generation: u64,
    pub xml: Bytes,
}

impl XmppHandle {
    pub fn new(outbound: mpsc::Sender<Outbound>, tracker: IqTracker, jid: &str) -> Self {
        XmppHandle {
            outbound,
            tracker,
            jid: jid.into(),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The component's JID: the `from` of everything herald sends.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Queues a stanza for sending.
    pub async fn send(&self, stanza: Element) -> Result<(), Closed> {
        self.send_text(Bytes::from(String::from(&stanza))).await
    }

    /// Queues stanzas already rendered as XML text: one or more complete top-level elements
    /// with every namespace they use declared (the stream's default is `jabber:component:accept`).
    /// They go out on the current connection or, if it is down, on the next one; stanzas queued
    /// before a connection was lost are dropped with it (see [`IqTracker::generation`]).
    pub async fn send_text(&self, xml: Bytes) -> Result<(), Closed> {
        let item = Outbound {
            generation: self.tracker.generation(),
            xml,
        };
        self.outbound.send(item).await.map_err(|_| Closed)
    }

    /// The current connection generation: a sink compares it before and after sending a batch
    /// to know whether all of it went to one connection.
    pub fn generation(&self) -> u64 {
        self.tracker.generation()
    }

    /// A fresh stanza id, unique within this process.
    pub fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues an IQ (its `id` is set here) behind everything queued before it and returns the
    /// wait for its answer, with no timeout of its own: it ends with the answer, or with an error
    /// when the connection is lost or herald stops. The caller decides how long to wait (an XMPP
    /// sink times out only its oldest batch, see `outbox::worker::run_pipelined`).
    pub async fn queue_request(
        &self,
        mut iq: Element,
    ) -> Result<impl Future<Output = Result<Element, IqError>> + Send + 'static, IqError> {
        let id = self.next_id("herald");
        iq.set_attr(rxml::Namespace::NONE, crate::n!("id"), id.as_str());
        let answer = self.tracker.register(id.clone());
        if self.send(iq).await.is_err() {
            self.tracker.forget(&id);
            return Err(IqError::Closed);
        }
        Ok(async move { answer.await.unwrap_or(Err(IqError::Closed)) })
    }
}
