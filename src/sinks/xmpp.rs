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

use bytes::Bytes;
use serde::Deserialize;

use crate::outbox::{worker::Policy, Batch, PendingAck, Pipelined, SendRefused};
use crate::xmpp::handle::XmppHandle;
use crate::xmpp::iq_tracker::IqError;
use crate::xmpp::stanza::{self, escape_attr_into, escape_text_into};

pub const NS_FLUX: &str = "flux:xmpp";
pub const BODY: &str = "Presence update";

/// Delivery policy of XMPP sinks (no config keys: the server is local and fast).
///
/// There is no acknowledgement timeout while herald runs: a late answer to a batch's ping is
/// waited for as long as the stream is up (the connection's keepalive and `read_timeout` decide
/// that, and a lost stream fails every pending ping), because sending again on a stream that is
/// still up only doubles the traffic of a busy server. `shutdown_wait`
/// (`component.request_timeout`) is how long the acknowledgements in flight are still waited
/// for once herald is stopping.
pub fn policy(shutdown_wait: Duration) -> Policy {
    Policy {
        ack_timeout: shutdown_wait,
        batch_max: BATCH_MAX,
        batch_delay: Duration::ZERO,
        max_backlog: 1_000_000,
        retry_min: Duration::from_millis(500),
        retry_max: Duration::from_secs(30),
        // The acknowledging ping queues behind everything the server is sending herald: under
        // load that is a whole socket buffer of presences, so many batches must be in flight.
        in_flight: 50_000,
    }
}

const BATCH_MAX: usize = 1_000;
/// Rendered messages are handed to the connection in pieces of about this size.
const CHUNK: usize = 32 * 1024;

/// Sends each event as a message to the server user, then pings the server user's domain: the
/// server handles a component's stanzas in order, so the answer acknowledges the whole batch.
/// Batches are pipelined: the next goes out before the previous one's answer is back, and an
/// answer is waited for as long as the connection lives. A lost connection fails the pings
/// (`IqError::Disconnected`) and only then does the worker send everything unacknowledged
/// again, on the next connection (at least once; the `id`/`trace` lets the receiver drop
/// duplicates). A batch split across two connections is not acknowledged by its ping either.
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

impl Pipelined for XmppSink {
    fn describe(&self) -> String {
        format!("xmpp {}", self.to)
    }

    async fn send(&self, batch: &Batch) -> Result<PendingAck, SendRefused> {
        // Check every event before sending any, so a bad one cannot leave half a batch behind.
        let mut texts = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            let Ok(json) = std::str::from_utf8(&e.json) else {
                return Err(SendRefused::DeadLetter(format!(
                    "stored event {} is not UTF-8",
                    e.seq
                )));
            };
            let Ok(Trace { trace }) = serde_json::from_str::<Trace>(json) else {
                return Err(SendRefused::DeadLetter(format!(
                    "stored event {} has no trace",
                    e.seq
                )));
            };
            texts.push((trace, json));
        }
        let from = self.handle.jid();
        // The whole batch and its ping must go to one connection (see the end).
        let generation = self.handle.generation();
        let mut chunk = String::with_capacity(CHUNK + 1024);
        for (trace, json) in texts {
            render_message(&mut chunk, trace, json, &self.to, from);
            if chunk.len() >= CHUNK {
                let full = std::mem::replace(&mut chunk, String::with_capacity(CHUNK + 1024));
                self.send_text(full).await?;
            }
        }
        if !chunk.is_empty() {
            self.send_text(chunk).await?;
        }
        let ping = stanza::ping("", from, &self.domain);
        let answer = self
            .handle
            .queue_request(ping)
            .await
            .map_err(|_| SendRefused::Closed)?;
        if self.handle.generation() != generation {
            // The connection was lost while the batch was queued: its first part may be gone
            // with it while the ping goes out on the next one. Not an acknowledgement.
            return Ok(Box::pin(async {
                Err("the connection was lost while the batch was sent".to_owned())
            }));
        }
        Ok(Box::pin(async move {
            match answer.await {
                // Any answer, even an error, means the server processed everything sent before it.
                Ok(_) | Err(IqError::Stanza(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }))
    }
}

impl XmppSink {
    async fn send_text(&self, text: String) -> Result<(), SendRefused> {
        self.handle
            .send_text(Bytes::from(text))
            .await
            .map_err(|_| SendRefused::Closed)
    }
}

/// Appends the message that carries an event (given as its `trace` and JSON text) to `to`, as it
/// goes on the stream (the stream's default namespace is the component namespace).
pub fn render_message(out: &mut String, trace: &str, json: &str, to: &str, from: &str) {
    out.push_str("<message type='chat' id='");
    escape_attr_into(out, trace);
    out.push_str("' to='");
    escape_attr_into(out, to);
    out.push_str("' from='");
    escape_attr_into(out, from);
    out.push_str("'><body>");
    out.push_str(BODY);
    out.push_str("</body><event xmlns='");
    out.push_str(NS_FLUX);
    out.push_str("' mime='application/json'>");
    escape_text_into(out, json);
    out.push_str("</event></message>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::PresenceEvent;
    use crate::xmpp::stanza::NS_COMPONENT;
    use minidom::Element;

    /// The message for an event given as its `trace` and JSON text, built as a tree: the
    /// reference the rendered text is checked against.
    fn message_from_json(trace: &str, json: &str, to: &str, from: &str) -> Element {
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
        // As it goes on the stream, parsed as the server user's client would.
        let mut text = String::from("<stream xmlns='jabber:component:accept'>");
        render_message(
            &mut text,
            &e.trace,
            &e.to_json(),
            "world@example.org",
            "herald.example.org",
        );
        text.push_str("</stream>");
        let root: Element = text.parse().unwrap();
        let back = root.children().next().unwrap();
        assert_eq!(back.ns(), NS_COMPONENT);
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

    #[test]
    fn rendered_text_is_the_same_message() {
        let json = r#"{"trace":"t-1","args":{"status":"a < b & 'c' \"d\" ]]>"}}"#;
        let mut text = String::from("<stream xmlns='jabber:component:accept'>");
        render_message(
            &mut text,
            "t-1",
            json,
            "w'o&rld@example.org",
            "herald.example.org",
        );
        text.push_str("</stream>");
        let root: Element = text.parse().unwrap();
        let rendered = root.children().next().unwrap();
        assert_eq!(
            rendered,
            &message_from_json("t-1", json, "w'o&rld@example.org", "herald.example.org")
        );
    }
}
