//! Group-chat pushes end to end against the fake XEP-0114 server, which plays the app servers:
//! a room message handed to herald reaches the app server as a XEP-0357 publish with the
//! summary form and the stored publish-options; errors up to `max_errors` remove the
//! registration while `wait` keeps it; a dead app server does not hold up another one; a remote
//! disable removes the registration; a push not answered before a restart is published after
//! it; and an occupant is pushed only as a ghost (no online resource in herald's presence table).

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;
#[path = "support/push_app.rs"]
mod push_app;

use std::sync::Arc;
use std::time::Duration;

use fake_server::{FakeServer, Script};
use herald::muc::Occupants;
use herald::push::Registration;
use herald_support::{JID, SECRET};
use minidom::Element;
use push_app::*;

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

#[tokio::test]
async fn an_occupant_is_pushed_only_while_the_presence_table_shows_no_online_resource() {
    let mut server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept().advertise());
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(&mut server, dir.path(), "coalesce = \"0s\"\n").await;
    h.register("alice@localhost", "push.localhost", "n").await;
    let mut occupants = Occupants::default();
    occupants.insert(herald::muc::Occupant {
        nick: "alice".into(),
        real_jid: None,
        role: herald::muc::Role::Participant,
    });
    let occupants = Arc::new(occupants);
    // A ghost: in the room, no online resource.
    h.message_with(occupants.clone(), "to a ghost").await;
    let iq = h
        .publish_to("push.localhost", EVENTUALLY)
        .await
        .expect("a push to the ghost");
    assert_eq!(field(&iq, "message-count"), "1");
    h.answer(&iq, None).await;
    h.conn
        .send_raw(&format!(
            "<presence from='alice@localhost/phone' to='{JID}'/>"
        ))
        .await;
    let reader = h.o.presence.clone();
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !reader.is_online("alice@localhost").await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never shows online"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Present and online: nothing, and the count starts again.
    h.message_with(occupants.clone(), "while present").await;
    assert!(h.publish_to("push.localhost", QUIET).await.is_none());
    // Absent from the room again (online elsewhere does not matter): pushed, counting from 1.
    h.message_with(Arc::new(Occupants::default()), "after she left")
        .await;
    let iq = h
        .publish_to("push.localhost", EVENTUALLY)
        .await
        .expect("a push");
    assert_eq!(field(&iq, "message-count"), "1");
    h.herald.stop_ok(EVENTUALLY).await;
}

#[tokio::test]
async fn room_messages_handed_over_when_herald_stops_are_pushed_after_the_restart() {
    let mut server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let push = "with_body = true\ncoalesce = \"0s\"\n";
    let h = start(&mut server, &store, push).await;
    h.register("alice@localhost", "push.localhost", "n").await;
    const N: usize = 300;
    for i in 0..N {
        h.message(&format!("m{i}")).await;
    }
    // Stopped at once: most messages are still queued for the push owner.
    let Running { herald, o, conn } = h;
    herald.stop_ok(EVENTUALLY).await;
    drop((o, conn));
    // Nothing was answered, so every message comes as a publish after the restart.
    let mut h = start(&mut server, &store, push).await;
    let mut bodies = std::collections::BTreeSet::new();
    while bodies.len() < N {
        let p = h
            .publish_to("push.localhost", EVENTUALLY)
            .await
            .unwrap_or_else(|| panic!("only {} of {N} messages were pushed", bodies.len()));
        bodies.insert(field(&p, "last-message-body"));
        h.answer(&p, None).await;
    }
    h.herald.stop_ok(EVENTUALLY).await;
}
