//! Prosody's pubsub service as a XEP-0357 app server, seen from a subscriber: the Prosody setup
//! ([`group_push_prosody`]: users, `pubsub.localhost`, the test's own app-server components), a c2s
//! [`Subscriber`] that opens a node and receives each published item as a `<message><event/>`, and
//! the data forms of a push ([`Form`]).
//!
//! Facts (Prosody 0.12 `mod_pubsub`): a JID without an affiliation may neither create a node nor
//! publish, and `autocreate_on_publish` is off by default. So the subscriber, listed in the global
//! `admins` (owner of every node), creates the node with `pubsub#publish_model = open`: then anyone,
//! herald included, may publish to it, and a publish to a node nobody opened is answered
//! `auth`/`forbidden` (the right to publish is checked before the node is looked up). `<publish-options>` are read as node-config preconditions: fields the node
//! config does not know (`secret`) and `FORM_TYPE` are ignored, so a publish with a `secret` is
//! accepted. The subscriber subscribes with its full JID, so the `<event/>` message reaches that
//! session although it sent no presence. `expose_publisher = true` puts the publisher's bare JID on
//! each item (`<item publisher='herald.localhost'>`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use minidom::Element;

use super::adhoc::iq;
use super::client::{to_xml, C2s};
use super::prosody::Prosody;

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_PUSH: &str = "urn:xmpp:push:0";
pub const NS_DATA: &str = "jabber:x:data";
pub const PUSH_SUMMARY: &str = "urn:xmpp:push:summary";
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// The pubsub service herald publishes to.
pub const PUBSUB: &str = "pubsub.localhost";
/// The test's own app server that answers results ([`super::app_server::AppServer`]).
pub const APPS: &str = "apps.localhost";
/// The test's own app server meant to answer errors.
pub const BROKEN: &str = "broken.localhost";
/// The secret of both app-server components.
pub const APP_SECRET: &str = "app-secret";
/// The user that owns the pubsub nodes and subscribes to them.
pub const APPSRV_USER: (&str, &str) = ("appsrv", "papp");

/// Prosody for group-chat push: users alice, bob, carol (passwords `pa`, `pb`, `pc`) and `appsrv`,
/// `muc.localhost`, `pubsub.localhost` (appsrv an admin of it), and the components `herald.localhost`
/// (privileged), [`APPS`] and [`BROKEN`] (secret [`APP_SECRET`]).
pub async fn group_push_prosody() -> Prosody {
    Prosody::builder()
        .users(&[("alice", "pa"), ("bob", "pb"), ("carol", "pc"), APPSRV_USER])
        .pubsub(Some(PUBSUB))
        .pubsub_admins(&["appsrv@localhost"])
        .extra_component(APPS, APP_SECRET)
        .extra_component(BROKEN, APP_SECRET)
        .start()
        .await
}

/// A data form as `var → values` (the values of each field, in order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    /// The form's `type` attribute (`form`, `submit`, `result`).
    pub kind: String,
    pub fields: BTreeMap<String, Vec<String>>,
}

impl Form {
    pub fn from_x(x: &Element) -> Form {
        let mut fields = BTreeMap::new();
        for f in x.children().filter(|c| c.name() == "field") {
            let values = f
                .children()
                .filter(|v| v.name() == "value")
                .map(|v| v.text())
                .collect();
            fields.insert(f.attr("var").unwrap_or_default().to_owned(), values);
        }
        Form {
            kind: x.attr("type").unwrap_or_default().to_owned(),
            fields,
        }
    }

    /// The first value of `var`, if the field is there with a non-empty value.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.fields
            .get(var)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn form_type(&self) -> Option<&str> {
        self.get("FORM_TYPE")
    }

    /// `message-count` as a number; panics if it is missing or not a number.
    pub fn count(&self) -> u64 {
        self.get("message-count")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no numeric message-count in {self:?}"))
    }

    /// `last-message-sender`, if it has a value.
    pub fn sender(&self) -> Option<&str> {
        self.get("last-message-sender")
    }

    /// `last-message-body`, if it has a value.
    pub fn body(&self) -> Option<&str> {
        self.get("last-message-body")
    }
}

/// One item as a subscriber received it.
#[derive(Clone, Debug)]
pub struct Notified {
    /// The whole `<message/>` from the pubsub service.
    pub message: Element,
    pub node: String,
    pub item_id: String,
    /// `<item publisher=…>`: the bare JID that published it.
    pub publisher: Option<String>,
    /// The summary form in `<notification xmlns='urn:xmpp:push:0'>` (empty if there is none).
    pub summary: Form,
}

/// A c2s client that owns pubsub nodes on [`PUBSUB`] and receives what is published to them.
pub struct Subscriber {
    pub client: C2s,
    pub service: String,
}

impl Subscriber {
    /// Logs in as [`APPSRV_USER`] (resource `push`); sends no presence.
    pub async fn login(p: &Prosody) -> Subscriber {
        let (user, password) = APPSRV_USER;
        let client = C2s::login(&p.c2s_addr(), &format!("{user}@localhost/push"), password).await;
        Subscriber {
            client,
            service: p.pubsub_domain.clone(),
        }
    }

    /// Creates `node` with `publish_model = open` and subscribes this session (full JID) to it.
    /// Panics unless both succeed.
    pub async fn open_node(&mut self, node: &str) {
        let create = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><create node='{node}'/><configure>\
             <x xmlns='{NS_DATA}' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{NS_PUBSUB}#node_config</value></field>\
             <field var='pubsub#publish_model'><value>open</value></field>\
             <field var='pubsub#access_model'><value>open</value></field>\
             </x></configure></pubsub>"
        );
        let a = iq(&mut self.client, "set", &self.service.clone(), &create).await;
        assert_eq!(
            a.attr("type"),
            Some("result"),
            "create {node}: {}",
            to_xml(&a)
        );
        let jid = self.client.jid().to_owned();
        let sub =
            format!("<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub>");
        let a = iq(&mut self.client, "set", &self.service.clone(), &sub).await;
        assert_eq!(
            a.attr("type"),
            Some("result"),
            "subscribe {node}: {}",
            to_xml(&a)
        );
        let state = a
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("subscription", NS_PUBSUB))
            .and_then(|s| s.attr("subscription"))
            .map(str::to_owned);
        assert_eq!(state.as_deref(), Some("subscribed"), "{}", to_xml(&a));
    }

    /// The next item published to `node`, or `None` after `timeout`.
    pub async fn next_notification(&mut self, node: &str, timeout: Duration) -> Option<Notified> {
        let service = self.service.clone();
        let node_owned = node.to_owned();
        let msg = self
            .client
            .next_matching(timeout, move |el| {
                el.name() == "message"
                    && el.attr("from") == Some(service.as_str())
                    && el
                        .get_child("event", NS_PUBSUB_EVENT)
                        .and_then(|e| e.get_child("items", NS_PUBSUB_EVENT))
                        .is_some_and(|i| i.attr("node") == Some(node_owned.as_str()))
            })
            .await?;
        Some(notified(msg))
    }

    /// The next item published to `node`; panics with `what` after `timeout`.
    pub async fn expect_notification(
        &mut self,
        node: &str,
        timeout: Duration,
        what: &str,
    ) -> Notified {
        self.next_notification(node, timeout)
            .await
            .unwrap_or_else(|| panic!("no item on node {node} within {timeout:?}: {what}"))
    }

    /// The items the node holds now (pubsub `<items/>` get; at most 20 are kept per node).
    pub async fn items(&mut self, node: &str) -> Vec<Element> {
        let get = format!("<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'/></pubsub>");
        let a = iq(&mut self.client, "get", &self.service.clone(), &get).await;
        assert_eq!(
            a.attr("type"),
            Some("result"),
            "items {node}: {}",
            to_xml(&a)
        );
        a.get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("items", NS_PUBSUB))
            .map(|i| i.children().cloned().collect())
            .unwrap_or_default()
    }

    pub async fn close(self) {
        self.client.close().await;
    }
}

fn notified(message: Element) -> Notified {
    let items = message
        .get_child("event", NS_PUBSUB_EVENT)
        .and_then(|e| e.get_child("items", NS_PUBSUB_EVENT))
        .expect("checked by the caller");
    let node = items.attr("node").unwrap_or_default().to_owned();
    let item = items.get_child("item", NS_PUBSUB_EVENT);
    let summary = item
        .and_then(|i| i.get_child("notification", NS_PUSH))
        .and_then(|n| n.get_child("x", NS_DATA))
        .map(Form::from_x)
        .unwrap_or_default();
    Notified {
        node,
        item_id: item
            .and_then(|i| i.attr("id"))
            .unwrap_or_default()
            .to_owned(),
        publisher: item.and_then(|i| i.attr("publisher")).map(str::to_owned),
        summary,
        message,
    }
}

/// `<pubsub><publish node=NODE><item><notification xmlns='urn:xmpp:push:0'><x type='form'>` with the
/// summary fields `(var, value)` (FORM_TYPE first), plus `<publish-options>` with `secret` when
/// given: the publish XEP-0357 servers send (Prosody's `mod_cloud_notify` layout).
pub fn push_publish_payload(node: &str, fields: &[(&str, &str)], secret: Option<&str>) -> String {
    let mut x = format!(
        "<x xmlns='{NS_DATA}' type='form'><field type='hidden' var='FORM_TYPE'><value>{PUSH_SUMMARY}</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{}</value></field>",
            super::adhoc::escape(value)
        ));
    }
    x.push_str("</x>");
    let options = secret
        .map(|s| {
            format!(
                "<publish-options><x xmlns='{NS_DATA}' type='submit'>\
                 <field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>\
                 <field var='secret'><value>{s}</value></field></x></publish-options>"
            )
        })
        .unwrap_or_default();
    format!(
        "<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item>\
         <notification xmlns='{NS_PUSH}'>{x}</notification></item></publish>{options}</pubsub>"
    )
}
