//! The XMPP sink: one `<message/>` per event to a "server user", in the exact shape of MongooseIM
//! `mod_presence_notify`, so its consumers keep working:
//!
//! ```xml
//! <message type="chat" id="TRACE" to="world@example.org" from="herald.example.org">
//!   <body>Presence update</body>
//!   <event xmlns="flux:xmpp" mime="application/json">{…json…}</event>
//! </message>
//! ```

use std::time::Duration;

use minidom::Element;
use serde::Deserialize;

use crate::events::PresenceEvent;
use crate::outbox::{worker::Policy, Batch, Transport, Verdict};
use crate::xmpp::handle::XmppHandle;
use crate::xmpp::iq_tracker::IqError;
use crate::xmpp::stanza::{self, NS_COMPONENT};

pub const NS_FLUX: &str = "flux:xmpp";
pub const BODY: &str = "Presence update";

/// Delivery policy of XMPP sinks (no config keys: the server is local and fast).
pub fn policy() -> Policy {
    Policy {
        // Large: each batch waits for one ping round trip, which queues behind inbound traffic.
        batch_max: 2000,
        batch_delay: Duration::ZERO,
        max_backlog: 1_000_000,
        retry_min: Duration::from_millis(500),
        retry_max: Duration::from_secs(30),
    }
}

/// Sends each event as a message to the server user, then pings the server user's domain: the
/// server handles a component's stanzas in order, so the answer acknowledges the whole batch.
/// A lost connection fails the ping and the batch is sent again after the reconnect (at least
/// once; the `id`/`trace` lets the receiver drop duplicates).
pub struct XmppSink {
    handle: XmppHandle,
    to: String,
    domain: String,
}

impl XmppSink {
    /// `to`: the server user's bare JID (`server_user@domain`).
    pub fn new(handle: XmppHandle, to: String, domain: String) -> Self {
        XmppSink { handle, to, domain }
    }
}

#[derive(Deserialize)]
struct Trace<'a> {
    #[serde(borrow)]
    trace: &'a str,
}

impl Transport for XmppSink {
    fn describe(&self) -> String {
        format!("xmpp {}", self.to)
    }

    async fn deliver(&self, batch: &Batch) -> Verdict {
        for e in &batch.events {
            let Ok(json) = std::str::from_utf8(&e.json) else {
                return Verdict::DeadLetter {
                    reason: "stored event is not UTF-8".into(),
                };
            };
            let Ok(Trace { trace }) = serde_json::from_str::<Trace>(json) else {
                return Verdict::DeadLetter {
                    reason: "stored event has no trace".into(),
                };
            };
            let msg = message_from_json(trace, json, &self.to, self.handle.jid());
            if self.handle.send(msg).await.is_err() {
                return Verdict::Retry {
                    after: None,
                    reason: "herald is shutting down".into(),
                };
            }
        }
        let ping = stanza::ping("", self.handle.jid(), &self.domain);
        match self.handle.request(ping).await {
            // Any answer, even an error, means the server processed everything sent before it.
            Ok(_) | Err(IqError::Error { .. }) => Verdict::Delivered,
            Err(e) => Verdict::Retry {
                after: None,
                reason: e.to_string(),
            },
        }
    }
}

/// The message that carries `event` to `to`.
pub fn message(event: &PresenceEvent, to: &str, from: &str) -> Element {
    message_from_json(&event.trace, &event.to_json(), to, from)
}

/// The message for an event given as its `trace` and JSON text.
pub fn message_from_json(trace: &str, json: &str, to: &str, from: &str) -> Element {
    Element::builder("message", NS_COMPONENT)
        .attr(crate::n!("type"), "chat")
        .attr(crate::n!("id"), trace)
        .attr(crate::n!("to"), to)
        .attr(crate::n!("from"), from)
        .append(Element::builder("body", NS_COMPONENT).append(BODY).build())
        .append(
            Element::builder("event", NS_FLUX)
                .attr(crate::n!("mime"), "application/json")
                .append(json)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Availability, EventArgs, Source};

    #[test]
    fn message_has_the_seed_shape() {
        let e = PresenceEvent::new(
            7,
            0,
            Source::Live,
            EventArgs {
                user: "alice@example.org/phone".into(),
                presence: Availability::Available,
                show: None,
                status: Some("<b>&amp;".into()),
                priority: 0,
                resources: 1,
            },
        );
        let m = message(&e, "world@example.org", "herald.example.org");
        // Round trip through text, as the server user's client would see it.
        let text = String::from(&m);
        let back: Element = text.parse().unwrap();
        assert_eq!(back.name(), "message");
        assert_eq!(back.attr("type"), Some("chat"));
        assert_eq!(back.attr("id"), Some(e.trace.as_str()));
        assert_eq!(back.attr("to"), Some("world@example.org"));
        assert_eq!(back.attr("from"), Some("herald.example.org"));
        assert_eq!(back.get_child("body", NS_COMPONENT).unwrap().text(), BODY);
        let ev = back.get_child("event", NS_FLUX).unwrap();
        assert_eq!(ev.attr("mime"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&ev.text()).unwrap();
        assert_eq!(json["trace"], e.trace.as_str());
        assert_eq!(json["args"]["status"], "<b>&amp;");
        assert_eq!(json["seq"], 7);
        assert_eq!(back.children().count(), 2);
    }
}
