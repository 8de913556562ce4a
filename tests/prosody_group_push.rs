//! Group-chat push end to end on a real Prosody: real users register through herald's ad-hoc
//! commands and watch a room on `muc.localhost`; herald joins it as `herald`, and when a watcher is
//! away (not in the room, or a ghost: in the room with no online resource) a message by someone
//! else is published to the watcher's app server: Prosody's own pubsub service (a subscriber sees
//! the item) or one of the test's components (which sees the whole IQ, secret included, and can
//! answer errors or send a remote disable). Rooms are kept across kicks, reconnects and shutdowns;
//! errors end a registration at `max_errors`; a push pending at `kill -9` is published after the
//! restart.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use herald::muc::RoomState;
use std::time::{Duration, Instant};

use support::adhoc::wait_until_answering;
use support::app_server::{Answer, AppServer};
use support::client::C2s;
use support::group_push::{
    push_toml, register, registrations, start_herald, wait_presence, wait_registrations,
    watch_room, HERALD,
};
use support::groupchat::{
    create_room, join, kick, leave, next_groupchat, say, say_mentioning, send_encrypted,
    send_groupchat_xml, set_subject, status_codes, wait_departure, wait_occupant, RoomConfig,
};
use support::herald::{file_tail, stop_servers, HeraldProcess, TestEnv};
use support::prosody::Prosody;
use support::pubsub::{
    group_push_prosody, Subscriber, APPS, APP_SECRET, BROKEN, PUBLISH_OPTIONS, PUBSUB, PUSH_SUMMARY,
};

const ROOM: &str = "dev@muc.localhost";
const OPS: &str = "ops@muc.localhost";
const T: Duration = Duration::from_secs(10);
/// Short windows and timeouts, so that the file runs in seconds.
const FAST: &str = "coalesce = \"200ms\"\ntimeout = \"2s\"\n";

/// bob, online, owns `rooms` (persistent, created before herald starts).
async fn bob_with_rooms(p: &Prosody, rooms: &[&str]) -> C2s {
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    bob.send_presence(None, None, 0).await;
    for room in rooms {
        create_room(&mut bob, room, "bob", RoomConfig::default()).await;
    }
    bob
}

/// alice's phone, online, once herald answers her.
async fn alice_online(p: &Prosody) -> C2s {
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    alice.send_presence(None, None, 0).await;
    wait_until_answering(&mut alice, HERALD, T).await;
    alice
}

/// bob sees herald (nick `herald`, real JID `herald.localhost`) arrive in `room`.
async fn herald_arrives(bob: &mut C2s, room: &str) {
    herald_arrives_as(bob, room, "herald").await;
}

/// bob sees herald arrive in `room` as `nick`.
async fn herald_arrives_as(bob: &mut C2s, room: &str, nick: &str) {
    let o = wait_occupant(bob, room, nick, T)
        .await
        .unwrap_or_else(|| panic!("herald did not join {room} within {T:?}"));
    assert_eq!(o.jid.as_deref(), Some(HERALD), "{o:?}");
}

#[tokio::test]
async fn a_watcher_away_from_the_room_gets_the_push_on_her_app_servers() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut sub = Subscriber::login(&p).await;
    sub.open_node("alice-phone").await;
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let (herald, _obs) = start_herald(&p, env.store(), FAST).await;

    let mut alice = alice_online(&p).await;
    register(&mut alice, PUBSUB, "alice-phone", Some("s-phone")).await;
    register(&mut alice, APPS, "alice-tablet", Some("s-tablet")).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives(&mut bob, ROOM).await;

    // While alice is in the room (and online) nothing is pushed.
    join(&mut alice, ROOM, "alice").await;
    wait_occupant(&mut bob, ROOM, "alice", T)
        .await
        .expect("alice joined");
    say(&mut bob, ROOM, "while you are here").await;
    next_groupchat(&mut alice, ROOM, T, |m| {
        m.children().any(|c| c.name() == "body")
    })
    .await
    .expect("alice reads it live");
    leave(&mut alice, ROOM, "alice").await;
    wait_departure(&mut bob, ROOM, "alice", T)
        .await
        .expect("alice left");

    // Away: the next message reaches both app servers.
    say(&mut bob, ROOM, "you missed this").await;
    let n = sub
        .expect_notification("alice-phone", T, "the push on Prosody's pubsub")
        .await;
    assert_eq!(n.publisher.as_deref(), Some(HERALD));
    assert_eq!(n.summary.form_type(), Some(PUSH_SUMMARY));
    assert_eq!(n.summary.count(), 1);
    assert_eq!(n.summary.body(), Some("New Message!"), "no body by default");
    assert_eq!(n.summary.sender(), None, "no sender by default");

    let got = apps.expect_publish(T, "the push to the tablet").await;
    assert_eq!(
        (got.from.as_str(), got.node.as_str()),
        (HERALD, "alice-tablet")
    );
    assert_eq!(got.summary.form_type(), Some(PUSH_SUMMARY));
    assert_eq!(got.summary.count(), 1);
    assert_eq!(got.summary.body(), Some("New Message!"));
    assert_eq!(got.summary.sender(), None);
    let options = got
        .options
        .as_ref()
        .expect("publish-options with the secret");
    assert_eq!(options.form_type(), Some(PUBLISH_OPTIONS));
    assert_eq!(got.secret(), Some("s-tablet"));
    assert_eq!(
        apps.count(),
        1,
        "the message alice read live was not pushed"
    );
    assert_eq!(
        registrations(&mut alice).await,
        [
            ("alice-phone".into(), "0".into()),
            ("alice-tablet".into(), "0".into())
        ]
    );

    herald.stop_ok(T).await;
    for c in [alice, bob] {
        c.close().await;
    }
    sub.close().await;
    apps.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn an_online_occupant_gets_nothing_and_a_ghost_is_pushed() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let push = format!("{FAST}with_body = true\n");
    let (herald, obs) = start_herald(&p, env.store(), &push).await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives(&mut bob, ROOM).await;

    // alice's laptop joins with a directed presence only; her phone is online: an occupant with
    // an online resource, so no push.
    let mut laptop = C2s::login(&p.c2s_addr(), "alice@localhost/laptop", "pa").await;
    join(&mut laptop, ROOM, "alice").await;
    wait_presence(&obs, "alice@localhost", true).await;
    say(&mut bob, ROOM, "m1 you are online").await;
    next_groupchat(&mut laptop, ROOM, T, |m| {
        m.children().any(|c| c.name() == "body")
    })
    .await
    .expect("the laptop gets m1");

    // The phone goes offline: the room still lists alice (the laptop), herald knows she has no
    // online resource. A ghost: pushed.
    alice.send_unavailable().await;
    wait_presence(&obs, "alice@localhost", false).await;
    say(&mut bob, ROOM, "m2 ghost").await;
    let got = apps.expect_publish(T, "the push to the ghost").await;
    assert_eq!(got.summary.body(), Some("m2 ghost"));
    assert_eq!(got.summary.count(), 1);
    assert_eq!(apps.count(), 1, "m1 was not pushed");

    // The laptop's connection drops: alice is not an occupant any more, still pushed.
    laptop.drop_tcp();
    wait_departure(&mut bob, ROOM, "alice", T)
        .await
        .expect("the room drops alice");
    say(&mut bob, ROOM, "m3 gone").await;
    let got = apps.expect_publish(T, "the push after the drop").await;
    assert_eq!(got.summary.body(), Some("m3 gone"));
    assert_eq!(
        got.summary.count(),
        2,
        "m2 and m3 since alice was last online"
    );

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    apps.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn mentioned_mode_pushes_only_messages_that_mention_the_watcher() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let push = format!("{FAST}with_body = true\n");
    let (herald, _obs) = start_herald(&p, env.store(), &push).await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    watch_room(&mut alice, ROOM, "alice", "mentioned").await;
    herald_arrives(&mut bob, ROOM).await;

    // Each step: messages that must not be pushed, then one that must; the push seen is that one.
    let me = format!("xmpp:{ROOM}/alice");
    let steps: [(&[&str], &str, Option<&str>); 4] = [
        (&["hello all", "malice is afoot"], "ALICE: ping", None),
        (&[], "no names here", Some("xmpp:alice@localhost")),
        (&[], "still none", Some(me.as_str())),
        (&["for bob"], "bye, alice.", None),
    ];
    for (i, (quiet, mention, uri)) in steps.iter().enumerate() {
        for q in *quiet {
            if *q == "for bob" {
                say_mentioning(&mut bob, ROOM, q, "xmpp:bob@localhost").await;
            } else {
                say(&mut bob, ROOM, q).await;
            }
        }
        match uri {
            Some(uri) => say_mentioning(&mut bob, ROOM, mention, uri).await,
            None => say(&mut bob, ROOM, mention).await,
        }
        let got = apps.expect_publish(T, mention).await;
        assert_eq!(got.summary.body(), Some(*mention), "step {i}");
        assert_eq!(got.summary.count(), i as u64 + 1, "step {i}");
    }
    assert_eq!(apps.count(), 4);

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    apps.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn with_sender_the_placeholder_body_the_room_nick_and_what_is_not_pushed() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    // Room history from before herald joined.
    say(&mut bob, ROOM, "old news").await;
    let push = format!(
        "{FAST}with_sender = true\nimportant_body = \"You have mail\"\nroom_nick = \"pushbot\"\n"
    );
    let (herald, _obs) = start_herald(&p, env.store(), &push).await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives_as(&mut bob, ROOM, "pushbot").await;

    // Not pushed: a subject change, a chat-state-only message. Pushed: an encrypted message
    // (no body) from bob, with the placeholder body and the sender's occupant JID.
    set_subject(&mut bob, ROOM, "release day").await;
    send_groupchat_xml(
        &mut bob,
        ROOM,
        "<active xmlns='http://jabber.org/protocol/chatstates'/>",
    )
    .await;
    send_encrypted(&mut bob, ROOM).await;
    let got = apps.expect_publish(T, "the encrypted message").await;
    assert_eq!(
        got.summary.count(),
        1,
        "history, subject and chat state not pushed"
    );
    assert_eq!(got.summary.body(), Some("You have mail"));
    assert_eq!(got.summary.sender(), Some("dev@muc.localhost/bob"));
    assert_eq!(apps.count(), 1);

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    apps.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn a_burst_is_coalesced_into_one_push_with_the_summed_count() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let window = Duration::from_secs(1);
    let (herald, _obs) = start_herald(
        &p,
        env.store(),
        "coalesce = \"1s\"\ntimeout = \"2s\"\nwith_body = true\n",
    )
    .await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives(&mut bob, ROOM).await;

    for body in ["b1", "b2", "b3"] {
        say(&mut bob, ROOM, body).await;
    }
    let first = apps.expect_publish(T, "the first of the burst").await;
    let first_at = Instant::now();
    assert_eq!(
        (first.summary.body(), first.summary.count()),
        (Some("b1"), 1)
    );
    let rest = apps.expect_publish(T, "the rest of the burst").await;
    assert!(
        first_at.elapsed() >= window / 2,
        "the rest came {:?} after the first, inside the {window:?} window",
        first_at.elapsed()
    );
    assert_eq!((rest.summary.body(), rest.summary.count()), (Some("b3"), 3));
    // After the window a message goes out at once, as the third publish.
    say(&mut bob, ROOM, "b4").await;
    let next = apps.expect_publish(T, "b4").await;
    assert_eq!((next.summary.body(), next.summary.count()), (Some("b4"), 4));
    assert_eq!(apps.count(), 3);

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    apps.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn herald_stays_in_its_rooms_across_a_kick_and_a_reconnect_and_leaves_on_shutdown() {
    let mut p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut bob = bob_with_rooms(&p, &[ROOM, OPS]).await;
    let (herald, obs) = start_herald(&p, env.store(), FAST).await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    watch_room(&mut alice, OPS, "alice", "mentioned").await;
    herald_arrives(&mut bob, ROOM).await;
    herald_arrives(&mut bob, OPS).await;

    // Kicked: herald rejoins.
    kick(&mut bob, ROOM, "herald", "out").await;
    let out = wait_departure(&mut bob, ROOM, "herald", T)
        .await
        .expect("kicked");
    assert!(status_codes(&out).contains(&307));
    herald_arrives(&mut bob, ROOM).await;

    // Prosody restarts: herald reconnects and is back in both rooms.
    alice.close().await;
    bob.close().await;
    let restarted_ms = chrono::Utc::now().timestamp_millis();
    p.restart().await;
    for room in [ROOM, OPS] {
        let rejoined = tokio::time::timeout(
            T,
            obs.rooms.wait_for(room, |s| {
                s.is_some_and(|s| s.state == RoomState::Joined && s.since_ms >= restarted_ms)
            }),
        )
        .await;
        assert!(
            matches!(rejoined, Ok(Some(_))),
            "herald did not rejoin {room} after the reconnect: {:?}",
            obs.rooms.status(room)
        );
    }
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    bob.send_presence(None, None, 0).await;
    for room in [ROOM, OPS] {
        let joined = join(&mut bob, room, "bob").await;
        assert!(
            joined.nicks().contains(&"herald".to_owned()),
            "{room} does not list herald after the reconnect"
        );
    }

    // A graceful shutdown leaves both rooms.
    herald.stop_ok(T).await;
    for room in [ROOM, OPS] {
        let gone = wait_departure(&mut bob, room, "herald", T)
            .await
            .unwrap_or_else(|| panic!("herald did not leave {room} on shutdown"));
        assert!(!status_codes(&gone).contains(&307), "a leave, not a kick");
    }
    bob.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn errors_end_a_registration_at_max_errors_but_wait_errors_do_not() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut broken = AppServer::connect(
        &p.component_addr(),
        BROKEN,
        APP_SECRET,
        Answer::error("cancel", "item-not-found"),
    )
    .await;
    broken.set_answer_for("alice-busy", Answer::error("wait", "resource-constraint"));
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let push = format!("{FAST}max_errors = 3\n");
    let (herald, _obs) = start_herald(&p, env.store(), &push).await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, BROKEN, "alice-gone", None).await;
    register(&mut alice, BROKEN, "alice-busy", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives(&mut bob, ROOM).await;

    for n in 1..=3u32 {
        say(&mut bob, ROOM, &format!("e{n}")).await;
        loop {
            let got = broken.expect_publish(T, &format!("the push of e{n}")).await;
            if got.node == "alice-gone" {
                break;
            }
        }
        if n < 3 {
            let want = n.to_string();
            wait_registrations(&mut alice, T, "the error is counted", |l| {
                l.iter().any(|(node, e)| node == "alice-gone" && *e == want)
            })
            .await;
        }
    }
    let left = wait_registrations(&mut alice, T, "removed at max_errors", |l| {
        !l.iter().any(|(node, _)| node == "alice-gone")
    })
    .await;
    assert_eq!(
        left,
        [("alice-busy".into(), "0".into())],
        "wait errors are not counted"
    );
    assert!(
        env.logs
            .wait_for_line(T, |l| l.contains("alice-gone")
                && l.contains("item-not-found"))
            .await
            .is_some(),
        "the removal is logged with the last error"
    );

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    broken.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn a_remote_disable_from_the_app_server_removes_that_registration_only() {
    let p = group_push_prosody().await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut broken =
        AppServer::connect(&p.component_addr(), BROKEN, APP_SECRET, Answer::Result).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let (herald, _obs) = start_herald(&p, env.store(), FAST).await;
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    register(&mut alice, APPS, "alice-other", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives(&mut bob, ROOM).await;

    // Sent by a service alice did not register for that node: ignored. Then the real one.
    broken
        .remote_disable(HERALD, "alice-other", "alice@localhost")
        .await;
    let pong = broken.ping(HERALD, T).await;
    assert_eq!(
        pong.attr("type"),
        Some("result"),
        "herald read the forged disable first"
    );
    apps.remote_disable(HERALD, "alice-tablet", "alice@localhost")
        .await;
    let left = wait_registrations(&mut alice, T, "the remote disable", |l| {
        !l.iter().any(|(node, _)| node == "alice-tablet")
    })
    .await;
    assert_eq!(left, [("alice-other".into(), "0".into())]);

    say(&mut bob, ROOM, "after the disable").await;
    let got = apps
        .expect_publish(T, "the push to the registration left")
        .await;
    assert_eq!(got.node, "alice-other");

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    apps.close().await;
    broken.close().await;
    drop(env);
    stop_servers(p).await;
}

#[tokio::test]
async fn a_push_pending_at_kill_9_is_published_after_the_restart() {
    let p = group_push_prosody().await;
    // The app server takes the publish and does not answer until herald is dead.
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Silent).await;
    let mut bob = bob_with_rooms(&p, &[ROOM]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("component.toml");
    let log = dir.path().join("herald.log");
    let push = "coalesce = \"200ms\"\ntimeout = \"30s\"\nwith_body = true\n";
    std::fs::write(&config, push_toml(&p, &dir.path().join("store"), push)).unwrap();

    let mut herald = HeraldProcess::spawn(&config, &log);
    let mut alice = alice_online(&p).await;
    register(&mut alice, APPS, "alice-tablet", None).await;
    watch_room(&mut alice, ROOM, "alice", "always").await;
    herald_arrives(&mut bob, ROOM).await;
    say(&mut bob, ROOM, "before the crash").await;
    let first = apps.expect_publish(T, "the push before the crash").await;
    assert_eq!(first.summary.body(), Some("before the crash"));
    herald.kill9();

    apps.set_answer(Answer::Result);
    let _herald = HeraldProcess::spawn(&config, &log);
    let again = apps
        .next_publish(T)
        .await
        .unwrap_or_else(|| panic!("no publish after the restart:\n{}", file_tail(&log, 40)));
    assert_eq!(again.node, "alice-tablet");
    assert_eq!(again.summary.body(), Some("before the crash"));
    assert_eq!(again.summary.count(), 1);
    assert_eq!(again.answered, Answer::Result);

    alice.close().await;
    bob.close().await;
    apps.close().await;
    stop_servers(p).await;
}
