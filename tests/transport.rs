//! The connection as a transport, end to end against the fake XEP-0114 server: answers to
//! herald's IQs count only from the JID they went to, only `component.server_domains` are
//! trusted, IQ handlers are answered exactly once whatever they do, and every owner sees the
//! connection go down and up again.

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;
#[path = "support/scenario.rs"]
mod scenario;

use std::time::Duration;

use fake_server::{prosody_advertisement, FakeServer, Script, NS_COMPONENT, NS_PING};
use herald::app::Observers;
use herald::config::Settings;
use herald::xmpp::iq_handlers::{IqFuture, IqHandlers, IqRequest};
use herald::xmpp::routes::LinkStatus;
use herald_support::{is_event_message, Config, Herald, JID, SECRET};
use minidom::Element;
use scenario::{
    assert_no_event, connected, live_presence, next_event, settings, EVENTUALLY, QUIET,
};
use tokio::sync::oneshot;

/// herald with extra IQ handlers, and its observers.
struct Running {
    herald: Herald,
    observers: Observers,
}

async fn start(settings: Settings, handlers: IqHandlers) -> Running {
    let (herald, observers) = Herald::start_with_handlers(settings, handlers).await;
    Running { herald, observers }
}

impl Running {
    async fn stop(self) {
        self.herald.stop_ok(EVENTUALLY).await;
    }
}

fn is_ping_to(to: &'static str) -> impl Fn(&Element) -> bool {
    move |el| {
        el.is("iq", NS_COMPONENT)
            && el.attr("type") == Some("get")
            && el.attr("to") == Some(to)
            && el.has_child("ping", NS_PING)
    }
}

fn answer(el: &Element) -> Option<&str> {
    (el.is("iq", NS_COMPONENT) && matches!(el.attr("type"), Some("result") | Some("error")))
        .then(|| el.attr("id"))
        .flatten()
}

#[tokio::test]
async fn a_forged_answer_acknowledges_no_batch() {
    let alice = "alice@localhost/phone";
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    // First connection: the server answers no ping; someone else answers the sink's pings.
    server.script_next(Script::accept().advertise().silent());
    let herald = start(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    conn.send_raw(&live_presence(alice)).await;
    let first = next_event(&mut conn).await;
    let ack = conn
        .recv_matching(is_ping_to("localhost"), EVENTUALLY)
        .await
        .expect("the sink's acknowledging ping");
    let mut forged = String::new();
    for ping in conn
        .history()
        .iter()
        .filter(|el| is_ping_to("localhost")(el))
    {
        let id = ping.attr("id").unwrap_or_default();
        assert!(id.len() >= 32, "ids are unguessable: {id}");
        for from in ["mallory@localhost/x", "localhost.evil", "herald.localhost"] {
            forged.push_str(&format!(
                "<iq type='result' id='{id}' from='{from}' to='{JID}'/>"
            ));
        }
    }
    assert!(ack.attr("id").is_some());
    conn.send_raw(&forged).await;
    conn.drop_socket();

    // Second connection: the batch was not acknowledged, so it comes again; this time the
    // server answers its ping itself.
    server.script_next(Script::accept().advertise());
    let mut conn = connected(&mut server).await;
    let again = next_event(&mut conn).await;
    assert_eq!(again["trace"], first["trace"], "{again}");
    conn.recv_matching(is_ping_to("localhost"), EVENTUALLY)
        .await
        .expect("its acknowledging ping");
    assert_no_event(&mut conn).await;
    conn.drop_socket();

    // Third connection: acknowledged by the real server, so not sent again.
    server.script_next(Script::accept().advertise());
    let mut conn = connected(&mut server).await;
    assert_no_event(&mut conn).await;
    herald.stop().await;
}

#[tokio::test]
async fn only_the_server_domains_are_trusted() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let foreign_advert =
        prosody_advertisement(JID).replace("from='localhost'", "from='evil.example'");
    assert!(foreign_advert.contains("evil.example"));
    server.script_next(
        Script::accept()
            .then_send(foreign_advert.clone())
            .then_send(foreign_advert.clone())
            .then_send(live_presence("mallory@evil.example/x"))
            .then_send(live_presence("bob@localhost/x")),
    );
    let herald = start(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    assert_no_event(&mut conn).await;
    // The foreign advertisement got no probe.
    let to_evil = conn
        .history()
        .iter()
        .filter(|el| el.attr("to").is_some_and(|to| to.contains("evil")))
        .count();
    assert_eq!(to_evil, 0, "{:?}", conn.history());

    // The real server's advertisement makes its users count; the foreign ones still do not.
    conn.send_raw(&prosody_advertisement(JID)).await;
    conn.send_raw(&live_presence("mallory@evil.example/y"))
        .await;
    conn.send_raw(&live_presence("carol@LOCALHOST/phone")).await;
    let e = next_event(&mut conn).await;
    assert_eq!(e["args"]["user"], "carol@localhost/phone", "{e}");
    assert_no_event(&mut conn).await;
    let stats = herald.observers.presence.stats().await.unwrap();
    assert_eq!(stats.foreign, 4, "{stats:?}");
    herald.stop().await;
}

#[tokio::test]
async fn repeated_advertisements_are_probed_once_per_connection() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::accept();
    for _ in 0..200 {
        script = script.then_send(prosody_advertisement(JID));
    }
    server.script_next(script);
    let herald = start(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    conn.recv_matching(is_ping_to("localhost"), EVENTUALLY)
        .await
        .expect("the probe's ping");
    let sent = conn.drain(QUIET).await;
    let pings = sent.iter().filter(|el| is_ping_to("localhost")(el)).count();
    let infos = sent
        .iter()
        .filter(|el| {
            el.attr("to") == Some("localhost") && el.has_child("query", fake_server::NS_DISCO_INFO)
        })
        .count();
    assert_eq!((infos, pings), (1, 1), "{sent:?}");
    herald.stop().await;
}

#[tokio::test]
async fn every_request_to_a_handler_is_answered_once() {
    let mut handlers = IqHandlers::new();
    handlers.register(
        "urn:test:panic",
        &["urn:test:panic"],
        |_r: IqRequest| -> IqFuture { Box::pin(async { panic!("a handler bug") }) },
    );
    handlers.register("urn:test:drop", &[], |_r: IqRequest| -> IqFuture {
        let (tx, rx) = oneshot::channel::<herald::xmpp::iq_handlers::IqAnswer>();
        drop(tx);
        Box::pin(async move {
            rx.await
                .unwrap_or(Err(herald::xmpp::stanza::StanzaError::service_unavailable()))
        })
    });
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_next(Script::accept().advertise());
    let herald = start(settings(&server, dir.path()), handlers).await;
    let mut conn = connected(&mut server).await;
    conn.send_raw(&format!(
        "<iq type='set' id='p1' from='alice@localhost/x' to='{JID}'><x xmlns='urn:test:panic'/></iq>\
         <iq type='set' id='d1' from='alice@localhost/x' to='{JID}'><x xmlns='urn:test:drop'/></iq>\
         <iq type='get' id='u1' from='alice@localhost/x' to='{JID}'><x xmlns='urn:test:unknown'/></iq>\
         <iq type='get' id='n1' from='alice@localhost/x' to='{JID}'/>\
         <iq type='get' from='alice@localhost/x' to='{JID}'><ping xmlns='urn:xmpp:ping'/></iq>\
         <iq type='get' id='ping1' from='localhost' to='{JID}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    // Every request is answered (the handlers' tasks may take a moment on a busy machine)…
    let expected = ["p1", "d1", "u1", "n1", "", "ping1"];
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !expected
        .iter()
        .all(|id| conn.history().iter().any(|el| answer(el) == Some(*id)))
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            conn.recv(left).await.is_some(),
            "not all answered: {:?}",
            conn.history()
        );
    }
    // …and none twice.
    let sent = conn.drain(QUIET).await.to_vec();
    for (id, condition) in [
        ("p1", "service-unavailable"),
        ("d1", "service-unavailable"),
        ("u1", "service-unavailable"),
        ("n1", "bad-request"),
        ("", "bad-request"),
    ] {
        let answers: Vec<&Element> = sent.iter().filter(|el| answer(el) == Some(id)).collect();
        assert_eq!(answers.len(), 1, "one answer to {id:?}: {sent:?}");
        let a = answers[0];
        assert_eq!(a.attr("type"), Some("error"), "{}", String::from(a));
        assert_eq!(a.attr("to"), Some("alice@localhost/x"));
        let error = a.get_child("error", NS_COMPONENT).expect("<error/>");
        assert!(
            error.has_child(condition, fake_server::NS_STANZA_ERRORS),
            "{id}: {}",
            String::from(a)
        );
    }
    let pong: Vec<&Element> = sent
        .iter()
        .filter(|el| answer(el) == Some("ping1"))
        .collect();
    assert_eq!(pong.len(), 1);
    assert_eq!(pong[0].attr("type"), Some("result"));
    herald.stop().await;
}

#[tokio::test]
async fn every_owner_sees_down_then_up_and_the_read_handle_sees_the_table() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_default(Script::accept().advertise());
    let herald = start(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut status = herald.observers.status.clone();
    let mut conn = connected(&mut server).await;
    let up = |s: &LinkStatus| matches!(s, LinkStatus::Up { .. });
    let first = *tokio::time::timeout(EVENTUALLY, status.wait_for(up))
        .await
        .expect("Up in time")
        .unwrap();
    assert_eq!(first, LinkStatus::Up { epoch: 1 });

    conn.send_raw(&live_presence("alice@localhost/phone")).await;
    conn.send_raw(&live_presence("alice@localhost/laptop"))
        .await;
    let a = next_event(&mut conn).await;
    let b = next_event(&mut conn).await;
    let view = herald
        .observers
        .presence
        .user("Alice@LocalHost")
        .await
        .unwrap();
    let mut jids: Vec<&str> = view.resources.iter().map(|r| r.jid.as_str()).collect();
    jids.sort();
    assert_eq!(jids, ["alice@localhost/laptop", "alice@localhost/phone"]);
    assert_eq!(
        view.seq,
        b["seq"].as_u64().unwrap().max(a["seq"].as_u64().unwrap())
    );
    assert!(herald
        .observers
        .presence
        .user("bob@localhost")
        .await
        .unwrap()
        .resources
        .is_empty());
    assert_eq!(
        herald
            .observers
            .presence
            .table()
            .await
            .unwrap()
            .resources
            .len(),
        2
    );

    conn.drop_socket();
    tokio::time::timeout(EVENTUALLY, status.wait_for(|s| *s == LinkStatus::Down))
        .await
        .expect("Down in time")
        .unwrap();
    let _conn = connected(&mut server).await;
    let second = *tokio::time::timeout(EVENTUALLY, status.wait_for(up))
        .await
        .expect("Up again in time")
        .unwrap();
    assert_eq!(second, LinkStatus::Up { epoch: 2 });
    herald.stop().await;
}

#[tokio::test]
async fn a_failed_outbox_write_loses_no_event_and_records_no_change_without_it() {
    let alice = "alice@localhost/phone";
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_next(Script::accept().advertise());
    let herald = start(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    herald.observers.store.fail_next_queue_writes(3);
    conn.send_raw(&live_presence(alice)).await;
    // The commit is retried until the outbox takes it: the event arrives, once.
    let e = next_event(&mut conn).await;
    assert_eq!(e["args"]["user"], alice, "{e}");
    assert_eq!(e["args"]["presence"], "available", "{e}");
    assert_no_event(&mut conn).await;
    herald.stop().await;

    // After a restart the table and the outbox agree: alice's snapshot presence is a silent
    // confirmation, and nothing is delivered twice.
    server.script_next(
        Script::accept()
            .advertise()
            .then_send(fake_server::snapshot_presence(alice, JID)),
    );
    let herald = start(settings(&server, dir.path()), IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    assert_no_event(&mut conn).await;
    let view = herald
        .observers
        .presence
        .user("alice@localhost")
        .await
        .unwrap();
    assert_eq!(view.resources.len(), 1);
    assert_eq!(view.seq, e["seq"].as_u64().unwrap());
    herald.stop().await;
}

#[tokio::test]
async fn a_server_that_acknowledges_late_is_never_sent_anything_twice_on_the_same_stream() {
    const USERS: usize = 2000;
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    // No ping is ever answered on this connection; the stream itself stays up.
    server.script_next(Script::accept().advertise().silent());
    let settings = Config::new(JID, SECRET, server.addr, dir.path())
        .fast_reconnect()
        .component("request_timeout", "\"300ms\"")
        .xmpp_sink()
        .settings();
    let herald = start(settings, IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    let presences: String = (0..USERS)
        .map(|i| live_presence(&format!("u{i}@localhost/r")))
        .collect();
    conn.send_raw(&presences).await;
    // Several times request_timeout: a sink that re-sent on timeout would have done so by now.
    let sent = conn.drain(Duration::from_secs(2)).await;
    let mut traces: Vec<&str> = sent
        .iter()
        .filter(|el| is_event_message(el))
        .filter_map(|el| el.attr("id"))
        .collect();
    let messages = traces.len();
    traces.sort_unstable();
    traces.dedup();
    assert_eq!(messages, USERS, "every event sent once, none again");
    assert_eq!(traces.len(), USERS);
    herald.stop().await;
}

#[tokio::test]
async fn a_huge_status_is_capped_and_the_next_presence_still_counts() {
    let mut server = FakeServer::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    server.script_next(Script::accept().advertise());
    let settings = Config::new(JID, SECRET, server.addr, dir.path())
        .fast_reconnect()
        .presence("changes = \"all\"")
        .xmpp_sink()
        .settings();
    let herald = start(settings, IqHandlers::new()).await;
    let mut conn = connected(&mut server).await;
    let status = "é".repeat(100_000);
    conn.send_raw(&format!(
        "<presence from='alice@localhost/phone' to='{JID}'><status>{status}</status></presence>"
    ))
    .await;
    let e = next_event(&mut conn).await;
    let kept = e["args"]["status"].as_str().expect("a status");
    assert!(kept.len() <= 1024 && kept.len() >= 1022, "{}", kept.len());
    assert!(status.starts_with(kept));
    let view = herald
        .observers
        .presence
        .user("alice@localhost")
        .await
        .unwrap();
    assert_eq!(view.resources[0].status.as_deref(), Some(kept));
    conn.send_raw(&live_presence("bob@localhost/x")).await;
    let e = next_event(&mut conn).await;
    assert_eq!(e["args"]["user"], "bob@localhost/x");
    herald.stop().await;
}
