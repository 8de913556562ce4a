//! Hostile input from the fake XEP-0114 server, as any user of the server could send it: herald
//! stays connected (or reconnects once), never loops, answers what must be answered, and keeps
//! emitting correct events for the valid presences sent after.

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;
#[path = "support/scenario.rs"]
mod scenario;

use std::time::Duration;

use fake_server::{
    prosody_advertisement, snapshot_presence, Conn, FakeServer, Script, NS_COMPONENT,
    NS_STANZA_ERRORS,
};
use herald::xmpp::iq_handlers::IqHandlers;
use herald_support::{is_event_message, Config, Herald, JID, SECRET};
use minidom::Element;
use scenario::{connected, live_presence, next_event, settings, EVENTUALLY, QUIET};

/// `<tag><tag>…</tag></tag>` nested `depth` deep.
fn nested(tag: &str, depth: usize) -> String {
    format!(
        "{}{}",
        format!("<{tag}>").repeat(depth),
        format!("</{tag}>").repeat(depth)
    )
}

/// Sends `hostile`, then a valid presence of `user`: herald must still be on this connection and
/// report `user`.
async fn survives(conn: &mut Conn, hostile: &str, user: &str) {
    conn.send_raw(hostile).await;
    conn.send_raw(&live_presence(user)).await;
    let e = next_event(conn).await;
    assert_eq!(e["args"]["user"], user, "{e}");
    assert!(!conn.ended(), "herald kept the stream");
}

#[tokio::test]
async fn deep_nesting_in_every_stanza_kind_is_skipped_and_the_stream_goes_on() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_default(Script::accept().advertise());
    let (herald, observers) =
        Herald::start_with_handlers(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    let deep = nested("x", 5000);
    let cases = [
        format!("<presence from='mallory@localhost/deep' to='{JID}'><status>{deep}</status></presence>"),
        format!("<message from='mallory@localhost/deep' to='{JID}' type='chat'><body>{deep}</body></message>"),
        format!("<iq type='get' id='deep1' from='mallory@localhost/deep' to='{JID}'><query xmlns='urn:q'>{deep}</query></iq>"),
        format!("<unknown xmlns='urn:u'>{deep}</unknown>"),
    ];
    for (i, hostile) in cases.iter().enumerate() {
        survives(&mut conn, hostile, &format!("user{i}@localhost/ok")).await;
    }
    // The IQ got exactly one answer, an error.
    let sent = conn.drain(QUIET).await;
    let answers: Vec<&Element> = sent
        .iter()
        .filter(|el| el.is("iq", NS_COMPONENT) && el.attr("id") == Some("deep1"))
        .collect();
    assert_eq!(answers.len(), 1, "{sent:?}");
    assert_eq!(answers[0].attr("type"), Some("error"));
    assert!(answers[0]
        .get_child("error", NS_COMPONENT)
        .is_some_and(|e| e.has_child("policy-violation", NS_STANZA_ERRORS)));
    assert_eq!(server.connections(), 1, "no reconnect");
    let stats = observers.presence.stats().await.unwrap();
    assert_eq!(stats.online, 4, "only the valid users: {stats:?}");
    herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn over_long_names_and_values_are_skipped_and_the_stream_goes_on() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_default(Script::accept().advertise());
    let (herald, _observers) =
        Herald::start_with_handlers(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    let long = "a".repeat(8200);
    let cases = [
        format!("<presence from='mallory@localhost/long' to='{JID}' x='{long}'/>"),
        format!("<presence from='mallory@localhost/long' to='{JID}'><{long}/></presence>"),
        format!("<presence from='mallory@localhost/long' to='{JID}' {long}='1'/>"),
        format!(
            "<message from='mallory@localhost/long' to='{JID}'><body b='{long}'>x</body></message>"
        ),
        format!("<presence from='{long}@localhost/long' to='{JID}'/>"),
    ];
    for (i, hostile) in cases.iter().enumerate() {
        survives(&mut conn, hostile, &format!("user{i}@localhost/ok")).await;
    }
    assert_eq!(server.connections(), 1, "no reconnect");
    herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn a_poisoned_snapshot_does_not_make_herald_loop() {
    let server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let long = "a".repeat(8200);
    // Every login: the snapshot carries a presence with an over-long attribute, and one the XML
    // parser itself refuses (an undeclared prefix), then a good one.
    server.script_default(
        Script::accept()
            .advertise()
            .then_send(format!(
                "<presence from='mallory@localhost/a' to='{JID}' x='{long}'><delay xmlns='urn:xmpp:delay' from='localhost' stamp='2026-11-22T04:19:40Z'/></presence>"
            ))
            .then_send(format!(
                "<presence from='mallory@localhost/b' to='{JID}'><bad:x/></presence>"
            ))
            .then_send(snapshot_presence("alice@localhost/phone", JID)),
    );
    let (herald, observers) =
        Herald::start_with_handlers(settings(&server, dir.path()), IqHandlers::new()).await;
    // However the first stream ends, herald reports alice and then stays on one connection.
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    let alice = loop {
        let view = observers.presence.user("alice@localhost").await.unwrap();
        if !view.resources.is_empty() {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice is never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alice.resources.len(), 1);
    let settled = server.connections();
    assert!(settled <= 2, "{settled} connections");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.connections(), settled, "herald does not loop");
    herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn permissions_herald_does_not_know_do_not_switch_it_off() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let advert = prosody_advertisement(JID).replace(
        "<perm access='roster' type='both'/>",
        "<perm access='roster' type='weird'/><perm access='telepathy' type='full'/>",
    );
    assert!(advert.contains("weird"));
    server.script_default(Script::accept().then_send(advert));
    let (herald, _observers) =
        Herald::start_with_handlers(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    conn.send_raw(&live_presence("alice@localhost/phone")).await;
    let e = next_event(&mut conn).await;
    assert_eq!(e["args"]["user"], "alice@localhost/phone");
    herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn invalid_addresses_and_values_emit_nothing_and_valid_ones_are_normalised() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_default(Script::accept().advertise());
    let settings = Config::new(JID, SECRET, server.addr, dir.path())
        .fast_reconnect()
        .presence("changes = \"all\"")
        .xmpp_sink()
        .settings();
    let (herald, observers) = Herald::start_with_handlers(settings, IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    let long = "a".repeat(3000);
    for from in [
        "@localhost/x".to_owned(),
        "al ice@localhost/x".to_owned(),
        format!("{long}@localhost/x"),
        "al\u{200B}ice@localhost/x".to_owned(),
        "al\u{202E}ice@localhost/x".to_owned(),
    ] {
        conn.send_raw(&live_presence(&fake_server::escape(&from)))
            .await;
    }
    conn.send_raw(&format!(
        "<presence from='ALICE@LOCALHOST/phone' to='{JID}'><show>bogus&amp;&lt;x&gt;</show></presence>"
    ))
    .await;
    let e = next_event(&mut conn).await;
    assert_eq!(e["args"]["user"], "alice@localhost/phone", "{e}");
    assert!(e["args"].get("show").is_none(), "{e}");
    if let Some(msg) = conn.recv_matching(is_event_message, QUIET).await {
        panic!("unexpected event: {}", String::from(&msg));
    }
    let stats = observers.presence.stats().await.unwrap();
    assert_eq!(stats.invalid_jids, 5, "{stats:?}");
    herald.stop_ok(EVENTUALLY).await;
}
