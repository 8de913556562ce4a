//! The connection to the XMPP server, end to end: herald's public [`herald::app::run`] in-process
//! against the fake XEP-0114 server of `support/fake_server.rs`, which scripts logins, drops
//! sockets, stays silent and records every stanza herald sends.
//!
//! Timeouts are short (reconnect backoff 50–200 ms, keepalive well under a second where it
//! matters) so the whole file runs in a few seconds; waits are for events, with a timeout that
//! only bounds a failing test.

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fake_server::{
    escape, snapshot_presence, Conn, FakeServer, Login, Script, NS_COMPONENT, NS_DISCO_INFO,
    NS_PING, NS_STANZA_ERRORS,
};
use herald::config::Settings;
use herald_support::{
    event_json, init_test_tracing, is_event_message, seq, Config, Herald, JID, NS_FLUX, SECRET,
};
use minidom::Element;
use serde_json::Value;
use tokio::time::Instant;

const SERVER_USER: &str = "world@localhost";

/// Long enough for anything herald does on loopback; only a failing test waits this long.
const EVENTUALLY: Duration = Duration::from_secs(5);
/// How long "nothing more comes" is watched for.
const QUIET: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The `[component]` timers of one test.
#[derive(Clone, Copy)]
struct Timers {
    keepalive: &'static str,
    read_timeout: &'static str,
    request_timeout: &'static str,
}

/// Keepalive far beyond any test, so only what a test does is on the wire.
const RELAXED: Timers = Timers {
    keepalive: "20s",
    read_timeout: "60s",
    request_timeout: "5s",
};

fn settings(server: &FakeServer, store: &Path, secret: &str, t: Timers) -> Settings {
    Config::new(JID, secret, server.addr, store)
        .component("keepalive", &format!("\"{}\"", t.keepalive))
        .component("read_timeout", &format!("\"{}\"", t.read_timeout))
        .component("request_timeout", &format!("\"{}\"", t.request_timeout))
        .fast_reconnect()
        .xmpp_sink()
        .settings()
}

async fn connected(server: &mut FakeServer) -> Conn {
    server
        .next_connection(EVENTUALLY)
        .await
        .expect("herald logs in to the fake server")
}

/// `<iq type='get'>` with an XEP-0199 ping, from the server to herald.
fn server_ping(id: &str) -> String {
    format!("<iq type='get' id='{id}' from='localhost' to='{JID}'><ping xmlns='{NS_PING}'/></iq>")
}

/// A result or error IQ with this id.
fn answer_to(id: &'static str) -> impl Fn(&Element) -> bool {
    move |el| {
        el.is("iq", NS_COMPONENT)
            && el.attr("id") == Some(id)
            && matches!(el.attr("type"), Some("result") | Some("error"))
    }
}

/// Asks herald for a ping answer on `conn`: proof that the connection works end to end.
async fn assert_answers_ping(conn: &mut Conn, id: &'static str) {
    conn.send_raw(&server_ping(id)).await;
    let pong = conn
        .recv_matching(answer_to(id), EVENTUALLY)
        .await
        .unwrap_or_else(|| panic!("herald answers ping {id}"));
    assert_eq!(pong.attr("type"), Some("result"), "{}", xml(&pong));
    assert_eq!(pong.attr("from"), Some(JID));
}

/// The JSON event carried by an event message, after checking the message's shape.
fn event_of(msg: &Element) -> Value {
    assert_eq!(msg.attr("type"), Some("chat"), "{}", xml(msg));
    assert_eq!(msg.attr("to"), Some(SERVER_USER), "{}", xml(msg));
    assert_eq!(msg.attr("from"), Some(JID), "{}", xml(msg));
    let event = msg
        .get_child("event", NS_FLUX)
        .expect("<event xmlns='flux:xmpp'/>");
    assert_eq!(event.attr("mime"), Some("application/json"));
    let json = event_json(msg);
    assert_eq!(json["type"], "PRESENCE_DID_CHANGE");
    assert_eq!(
        Some(json["trace"].as_str().expect("trace is a string")),
        msg.attr("id"),
        "trace equals the message id"
    );
    json
}

async fn next_event(conn: &mut Conn) -> Value {
    let msg = conn
        .recv_matching(is_event_message, EVENTUALLY)
        .await
        .expect("herald sends an event message");
    event_of(&msg)
}

async fn assert_no_event(conn: &mut Conn) {
    if let Some(msg) = conn.recv_matching(is_event_message, QUIET).await {
        panic!("unexpected event: {}", xml(&msg));
    }
}

fn xml(el: &Element) -> String {
    String::from(el)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn answers_disco_ping_and_unknown_iqs_exactly_once() {
    let mut server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, RELAXED));
    let mut conn = connected(&mut server).await;

    conn.send_raw(&format!(
        "<iq type='get' id='disco1' from='alice@localhost/phone' to='{JID}'><query xmlns='{NS_DISCO_INFO}'/></iq>\
         {}\
         <iq type='get' id='version1' from='alice@localhost/phone' to='{JID}'><query xmlns='jabber:iq:version'/></iq>",
        server_ping("ping1")
    ))
    .await;

    let disco = conn
        .recv_matching(answer_to("disco1"), EVENTUALLY)
        .await
        .expect("disco#info answer");
    assert_eq!(disco.attr("type"), Some("result"), "{}", xml(&disco));
    assert_eq!(disco.attr("to"), Some("alice@localhost/phone"));
    let query = disco
        .get_child("query", NS_DISCO_INFO)
        .expect("disco#info <query/>");
    let identity = query
        .get_child("identity", NS_DISCO_INFO)
        .expect("an identity");
    assert_eq!(identity.attr("category"), Some("component"));
    let features: BTreeSet<&str> = query
        .children()
        .filter(|c| c.is("feature", NS_DISCO_INFO))
        .filter_map(|c| c.attr("var"))
        .collect();
    assert!(features.contains(NS_DISCO_INFO), "{features:?}");
    assert!(features.contains(NS_PING), "{features:?}");

    let pong = conn
        .recv_matching(answer_to("ping1"), EVENTUALLY)
        .await
        .expect("ping answer");
    assert_eq!(pong.attr("type"), Some("result"), "{}", xml(&pong));
    assert_eq!(pong.attr("to"), Some("localhost"));
    assert_eq!(
        pong.children().count(),
        0,
        "a ping result is empty: {}",
        xml(&pong)
    );

    let unknown = conn
        .recv_matching(answer_to("version1"), EVENTUALLY)
        .await
        .expect("an error");
    assert_eq!(unknown.attr("type"), Some("error"), "{}", xml(&unknown));
    let error = unknown.get_child("error", NS_COMPONENT).expect("<error/>");
    assert_eq!(error.attr("type"), Some("cancel"));
    assert!(
        error.has_child("service-unavailable", NS_STANZA_ERRORS),
        "{}",
        xml(&unknown)
    );

    // Exactly once: no second answer to any of the three.
    let again = conn
        .recv_matching(
            |el| matches!(el.attr("id"), Some("disco1" | "ping1" | "version1")),
            QUIET,
        )
        .await;
    assert!(again.is_none(), "answered twice: {}", xml(&again.unwrap()));

    herald.stop(EVENTUALLY).await.expect("clean shutdown");
    assert!(conn.closed(EVENTUALLY).await, "herald closes its stream");
    assert!(conn.recv(QUIET).await.is_none());
    assert_eq!(conn.read_error(), None, "herald's stream is well-formed");
    // Prosody 13 refuses stanzas from a component without `from`.
    assert!(!conn.history().is_empty());
    for el in conn.history() {
        assert_eq!(el.attr("from"), Some(JID), "{}", xml(el));
    }
}

#[tokio::test]
async fn wrong_secret_on_the_first_attempt_is_fatal() {
    let mut server = FakeServer::start("not-the-secret").await;
    let dir = tempfile::tempdir().unwrap();
    init_test_tracing();
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(3),
        herald::app::run(
            settings(&server, dir.path(), SECRET, RELAXED),
            std::future::pending(),
        ),
    )
    .await
    .expect("app::run gives up at once on a wrong secret");
    let message = result.expect_err("a wrong secret is an error").to_string();
    assert!(message.contains("secret"), "{message}");
    assert!(
        message.contains("component.secret"),
        "names the key: {message}"
    );

    let attempt = server
        .next_attempt(Duration::ZERO)
        .await
        .expect("one attempt");
    assert!(!attempt.digest_ok);
    assert_eq!(attempt.answer, Login::RejectSecret);
    assert_eq!(attempt.to.as_deref(), Some(JID));
    assert_eq!(server.connections(), 1, "no retry loop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn conflict_is_retried_slowly_and_the_next_login_works() {
    let mut server = FakeServer::start(SECRET).await;
    server.script_next(Script::conflict());
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, RELAXED));

    let first = server
        .next_attempt(EVENTUALLY)
        .await
        .expect("a login attempt");
    let refused_at = Instant::now();
    assert!(first.digest_ok, "herald's handshake digest is right");
    assert_eq!(first.answer, Login::Conflict);
    let second = server
        .next_attempt(EVENTUALLY)
        .await
        .expect("herald retries after a conflict");
    assert_eq!(second.answer, Login::Accept);
    // A conflict waits the slowest backoff step (reconnect_max = 200ms), not reconnect_min.
    assert!(
        refused_at.elapsed() >= Duration::from_millis(150),
        "retried after {:?}",
        refused_at.elapsed()
    );
    assert_eq!(server.connections(), 2);

    let mut conn = connected(&mut server).await;
    assert_answers_ping(&mut conn, "after-conflict").await;
    herald.stop(EVENTUALLY).await.expect("clean shutdown");
}

#[tokio::test]
async fn keepalive_holds_a_short_timeout_stream_open() {
    let mut server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let timers = Timers {
        keepalive: "500ms",
        read_timeout: "2s",
        request_timeout: "1s",
    };
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, timers));
    let mut conn = connected(&mut server).await;

    // 5 s, i.e. 2.5 read timeouts: the stream stays up on herald's pings and the answers.
    let watch = Duration::from_secs(5);
    let (reconnect, pings) = tokio::join!(server.next_connection(watch), async {
        let deadline = Instant::now() + watch;
        let mut pings = 0;
        while let Some(el) = conn
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if el.is("iq", NS_COMPONENT) && el.has_child("ping", NS_PING) {
                assert_eq!(el.attr("to"), Some("localhost"), "{}", xml(&el));
                pings += 1;
            }
        }
        pings
    });
    assert!(
        reconnect.is_none(),
        "herald reconnected although the stream was alive"
    );
    assert!(!conn.ended(), "the first connection ended");
    assert_eq!(server.connections(), 1);
    // One every 500 ms: about 10, plus the snapshot ping.
    assert!(pings >= 6, "only {pings} keepalive pings in {watch:?}");

    assert_answers_ping(&mut conn, "still-up").await;
    herald.stop(EVENTUALLY).await.expect("clean shutdown");
}

#[tokio::test]
async fn a_silent_server_is_detected_and_herald_reconnects() {
    let mut server = FakeServer::start(SECRET).await;
    server.script_next(Script::accept().advertise().silent());
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let timers = Timers {
        keepalive: "300ms",
        read_timeout: "1s",
        request_timeout: "500ms",
    };
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, timers));
    let mut silent = connected(&mut server).await;
    let logged_in = Instant::now();

    // Dead after read_timeout (1 s) of silence plus request_timeout (500 ms) without an answer.
    let mut next = server
        .next_connection(EVENTUALLY)
        .await
        .expect("herald reconnects after the stream went silent");
    let after = logged_in.elapsed();
    assert!(
        after >= Duration::from_secs(1),
        "gave up after only {after:?}"
    );
    assert!(after < Duration::from_secs(4), "took {after:?} to notice");
    // herald did ping the silent server, and dropped that connection.
    let pinged = silent
        .recv_matching(|el| el.has_child("ping", NS_PING), EVENTUALLY)
        .await;
    assert!(pinged.is_some(), "herald never pinged the silent server");
    while silent.recv(EVENTUALLY).await.is_some() {}
    assert!(silent.ended(), "the silent connection is still open");
    assert_eq!(server.connections(), 2);

    assert_answers_ping(&mut next, "after-silence").await;
    herald.stop(EVENTUALLY).await.expect("clean shutdown");
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_socket() {
    let mut server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, RELAXED));
    let first = connected(&mut server).await;
    let first_id = first.stream_id.clone();

    first.drop_socket();
    let mut conn = server
        .next_connection(EVENTUALLY)
        .await
        .expect("herald reconnects after the socket dropped");
    assert_ne!(conn.stream_id, first_id);
    assert_answers_ping(&mut conn, "after-drop").await;

    conn.send_raw(&format!(
        "<presence from='alice@localhost/phone' to='{JID}'/>"
    ))
    .await;
    let event = next_event(&mut conn).await;
    assert_eq!(event["args"]["user"], "alice@localhost/phone");
    assert_eq!(event["args"]["presence"], "available");
    assert_eq!(event["args"]["resources"], 1);
    assert_eq!(event["source"], "live");
    assert!(seq(&event) > 0);
    assert_no_event(&mut conn).await;
    herald.stop(EVENTUALLY).await.expect("clean shutdown");
}

#[tokio::test]
async fn snapshot_then_restart_resyncs_only_what_changed() {
    let alice = "alice@localhost/phone";
    let bob = "bob@localhost/laptop";
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();

    // First run: both online before herald connects; the server's snapshot names both.
    server.script_next(
        Script::accept()
            .advertise()
            .then_send(snapshot_presence(alice, JID))
            .then_send(snapshot_presence(bob, JID)),
    );
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, RELAXED));
    let mut conn = connected(&mut server).await;
    let mut first = vec![next_event(&mut conn).await, next_event(&mut conn).await];
    first.sort_by_key(seq);
    let users: BTreeSet<&str> = first
        .iter()
        .filter_map(|e| e["args"]["user"].as_str())
        .collect();
    assert_eq!(users, BTreeSet::from([alice, bob]));
    for e in &first {
        assert_eq!(e["source"], "snapshot", "{e}");
        assert_eq!(e["args"]["presence"], "available", "{e}");
    }
    assert!(seq(&first[0]) < seq(&first[1]));
    // The server answered the snapshot ping: the snapshot is complete and changes nothing.
    assert_no_event(&mut conn).await;
    herald.stop(EVENTUALLY).await.expect("clean shutdown");
    assert!(conn.closed(EVENTUALLY).await);

    // Second run on the same store: bob went offline while herald was away.
    server.script_next(
        Script::accept()
            .advertise()
            .then_send(snapshot_presence(alice, JID)),
    );
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, RELAXED));
    let mut conn = connected(&mut server).await;
    let gone = next_event(&mut conn).await;
    assert_eq!(gone["args"]["user"], bob, "{gone}");
    assert_eq!(gone["args"]["presence"], "unavailable", "{gone}");
    assert_eq!(gone["args"]["resources"], 0, "{gone}");
    assert_eq!(gone["source"], "resync", "{gone}");
    assert!(
        seq(&gone) > seq(&first[1]),
        "seq {} after {} across a restart",
        seq(&gone),
        seq(&first[1])
    );
    // alice stayed online: her snapshot presence is a silent confirmation.
    assert_no_event(&mut conn).await;
    herald.stop(EVENTUALLY).await.expect("clean shutdown");
}

#[tokio::test]
async fn graceful_shutdown_sends_queued_events_then_closes_the_stream() {
    const USERS: usize = 200;
    let mut server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start_with_test_log(settings(&server, dir.path(), SECRET, RELAXED));
    let mut conn = connected(&mut server).await;

    // Many presences, then a ping: once herald has answered the ping it has read every presence,
    // and most of their events are still on their way through the presence service.
    let mut burst = String::new();
    for i in 0..USERS {
        burst.push_str(&format!(
            "<presence from='{}' to='{JID}'/>",
            escape(&format!("user{i}@localhost/r"))
        ));
    }
    burst.push_str(&server_ping("barrier"));
    conn.send_raw(&burst).await;
    conn.recv_matching(answer_to("barrier"), EVENTUALLY)
        .await
        .expect("herald answers the ping after the presences");

    let started = Instant::now();
    let (stopped, closed) = tokio::join!(
        herald.stop(Duration::from_secs(3)),
        conn.closed(Duration::from_secs(3))
    );
    stopped.expect("app::run returns Ok after a graceful shutdown");
    assert!(closed, "herald closes its stream with </stream:stream>");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Every event went out before the footer, once, in seq order.
    let events: Vec<Value> = conn
        .history()
        .iter()
        .filter(|el| is_event_message(el))
        .map(event_of)
        .collect();
    let users: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["args"]["user"].as_str())
        .collect();
    assert_eq!(events.len(), USERS, "events sent before the stream closed");
    assert_eq!(users.len(), USERS);
    assert!(
        events.windows(2).all(|w| seq(&w[0]) < seq(&w[1])),
        "events out of seq order"
    );
    assert!(
        conn.recv(QUIET).await.is_none(),
        "a stanza after the stream footer"
    );
    assert!(conn.ended());
    assert_eq!(conn.read_error(), None, "herald's stream is well-formed");
}
