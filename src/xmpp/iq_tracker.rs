//! Lets any task await the answer to an IQ that herald sends.
//!
//! The requester registers the stanza id before the IQ is queued; the connection task hands every
//! `result`/`error` IQ to [`IqTracker::resolve`]. On disconnect every pending request fails with
//! [`IqError::Disconnected`]: after a reconnect the server has forgotten them.
//!
//! The tracker also counts connections ([`IqTracker::generation`]): every [`IqTracker::fail_all`]
//! starts a new generation. Stanzas queued in an older generation are not written on the next
//! connection (their requests failed with the old one; a sink sends them again, in order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use minidom::Element;
use tokio::sync::oneshot;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IqError {
    #[error("no answer within the request timeout")]
    Timeout,
    #[error("the connection to the server was lost before the answer came")]
    Disconnected,
    #[error("herald is shutting down")]
    Closed,
    #[error("the peer answered with an error: {condition}")]
    Error { condition: String, stanza: Element },
}

type Waiter = oneshot::Sender<Result<Element, IqError>>;

/// Shared table of pending requests, keyed by stanza id.
#[derive(Clone, Default)]
pub struct IqTracker {
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    generation: Arc<AtomicU64>,
}

impl IqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `id`; the receiver yields the answer.
    pub fn register(&self, id: String) -> oneshot::Receiver<Result<Element, IqError>> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Forgets `id` (the requester gave up waiting).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Delivers an inbound `result`/`error` IQ. Returns false when nobody waits for this id.
    pub fn resolve(&self, iq: Element) -> bool {
        let Some(id) = iq.attr("id") else {
            return false;
        };
        let Some(waiter) = self.lock().remove(id) else {
            return false;
        };
        let answer = if iq.attr("type") == Some("error") {
            let condition = super::stanza::error_condition(&iq)
                .unwrap_or("undefined-condition")
                .to_owned();
            Err(IqError::Error {
                condition,
                stanza: iq,
            })
        } else {
            Ok(iq)
        };
        // The requester may have timed out meanwhile; that is fine.
        let _ = waiter.send(answer);
        true
    }

    /// The current connection generation (see the module documentation).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a new generation, then fails every pending request with `error`.
    pub fn fail_all(&self, error: IqError) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let drained: Vec<Waiter> = self.lock().drain().map(|(_, w)| w).collect();
        for w in drained {
            let _ = w.send(Err(error.clone()));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        // The map stays consistent even if a holder panicked: every operation is a single call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iq(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[tokio::test]
    async fn result_reaches_its_waiter() {
        let t = IqTracker::new();
        let rx = t.register("a1".into());
        assert!(t.resolve(iq(
            "<iq xmlns='jabber:component:accept' type='result' id='a1'/>"
        )));
        assert!(rx.await.unwrap().is_ok());
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn error_answer_is_typed() {
        let t = IqTracker::new();
        let rx = t.register("a2".into());
        t.resolve(iq("<iq xmlns='jabber:component:accept' type='error' id='a2'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
        match rx.await.unwrap() {
            Err(IqError::Error { condition, .. }) => assert_eq!(condition, "item-not-found"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn disconnect_fails_every_pending_request() {
        let t = IqTracker::new();
        let a = t.register("x".into());
        let b = t.register("y".into());
        t.fail_all(IqError::Disconnected);
        assert_eq!(a.await.unwrap(), Err(IqError::Disconnected));
        assert_eq!(b.await.unwrap(), Err(IqError::Disconnected));
        assert!(!t.resolve(iq(
            "<iq xmlns='jabber:component:accept' type='result' id='x'/>"
        )));
    }
}
