//! Hands every event to every configured sink, in `seq` order.

use super::PresenceEvent;
use crate::sinks::xmpp::XmppSink;
use crate::xmpp::handle::Closed;

/// The set of sinks. Owned by the presence service; `publish` is awaited in event order, so each
/// sink sees events in `seq` order.
#[derive(Default)]
pub struct Fanout {
    xmpp: Vec<XmppSink>,
}

impl Fanout {
    pub fn new(xmpp: Vec<XmppSink>) -> Self {
        Fanout { xmpp }
    }

    pub async fn publish(&self, event: &PresenceEvent) -> Result<(), Closed> {
        for sink in &self.xmpp {
            sink.deliver(event).await?;
        }
        Ok(())
    }
}
