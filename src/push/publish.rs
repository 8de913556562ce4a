//! The XEP-0357 publish herald sends an app server, laid out as Prosody's `mod_cloud_notify`
//! builds it: `pubsub/publish/item/notification` with the `urn:xmpp:push:summary` form, then
//! the registration's publish-options `<x/>` as the client sent it. Pure.
//!
//! What a push says is decided when the message is read ([`PendingPush`]): the sender only with
//! `push.with_sender`, the body only with `push.with_body` (else `push.important_body`), so that
//! nothing the settings exclude is ever written to the store.

use minidom::Element;
use serde::{Deserialize, Serialize};

use super::decide::Counted;
use crate::config::PushSettings;
use crate::xmpp::stanza::NS_COMPONENT;

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUSH: &str = "urn:xmpp:push:0";
pub const NS_DATA: &str = "jabber:x:data";
pub const FORM_SUMMARY: &str = "urn:xmpp:push:summary";

/// A push herald decided to send: persisted before it is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPush {
    /// The watcher (bare JID, lowercase).
    pub user: String,
    /// The registration ([`super::Registration::key`]); its app server, node and options are
    /// read from the store when the push is published.
    pub reg_key: String,
    /// The app server (bare JID), for the per-server concurrency cap.
    pub app: String,
    /// `message-count`: messages pushed to this registration since the user was last present.
    pub count: u64,
    /// `last-message-sender` (`room@service/nick`), only with `push.with_sender`.
    pub sender: Option<String>,
    /// `last-message-body`: the body (`push.with_body`) or the placeholder.
    pub body: Option<String>,
    /// When the (latest) message was read, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// When the first message of this push was read: `push.max_age` counts from here.
    pub first_ms: i64,
}

/// What the settings let a push say of a counted message: `(sender, body)`.
pub fn content(c: &Counted<'_>, room: &str, s: &PushSettings) -> (Option<String>, Option<String>) {
    let sender = s.with_sender.then(|| c.sender(room));
    let body = match (&c.body, s.with_body) {
        (Some(b), true) => Some(b.clone()),
        _ if s.important_body.is_empty() => None,
        _ => Some(s.important_body.clone()),
    };
    (sender, body)
}

fn field(var: &str, kind: &str, value: Option<&str>) -> Element {
    let mut f = Element::builder("field", NS_DATA)
        .attr(crate::n!("type"), kind)
        .attr(crate::n!("var"), var);
    if let Some(v) = value {
        f = f.append(Element::builder("value", NS_DATA).append(v).build());
    }
    f.build()
}

/// The publish IQ (without `id`: the request sets it). `options` is the registration's stored
/// publish-options form; one that no longer parses is left out (and `false` is returned with
/// the IQ so that the caller can say so).
pub fn publish_iq(
    from: &str,
    app: &str,
    node: &str,
    push: &PendingPush,
    options: Option<&str>,
) -> (Element, bool) {
    let count = push.count.to_string();
    let form = Element::builder("x", NS_DATA)
        .attr(crate::n!("type"), "form")
        .append(field("FORM_TYPE", "hidden", Some(FORM_SUMMARY)))
        .append(field("message-count", "text-single", Some(&count)))
        .append(field("pending-subscription-count", "text-single", None))
        .append(field(
            "last-message-sender",
            "jid-single",
            push.sender.as_deref(),
        ))
        .append(field(
            "last-message-body",
            "text-single",
            push.body.as_deref(),
        ))
        .build();
    let item = Element::builder("item", NS_PUBSUB)
        .append(
            Element::builder("notification", NS_PUSH)
                .append(form)
                .build(),
        )
        .build();
    let publish = Element::builder("publish", NS_PUBSUB)
        .attr(crate::n!("node"), node)
        .append(item)
        .build();
    let mut pubsub = Element::builder("pubsub", NS_PUBSUB).append(publish);
    let mut options_ok = true;
    if let Some(xml) = options {
        match xml.parse::<Element>() {
            Ok(x) => {
                pubsub = pubsub.append(
                    Element::builder("publish-options", NS_PUBSUB)
                        .append(x)
                        .build(),
                );
            }
            Err(_) => options_ok = false,
        }
    }
    let iq = Element::builder("iq", NS_COMPONENT)
        .attr(crate::n!("type"), "set")
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), app)
        .append(pubsub.build())
        .build();
    (iq, options_ok)
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
