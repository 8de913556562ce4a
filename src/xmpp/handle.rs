//! The cloneable front end of the connection task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;

use super::iq_tracker::{IqError, IqTracker};

/// Sends stanzas through the one connection task and awaits answers to IQs.
///
/// Outbound channel: every task that emits stanzas sends; the connection task receives. It is
/// bounded: when full (the server is slow or herald is reconnecting) senders wait, which slows the
/// producers instead of growing memory. Stanzas queued while disconnected go out after the
/// reconnect.
#[derive(Clone)]
pub struct XmppHandle {
    outbound: mpsc::Sender<Element>,
    tracker: IqTracker,
    jid: Arc<str>,
    counter: Arc<AtomicU64>,
    request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("the connection task has stopped")]
pub struct Closed;

impl XmppHandle {
    pub fn new(
        outbound: mpsc::Sender<Element>,
        tracker: IqTracker,
        jid: &str,
        request_timeout: Duration,
    ) -> Self {
        XmppHandle {
            outbound,
            tracker,
            jid: jid.into(),
            counter: Arc::new(AtomicU64::new(0)),
            request_timeout,
        }
    }

    /// The component's JID: the `from` of everything herald sends.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Queues a stanza for sending.
    pub async fn send(&self, stanza: Element) -> Result<(), Closed> {
        self.outbound.send(stanza).await.map_err(|_| Closed)
    }

    /// A fresh stanza id, unique within this process.
    pub fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends an IQ (its `id` is set here) and waits for the answer, at most the request timeout.
    pub async fn request(&self, mut iq: Element) -> Result<Element, IqError> {
        let id = self.next_id("herald");
        iq.set_attr(rxml::Namespace::NONE, crate::n!("id"), id.as_str());
        let answer = self.tracker.register(id.clone());
        if self.send(iq).await.is_err() {
            self.tracker.forget(&id);
            return Err(IqError::Closed);
        }
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(IqError::Closed),
            Err(_) => {
                self.tracker.forget(&id);
                Err(IqError::Timeout)
            }
        }
    }
}
