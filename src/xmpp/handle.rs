//! The cloneable front end of the connection: what every owner holds to send stanzas and to
//! await answers to its IQs.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use minidom::Element;
use tokio::sync::mpsc;

use super::iq_tracker::{IqError, IqTracker};

/// Which of the writer's two queues a stanza joins.
///
/// The writer always empties [`Lane::Priority`] first: IQ answers, keepalive and snapshot pings
/// and other control stanzas never wait behind bulk sink traffic (up to 50 000 events ahead).
/// Each lane keeps its own order; there is no order between the lanes, so a stanza whose meaning
/// depends on what was sent before it (the ping that acknowledges a batch of messages) goes on
/// the same lane as those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Priority,
    Bulk,
}

/// Capacity of the priority lane, in stanzas.
pub const PRIORITY_CAPACITY: usize = 1024;
/// Capacity of the bulk lane, in pieces (an XMPP sink hands over about 32 KiB per piece).
pub const BULK_CAPACITY: usize = 4096;

/// A queued piece of the outbound stream.
#[derive(Debug)]
pub struct Outbound {
    /// The connection generation when it was queued.
    pub generation: u64,
    pub xml: Bytes,
}

/// The writer's ends of both lanes; they outlive connections, so what was queued while
/// disconnected goes out after the reconnect (unless it belongs to an older generation).
pub struct OutboundQueues {
    pub priority: mpsc::Receiver<Outbound>,
    pub bulk: mpsc::Receiver<Outbound>,
}

/// Sends stanzas through the connection and awaits answers to IQs.
///
/// Stanzas travel as XML text, rendered by the sender, so the connection's writer only writes.
/// Both lanes are bounded (every owner sends, the connection's writer receives): when one is full
/// (the server is slow or herald is reconnecting) its senders wait, which slows the producers
/// instead of growing memory.
#[derive(Clone)]
pub struct XmppHandle {
    priority: mpsc::Sender<Outbound>,
    bulk: mpsc::Sender<Outbound>,
    tracker: IqTracker,
    jid: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
#[error("the connection task has stopped")]
pub struct Closed;

#[derive(Debug, thiserror::Error)]
#[error("the outbound lane is full or the connection task has stopped")]
pub struct Full;

impl XmppHandle {
    /// A handle and the writer's ends of its lanes.
    pub fn new(tracker: IqTracker, jid: &str) -> (Self, OutboundQueues) {
        let (priority, priority_rx) = mpsc::channel(PRIORITY_CAPACITY);
        let (bulk, bulk_rx) = mpsc::channel(BULK_CAPACITY);
        let handle = XmppHandle {
            priority,
            bulk,
            tracker,
            jid: jid.into(),
        };
        let queues = OutboundQueues {
            priority: priority_rx,
            bulk: bulk_rx,
        };
        (handle, queues)
    }

    /// The component's JID: the `from` of everything herald sends.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Queues a stanza on `lane`.
    pub async fn send(&self, lane: Lane, stanza: &Element) -> Result<(), Closed> {
        self.send_text_on(lane, Bytes::from(String::from(stanza)))
            .await
    }

    /// Queues bulk stanzas already rendered as XML text: one or more complete top-level
    /// elements with every namespace they use declared (the stream's default is
    /// `jabber:component:accept`). They go out on the current connection or, if it is down, on
    /// the next one; stanzas queued before a connection was lost are dropped with it (see
    /// [`IqTracker::generation`]).
    pub async fn send_text(&self, xml: Bytes) -> Result<(), Closed> {
        self.send_text_on(Lane::Bulk, xml).await
    }

    /// Queues rendered XML text on `lane` (see [`XmppHandle::send_text`]).
    pub async fn send_text_on(&self, lane: Lane, xml: Bytes) -> Result<(), Closed> {
        let item = Outbound {
            generation: self.tracker.generation(),
            xml,
        };
        let queue = match lane {
            Lane::Priority => &self.priority,
            Lane::Bulk => &self.bulk,
        };
        queue.send(item).await.map_err(|_| Closed)
    }

    /// Queues a stanza on `lane` unless that lane is full (the writer is stalled); never waits.
    pub fn try_send(&self, lane: Lane, stanza: &Element) -> Result<(), Full> {
        let item = Outbound {
            generation: self.tracker.generation(),
            xml: Bytes::from(String::from(stanza)),
        };
        let queue = match lane {
            Lane::Priority => &self.priority,
            Lane::Bulk => &self.bulk,
        };
        queue.try_send(item).map_err(|_| Full)
    }

    /// The current connection generation: a sink compares it before and after sending a batch
    /// to know whether all of it went to one connection.
    pub fn generation(&self) -> u64 {
        self.tracker.generation()
    }

    /// Queues an IQ on `lane` (its `id` is set here, random; its `to` must be set: only an
    /// answer from that JID counts) and returns the wait for its answer, with no deadline of its
    /// own: it ends with the answer, or with an error when the connection is lost or herald
    /// stops. The caller decides how long to wait.
    pub async fn request(
        &self,
        lane: Lane,
        mut iq: Element,
    ) -> Result<impl Future<Output = Result<Element, IqError>> + Send + 'static, IqError> {
        let to = iq.attr("to").unwrap_or_default().to_owned();
        let (id, answer) = self.tracker.register(&to);
        iq.set_attr(rxml::Namespace::NONE, crate::n!("id"), id.as_str());
        // A caller that stops waiting (its deadline passed, also while the lane is full and this
        // send still waits) drops the guard: it then forgets the request, so unanswered IQs do
        // not pile up until the next reconnect.
        let guard = ForgetOnDrop {
            tracker: self.tracker.clone(),
            id,
        };
        if self.send(lane, &iq).await.is_err() {
            return Err(IqError::Closed);
        }
        Ok(async move {
            let answer = answer.await.unwrap_or(Err(IqError::Closed));
            drop(guard);
            answer
        })
    }

    /// [`XmppHandle::request`] on the bulk lane, behind the bulk stanzas queued before it.
    pub async fn queue_request(
        &self,
        iq: Element,
    ) -> Result<impl Future<Output = Result<Element, IqError>> + Send + 'static, IqError> {
        self.request(Lane::Bulk, iq).await
    }
}

/// Forgets a pending request when its wait is dropped (after an answer it is gone already).
struct ForgetOnDrop {
    tracker: IqTracker,
    id: String,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        self.tracker.forget(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(to: &str) -> Element {
        format!("<iq xmlns='jabber:component:accept' type='get' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_given_up_while_its_lane_is_full_is_forgotten() {
        let tracker = IqTracker::new();
        let (handle, _queues) = XmppHandle::new(tracker.clone(), "herald.localhost");
        for _ in 0..BULK_CAPACITY {
            handle.try_send(Lane::Bulk, &ping("a.localhost")).unwrap();
        }
        // Nothing drains the lane: the send waits until the caller gives up.
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            handle.request(Lane::Bulk, ping("push.localhost")),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(tracker.len(), 0, "the abandoned request is still pending");
    }
}
