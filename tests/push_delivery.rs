//! Group-chat pushes end to end against the fake XEP-0114 server, which plays the app servers:
//! a room message handed to herald reaches the app server as a XEP-0357 publish with the
//! summary form and the stored publish-options; errors up to `max_errors` remove the
//! registration while `wait` keeps it; a dead app server does not hold up another one; a remote
//! disable removes the registration; and a push not answered before a restart is published after
//! it.

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fake_server::{Conn, FakeServer, Script, NS_COMPONENT};
use herald::app::Observers;
use herald::muc::{Occupants, RoomMessage};
use herald::push::watchers::watchers_of;
use herald::push::{Registration, RoomMode, RoomRule};
use herald_support::{Config, Herald, JID, SECRET};
use minidom::Element;

const EVENTUALLY: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);
const ROOM: &str = "room@muc.localhost";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";

struct Running {
    herald: Herald,
    o: Observers,
    conn: Conn,
}

async fn start(server: &mut FakeServer, store: &Path, push: &str) -> Running {
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

async fn server() -> FakeServer {
    let server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept());
    server
}

impl Running {
    /// `user` (nick = its local part) watches ROOM with `mode` through app server `app`.
    async fn register(&self, user: &str, app: &str, node: &str) {
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
    /// nobody else in the room.
    async fn message(&self, body: &str) {
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
            occupants: Arc::new(Occupants::default()),
            watchers: watchers.into(),
            at_ms: herald::push::now_ms(),
        };
        self.o.room_messages.send(msg).await.unwrap();
    }

    async fn publish_to(&mut self, app: &'static str, within: Duration) -> Option<Element> {
        self.conn
            .recv_matching(move |el| is_publish(el, app), within)
            .await
    }

    async fn answer(&self, iq: &Element, error: Option<&str>) {
        let (id, to) = (iq.attr("id").unwrap(), iq.attr("to").unwrap());
        let xml = match error {
            None => format!("<iq type='result' from='{to}' to='{JID}' id='{id}'/>"),
            Some(e) => format!("<iq type='error' from='{to}' to='{JID}' id='{id}'>{e}</iq>"),
        };
        self.conn.send_raw(&xml).await;
    }

    fn registrations(&self, user: &str) -> Vec<Registration> {
        self.o.push.get(user).unwrap().registrations
    }

    fn pending(&self) -> usize {
        self.o.store.push_outbox().unwrap().count()
    }
}

fn is_publish(el: &Element, app: &str) -> bool {
    el.is("iq", NS_COMPONENT)
        && el.attr("type") == Some("set")
        && el.attr("to") == Some(app)
        && el.has_child("pubsub", NS_PUBSUB)
}

/// The summary form's fields: (var, value or "").
fn summary(iq: &Element) -> Vec<(String, String)> {
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

fn field(iq: &Element, var: &str) -> String {
    summary(iq)
        .into_iter()
        .find(|(v, _)| v == var)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no field {var}"))
}

/// Waits until `cond` holds (checked every 10 ms), panicking after EVENTUALLY.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const NOT_FOUND: &str =
    "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
const WAIT: &str =
    "<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";

#[tokio::test]
async fn a_room_message_reaches_the_app_server_with_the_summary_form_and_options() {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(
        &mut server,
        dir.path(),
        "with_sender = true\nwith_body = true\ncoalesce = \"1s\"\n",
    )
    .await;
    h.register("alice@localhost", "push.localhost", "yxs32uqsflafdk3iuqo")
        .await;
    h.message("hi alice").await;
    let iq = h
        .publish_to("push.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    assert_eq!(iq.attr("from"), Some(JID));
    let pubsub = iq.get_child("pubsub", NS_PUBSUB).unwrap();
    let publish = pubsub.get_child("publish", NS_PUBSUB).unwrap();
    assert_eq!(publish.attr("node"), Some("yxs32uqsflafdk3iuqo"));
    assert_eq!(
        summary(&iq),
        [
            ("FORM_TYPE", "urn:xmpp:push:summary"),
            ("message-count", "1"),
            ("pending-subscription-count", ""),
            ("last-message-sender", "room@muc.localhost/bob"),
            ("last-message-body", "hi alice"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let options = pubsub
        .get_child("publish-options", NS_PUBSUB)
        .expect("publish-options");
    let expected: Element = OPTIONS.parse().unwrap();
    assert_eq!(options.children().next(), Some(&expected));
    assert_eq!(h.pending(), 1, "persisted until the app server answers");
    h.answer(&iq, None).await;
    until("the answered push leaves the outbox", || h.pending() == 0).await;
    // A burst within the coalescing window: one more push, at its end, counting both.
    h.message("one").await;
    h.message("two").await;
    let iq = h
        .publish_to("push.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    assert_eq!(field(&iq, "message-count"), "3");
    assert_eq!(field(&iq, "last-message-body"), "two");
    h.answer(&iq, None).await;
    assert!(
        h.publish_to("push.localhost", QUIET).await.is_none(),
        "one push for the burst"
    );
    h.herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn errors_up_to_max_errors_remove_the_registration_and_wait_keeps_it() {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(
        &mut server,
        dir.path(),
        "max_errors = 2\ncoalesce = \"0s\"\n",
    )
    .await;
    h.register("alice@localhost", "broken.localhost", "n").await;
    h.register("carol@localhost", "busy.localhost", "n").await;
    h.message("first").await;
    let iq = h
        .publish_to("broken.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    // The default placeholder body, no sender.
    assert_eq!(field(&iq, "last-message-body"), "New Message!");
    assert_eq!(field(&iq, "last-message-sender"), "");
    h.answer(&iq, Some(NOT_FOUND)).await;
    until("the error is counted", || {
        h.registrations("alice@localhost").first().map(|r| r.errors) == Some(1)
    })
    .await;
    let busy = h
        .publish_to("busy.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    h.answer(&busy, Some(WAIT)).await;
    // `wait`: the same push again after a backoff, the registration untouched.
    let again = h
        .publish_to("busy.localhost", EVENTUALLY)
        .await
        .expect("a retry");
    assert_eq!(field(&again, "message-count"), "1");
    assert_eq!(h.registrations("carol@localhost")[0].errors, 0);
    h.answer(&again, None).await;
    h.message("second").await;
    let iq = h
        .publish_to("broken.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    h.answer(&iq, Some(NOT_FOUND)).await;
    until("the registration is removed at max_errors", || {
        h.registrations("alice@localhost").is_empty()
    })
    .await;
    assert_eq!(h.registrations("carol@localhost").len(), 1);
    // Nothing more goes to the removed registration.
    h.message("third").await;
    let busy = h
        .publish_to("busy.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    h.answer(&busy, None).await;
    assert!(h.publish_to("broken.localhost", QUIET).await.is_none());
    h.herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn a_dead_app_server_does_not_delay_pushes_to_another() {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let push =
        "coalesce = \"0s\"\ntimeout = \"1h\"\nmax_in_flight = 4\nmax_in_flight_per_server = 2\n";
    let mut h = start(&mut server, dir.path(), push).await;
    for user in ["alice", "carol", "dave", "erin", "frank"] {
        h.register(&format!("{user}@localhost"), "dead.localhost", "n")
            .await;
    }
    h.register("grace@localhost", "live.localhost", "n").await;
    h.message("hello").await;
    let live = h.publish_to("live.localhost", EVENTUALLY).await;
    assert!(
        live.is_some(),
        "the live app server gets its push while the dead one is silent"
    );
    let sent: Vec<&Element> = h
        .conn
        .drain(QUIET)
        .await
        .iter()
        .filter(|e| is_publish(e, "dead.localhost"))
        .collect();
    assert_eq!(
        sent.len(),
        2,
        "the dead server holds only its own two slots"
    );
    h.answer(&live.unwrap(), None).await;
    // The next message still reaches the live server, the dead one's queue notwithstanding.
    h.message("again").await;
    let live = h
        .publish_to("live.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    assert_eq!(field(&live, "message-count"), "2");
    h.herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn a_remote_disable_removes_that_registration() {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(&mut server, dir.path(), "").await;
    h.register("alice@localhost", "push.localhost", "phone")
        .await;
    let mut tablet = Registration::new("push.localhost", "tablet", 2);
    tablet.options = None;
    h.o.push.register("alice@localhost", tablet).await.unwrap();
    h.conn
        .send_raw(&format!("<message from='push.localhost' to='{JID}'><pubsub xmlns='{NS_PUBSUB}' node='phone'><affiliation jid='alice@localhost' affiliation='none'/></pubsub></message>"))
        .await;
    until("the disabled registration is removed", || {
        h.registrations("alice@localhost").len() == 1
    })
    .await;
    assert_eq!(h.registrations("alice@localhost")[0].node, "tablet");
    h.herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn a_push_not_answered_before_a_restart_is_published_after_it() {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut h = start(&mut server, &store, "").await;
    h.register("alice@localhost", "push.localhost", "n").await;
    h.message("before the restart").await;
    let first = h
        .publish_to("push.localhost", EVENTUALLY)
        .await
        .expect("a publish");
    let Running { herald, o, conn } = h;
    herald.stop_ok(EVENTUALLY).await;
    // The store is free once every handle on it is gone.
    drop((o, conn));
    let mut h = start(&mut server, &store, "").await;
    let again = h
        .publish_to("push.localhost", EVENTUALLY)
        .await
        .expect("published after the restart");
    assert_eq!(summary(&again), summary(&first));
    assert_ne!(again.attr("id"), first.attr("id"));
    h.answer(&again, None).await;
    until("the answered push leaves the outbox", || h.pending() == 0).await;
    h.herald.stop_ok(EVENTUALLY).await;
}
