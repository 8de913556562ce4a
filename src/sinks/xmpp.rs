//! The XMPP sink: one `<message/>` per event to a "server user", in the exact shape of MongooseIM
//! `mod_presence_notify`, so its consumers keep working:
//!
//! ```xml
//! <message type="chat" id="TRACE" to="world@example.org" from="herald.example.org">
//!   <body>Presence update</body>
//!   <event xmlns="flux:xmpp" mime="application/json">{…json…}</event>
//! </message>
//! ```

use minidom::Element;

use crate::events::PresenceEvent;
use crate::xmpp::handle::{Closed, XmppHandle};
use crate::xmpp::stanza::NS_COMPONENT;

pub const NS_FLUX: &str = "flux:xmpp";
pub const BODY: &str = "Presence update";

pub struct XmppSink {
    handle: XmppHandle,
    to: String,
}

impl XmppSink {
    /// `to`: the server user's bare JID (`server_user@domain`).
    pub fn new(handle: XmppHandle, to: String) -> Self {
        XmppSink { handle, to }
    }

    pub async fn deliver(&self, event: &PresenceEvent) -> Result<(), Closed> {
        self.handle
            .send(message(event, &self.to, self.handle.jid()))
            .await
    }
}

/// The message that carries `event` to `to`.
pub fn message(event: &PresenceEvent, to: &str, from: &str) -> Element {
    Element::builder("message", NS_COMPONENT)
        .attr(crate::n!("type"), "chat")
        .attr(crate::n!("id"), event.trace.as_str())
        .attr(crate::n!("to"), to)
        .attr(crate::n!("from"), from)
        .append(Element::builder("body", NS_COMPONENT).append(BODY).build())
        .append(
            Element::builder("event", NS_FLUX)
                .attr(crate::n!("mime"), "application/json")
                .append(event.to_json())
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
