//! Probing a server after its privilege advertisement: one disco#info (which software, so
//! `snapshot = "auto"` knows whether the server sends snapshots) and one XEP-0199 ping, whose
//! answer marks the end of the presence snapshot the server sent with its advertisement (the
//! server answers in order, and the connection hands herald everything read before an answer
//! first). At most one probe per connection and domain: a server (or anyone) that repeats its
//! advertisement gets no more IQs for it.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use futures::FutureExt;
use minidom::Element;

use crate::xmpp::handle::{Lane, XmppHandle};
use crate::xmpp::stanza::{self, NS_DISCO_INFO};

/// The outcome of one domain's probe.
#[derive(Debug)]
pub struct ProbeAnswer {
    pub epoch: u64,
    pub domain: String,
    /// The server's software name from its `server` identity, if it answered with one.
    pub software: Option<String>,
    /// The ping was answered (the snapshot before it is complete); `false`: the connection was
    /// lost first.
    pub snapshot_end: bool,
}

pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeAnswer> + Send>>;

/// The domains probed on the current connection.
#[derive(Debug, Default)]
pub struct Probes {
    epoch: u64,
    probed: HashSet<String>,
    outstanding: usize,
}

impl Probes {
    /// A new connection: every domain may be probed once more.
    pub fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.probed.clear();
        self.outstanding = 0;
    }

    /// Whether probes of this connection are still unanswered.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Takes an answer; `false` if it belongs to an older connection.
    pub fn answered(&mut self, answer: &ProbeAnswer) -> bool {
        if answer.epoch != self.epoch {
            return false;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        true
    }

    /// Sends the probe of `domain` unless it was probed on this connection already.
    pub async fn probe(&mut self, handle: &XmppHandle, domain: &str) -> Option<ProbeFuture> {
        if !self.probed.insert(domain.to_owned()) {
            return None;
        }
        let me = handle.jid().to_owned();
        // Asked before the ping, so answered before it too.
        let info = handle
            .request(Lane::Priority, stanza::disco_info_query("", &me, domain))
            .await;
        let ping = handle
            .request(Lane::Priority, stanza::ping("", &me, domain))
            .await;
        self.outstanding += 1;
        let (epoch, domain) = (self.epoch, domain.to_owned());
        Some(Box::pin(async move {
            let snapshot_end = match ping {
                // An error answer also comes after everything sent before it.
                Ok(answer) => !matches!(
                    answer.await,
                    Err(crate::xmpp::IqError::Disconnected | crate::xmpp::IqError::Closed)
                ),
                Err(_) => false,
            };
            // The server answers in order: by now the disco#info answer is in, or never comes.
            let software = match info {
                Ok(answer) => answer
                    .now_or_never()
                    .and_then(Result::ok)
                    .and_then(|iq| server_software(&iq)),
                Err(_) => None,
            };
            ProbeAnswer {
                epoch,
                domain,
                software,
                snapshot_end,
            }
        }))
    }
}

/// The software name of a disco#info result's `server` identity.
pub fn server_software(iq: &Element) -> Option<String> {
    let query = iq.get_child("query", NS_DISCO_INFO)?;
    query
        .children()
        .filter(|c| c.name() == "identity")
        .find(|c| c.attr("category") == Some("server"))
        .and_then(|c| c.attr("name"))
        .map(|name| crate::presence::sanitize::cap_text(name, 64).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::IqTracker;

    #[test]
    fn server_software_reads_the_server_identity() {
        let prosody: Element = "<iq xmlns='jabber:component:accept' type='result' from='localhost' id='x'><query xmlns='http://jabber.org/protocol/disco#info'><identity type='pep' category='pubsub'/><identity type='im' name='Prosody' category='server'/><feature var='urn:xmpp:ping'/></query></iq>".parse().unwrap();
        assert_eq!(server_software(&prosody).as_deref(), Some("Prosody"));
        let bare: Element =
            "<iq xmlns='jabber:component:accept' type='error' from='localhost' id='x'/>"
                .parse()
                .unwrap();
        assert_eq!(server_software(&bare), None);
    }

    #[tokio::test]
    async fn each_domain_is_probed_once_per_connection() {
        let (handle, mut queues) = XmppHandle::new(IqTracker::new(), "herald.localhost");
        let mut probes = Probes::default();
        probes.reset(1);
        assert!(probes.probe(&handle, "localhost").await.is_some());
        for _ in 0..100 {
            assert!(probes.probe(&handle, "localhost").await.is_none());
        }
        assert!(probes.probe(&handle, "other.localhost").await.is_some());
        let mut sent = 0;
        while queues.priority.try_recv().is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 4, "a disco#info and a ping per domain");
        probes.reset(2);
        assert!(probes.probe(&handle, "localhost").await.is_some());
    }
}
