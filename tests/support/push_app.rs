//! herald with group-chat push against the fake XEP-0114 server, which plays the app servers:
//! registrations made through herald's `Push` handle, room messages handed to the push owner,
//! and the publishes it sends, read and answered. Include it by path next to `fake_server.rs`
//! and `herald.rs`, as `fake_server` and `herald_support`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::fake_server::{Conn, FakeServer, Script, NS_COMPONENT};
use crate::herald_support::{Config, Herald, JID, SECRET};
use herald::app::Observers;
use herald::muc::{Occupants, RoomMessage};
use herald::push::watchers::watchers_of;
use herald::push::{Registration, RoomMode, RoomRule};
use minidom::Element;

pub const EVENTUALLY: Duration = Duration::from_secs(10);
pub const QUIET: Duration = Duration::from_millis(400);
pub const ROOM: &str = "room@muc.localhost";
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";

pub struct Running {
    pub herald: Herald,
    pub o: Observers,
    pub conn: Conn,
}

pub async fn start(server: &mut FakeServer, store: &Path, push: &str) -> Running {
    let toml = Config::new(JID, SECRET, server.addr, store)
        .fast_reconnect()
        .presence("snapshot = \"never\"")
        .toml()
        + "\n[push]\ndomains = [\"localhost\"]\n"
        + push;
    let settings = herald::config::load_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let (herald, o) = Herald::start_observed(settings).await;
    let conn = server
        .next_connection(EVENTUALLY)
        .await
        .expect("herald logs in");
    Running { herald, o, conn }
}

pub async fn server() -> FakeServer {
    let server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept());
    server
}

impl Running {
    /// `user` (nick = its local part) watches ROOM with `mode` through app server `app`.
    pub async fn register(&self, user: &str, app: &str, node: &str) {
        let mut reg = Registration::new(app, node, 1);
        reg.options = Some(OPTIONS.to_owned());
        self.o.push.register(user, reg).await.unwrap();
        let nick = user.split('@').next().unwrap().to_owned();
        let rule = RoomRule {
            room: ROOM.into(),
            nick,
            mode: RoomMode::Always,
        };
        self.o.push.set_room(user, rule).await.unwrap();
    }

    /// Hands herald a message of `bob` in ROOM, with every registration as a watcher and
    /// nobody in the room.
    pub async fn message(&self, body: &str) {
        self.message_with(Arc::new(Occupants::default()), body)
            .await;
    }

    /// The same, with these occupants.
    pub async fn message_with(&self, occupants: Arc<Occupants>, body: &str) {
        let mut watchers = Vec::new();
        for user in [
            "alice@localhost",
            "carol@localhost",
            "dave@localhost",
            "erin@localhost",
            "frank@localhost",
            "grace@localhost",
        ] {
            let data = self.o.push.get(user).unwrap();
            watchers.extend(watchers_of(user, &data).into_iter().map(|(_, w)| w));
        }
        let xml = format!("<message xmlns='jabber:component:accept' from='{ROOM}/bob' to='{JID}' type='groupchat' id='m'><body>{body}</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='Ym9i'/></message>");
        let msg = RoomMessage {
            room: ROOM.into(),
            own_nick: "herald".into(),
            element: xml.parse().unwrap(),
            occupants,
            watchers: watchers.into(),
            at_ms: herald::push::now_ms(),
        };
        self.o.room_messages.send(msg).await.unwrap();
    }

    pub async fn publish_to(&mut self, app: &'static str, within: Duration) -> Option<Element> {
        self.conn
            .recv_matching(move |el| is_publish(el, app), within)
            .await
    }

    pub async fn answer(&self, iq: &Element, error: Option<&str>) {
        let (id, to) = (iq.attr("id").unwrap(), iq.attr("to").unwrap());
        let xml = match error {
            None => format!("<iq type='result' from='{to}' to='{JID}' id='{id}'/>"),
            Some(e) => format!("<iq type='error' from='{to}' to='{JID}' id='{id}'>{e}</iq>"),
        };
        self.conn.send_raw(&xml).await;
    }

    pub fn registrations(&self, user: &str) -> Vec<Registration> {
        self.o.push.get(user).unwrap().registrations
    }

    pub fn pending(&self) -> usize {
        self.o.store.push_outbox().unwrap().count()
    }
}

pub fn is_publish(el: &Element, app: &str) -> bool {
    el.is("iq", NS_COMPONENT)
        && el.attr("type") == Some("set")
        && el.attr("to") == Some(app)
        && el.has_child("pubsub", NS_PUBSUB)
}

/// The summary form's fields: (var, value or "").
pub fn summary(iq: &Element) -> Vec<(String, String)> {
    let pubsub = iq.get_child("pubsub", NS_PUBSUB).unwrap();
    let x = pubsub
        .get_child("publish", NS_PUBSUB)
        .and_then(|p| p.get_child("item", NS_PUBSUB))
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .and_then(|n| n.get_child("x", "jabber:x:data"))
        .expect("a summary form");
    x.children()
        .map(|f| {
            let v = f.children().next().map(|v| v.text()).unwrap_or_default();
            (f.attr("var").unwrap_or_default().to_owned(), v)
        })
        .collect()
}

pub fn field(iq: &Element, var: &str) -> String {
    summary(iq)
        .into_iter()
        .find(|(v, _)| v == var)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no field {var}"))
}

/// Waits until `cond` holds (checked every 10 ms), panicking after EVENTUALLY.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub const NOT_FOUND: &str =
    "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
pub const WAIT: &str =
    "<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
