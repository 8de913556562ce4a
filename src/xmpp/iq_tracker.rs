//! Lets any task await the answer to an IQ that herald sends.
//!
//! The requester registers the IQ before it is queued: the tracker picks a random, unguessable
//! id (128 bits) and remembers the JID the request goes to. The connection hands every
//! `result`/`error` IQ to [`IqTracker::resolve`], which accepts it only when its `from` is that
//! JID: anyone who can address herald can send it an `<iq type='result'/>`, but without the id
//! and from the right address it acknowledges nothing. On disconnect every pending request fails
//! with [`IqError::Disconnected`]: after a reconnect the server has forgotten them. Deadlines
//! belong to the callers; the tracker never times out anything by itself.
//!
//! The tracker also counts connections ([`IqTracker::generation`]): every [`IqTracker::fail_all`]
//! starts a new generation. Stanzas queued in an older generation are not written on the next
//! connection (their requests failed with the old one; a sink sends them again, in order).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use minidom::Element;
use tokio::sync::oneshot;

use super::stanza::StanzaError;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IqError {
    #[error("the connection to the server was lost before the answer came")]
    Disconnected,
    #[error("herald is shutting down")]
    Closed,
    /// The peer answered with `<iq type='error'/>`.
    #[error("the peer answered with an error: {0}")]
    Stanza(StanzaError),
}

type Waiter = oneshot::Sender<Result<Element, IqError>>;

struct Pending {
    /// The JID the request went to, compared as [`same_jid`] does.
    to: Box<str>,
    waiter: Waiter,
}

/// What [`IqTracker::resolve`] did with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Delivered to its waiter.
    Resolved,
    /// No request has this id (late, unknown or forged).
    Unknown,
    /// A request has this id, but it went to another JID: ignored, the request still waits.
    WrongSender,
}

/// Shared table of pending requests, keyed by stanza id.
#[derive(Clone, Default)]
pub struct IqTracker {
    pending: Arc<Mutex<HashMap<Box<str>, Pending>>>,
    generation: Arc<AtomicU64>,
}

impl fmt::Debug for IqTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IqTracker")
            .field("pending", &self.len())
            .field("generation", &self.generation())
            .finish()
    }
}

impl IqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a request to `to`; returns its fresh id and the receiver of its answer.
    pub fn register(&self, to: &str) -> (String, oneshot::Receiver<Result<Element, IqError>>) {
        let id = format!("h{:032x}", rand::random::<u128>());
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            id.as_str().into(),
            Pending {
                to: to.into(),
                waiter: tx,
            },
        );
        (id, rx)
    }

    /// Forgets `id` (the requester gave up waiting).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Delivers an inbound `result`/`error` IQ to the request it answers.
    pub fn resolve(&self, iq: Element) -> Resolution {
        let Some(id) = iq.attr("id") else {
            return Resolution::Unknown;
        };
        let from = iq.attr("from").unwrap_or_default();
        let waiter = {
            let mut pending = self.lock();
            match pending.get(id) {
                None => return Resolution::Unknown,
                Some(p) if !same_jid(&p.to, from) => return Resolution::WrongSender,
                Some(_) => match pending.remove(id) {
                    Some(p) => p.waiter,
                    None => return Resolution::Unknown,
                },
            }
        };
        let answer = if iq.attr("type") == Some("error") {
            Err(IqError::Stanza(StanzaError::from_stanza(&iq)))
        } else {
            Ok(iq)
        };
        // The requester may have given up meanwhile; that is fine.
        let _ = waiter.send(answer);
        Resolution::Resolved
    }

    /// The current connection generation (see the module documentation).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a new generation, then fails every pending request with `error`.
    pub fn fail_all(&self, error: IqError) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let drained: Vec<Waiter> = self.lock().drain().map(|(_, p)| p.waiter).collect();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Pending>> {
        // The map stays consistent even if a holder panicked: every operation is a single call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an answer from `from` can come from `to`: the same JID, with the node and domain
/// compared without regard to ASCII case (servers normalise them; the resource is exact).
pub fn same_jid(to: &str, from: &str) -> bool {
    let (to_bare, to_res) = to.split_once('/').map_or((to, None), |(b, r)| (b, Some(r)));
    let (from_bare, from_res) = from
        .split_once('/')
        .map_or((from, None), |(b, r)| (b, Some(r)));
    to_res == from_res && to_bare.eq_ignore_ascii_case(from_bare)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::ErrorType;

    fn iq(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[tokio::test]
    async fn result_reaches_its_waiter() {
        let t = IqTracker::new();
        let (id, rx) = t.register("localhost");
        let answer = format!(
            "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='LocalHost'/>"
        );
        assert_eq!(t.resolve(iq(&answer)), Resolution::Resolved);
        assert!(rx.await.unwrap().is_ok());
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn an_answer_from_another_jid_resolves_nothing() {
        let t = IqTracker::new();
        let (id, mut rx) = t.register("localhost");
        for from in ["mallory@localhost/x", "evil.example", ""] {
            let forged = format!(
                "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{from}'/>"
            );
            assert_eq!(t.resolve(iq(&forged)), Resolution::WrongSender, "{from}");
        }
        let no_from = format!("<iq xmlns='jabber:component:accept' type='result' id='{id}'/>");
        assert_eq!(t.resolve(iq(&no_from)), Resolution::WrongSender);
        assert!(rx.try_recv().is_err(), "still waiting");
        assert_eq!(t.len(), 1);
        let guessed =
            "<iq xmlns='jabber:component:accept' type='result' id='herald-7' from='localhost'/>";
        assert_eq!(t.resolve(iq(guessed)), Resolution::Unknown);
    }

    #[test]
    fn ids_are_unguessable() {
        let t = IqTracker::new();
        let (a, _ra) = t.register("x");
        let (b, _rb) = t.register("x");
        assert_ne!(a, b);
        assert_eq!(a.len(), 33);
    }

    #[tokio::test]
    async fn error_answer_is_typed() {
        let t = IqTracker::new();
        let (id, rx) = t.register("app.example/x");
        t.resolve(iq(&format!("<iq xmlns='jabber:component:accept' type='error' id='{id}' from='app.example/x'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>busy</text></error></iq>")));
        match rx.await.unwrap() {
            Err(IqError::Stanza(e)) => {
                assert_eq!(e.kind, ErrorType::Wait);
                assert_eq!(e.condition, "resource-constraint");
                assert_eq!(e.text.as_deref(), Some("busy"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn disconnect_fails_every_pending_request() {
        let t = IqTracker::new();
        let (x, a) = t.register("localhost");
        let (_, b) = t.register("localhost");
        t.fail_all(IqError::Disconnected);
        assert_eq!(a.await.unwrap(), Err(IqError::Disconnected));
        assert_eq!(b.await.unwrap(), Err(IqError::Disconnected));
        let late = format!(
            "<iq xmlns='jabber:component:accept' type='result' id='{x}' from='localhost'/>"
        );
        assert_eq!(t.resolve(iq(&late)), Resolution::Unknown);
    }

    #[test]
    fn jids_compare_case_insensitively_except_the_resource() {
        assert!(same_jid("a@Example.org/Phone", "A@example.ORG/Phone"));
        assert!(!same_jid("a@example.org/Phone", "a@example.org/phone"));
        assert!(!same_jid("a@example.org", "a@example.org/phone"));
        assert!(!same_jid("example.org", "a@example.org"));
    }
}
