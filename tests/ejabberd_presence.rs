//! herald end to end against a real ejabberd 23.01 (+ mod_privilege): real c2s clients, herald
//! in-process, and the server user `world` receiving the event messages.
//!
//! ejabberd never forwards the unavailable of a session that ends without one, so herald's
//! liveness checks (`liveness_interval = "1s"` here) must find them; and it sends no presence
//! snapshot, so users online before herald connects are read from its admin API.
//!
//! Needs `ejabberd`: `bash scripts/install-test-deps.sh`. Without it these tests fail.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::client::{C2s, NS_CLIENT};
use support::ejabberd::Ejabberd;
use support::herald::{event_json, stop_servers, Config, Herald, TestEnv, NS_FLUX};

/// Longest wait for one expected event.
const T: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const USERS: &[(&str, &str)] = &[
    ("alice", "pw"),
    ("bob", "pw"),
    ("carol", "pw"),
    ("dave", "pw"),
    ("world", "pw"),
];

fn start_herald(e: &Ejabberd, store: &std::path::Path, presence: &str) -> Herald {
    Herald::start(
        Config::new(
            &e.component_jid,
            &e.component_secret,
            e.component_addr(),
            store,
        )
        .presence(presence)
        .xmpp_sink()
        .settings(),
    )
}

/// The server user, available so that event messages reach it.
async fn world(e: &Ejabberd) -> C2s {
    let mut c = C2s::login(&e.c2s_addr(), "world@localhost/sink", "pw").await;
    c.send_presence(None, None, 0).await;
    c
}

async fn online(e: &Ejabberd, user: &str) -> C2s {
    let mut c = C2s::login(&e.c2s_addr(), &format!("{user}@localhost/phone"), "pw").await;
    c.send_presence(Some("chat"), Some("here"), 0).await;
    c
}

/// Waits for the event about `user` (full JID) with `presence`; returns it.
async fn event_for(world: &mut C2s, user: &str, presence: &str, seen: &mut Vec<Value>) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(e) = seen
            .iter()
            .find(|e| e["args"]["user"] == user && e["args"]["presence"] == presence)
        {
            return e.clone();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match world.next_message_with(NS_FLUX, "event", left).await {
            Some(msg) => seen.push(event_json(&msg)),
            None => panic!("no {presence} event for {user} within {T:?}; got {seen:#?}"),
        }
    }
}

#[tokio::test]
async fn live_changes_and_vanished_sessions_are_reported() {
    let e = Ejabberd::start(USERS).await;
    let env = TestEnv::new(&[&e.log_path]);
    let herald = start_herald(&e, env.store(), "liveness_interval = \"1s\"");
    let mut world = world(&e).await;
    let mut seen = Vec::new();
    event_for(&mut world, "world@localhost/sink", "available", &mut seen).await;
    // Once herald knows the server is ejabberd, liveness checks are on.
    env.logs
        .wait_for_line(T, |l| l.contains("liveness checks on"))
        .await
        .expect("liveness switched on for ejabberd");

    // A user comes and goes with presences of their own.
    let mut alice = online(&e, "alice").await;
    let up = event_for(&mut world, "alice@localhost/phone", "available", &mut seen).await;
    assert_eq!(
        (up["source"].as_str(), up["args"]["show"].as_str()),
        (Some("live"), Some("chat"))
    );
    alice.send_unavailable().await;
    let down = event_for(
        &mut world,
        "alice@localhost/phone",
        "unavailable",
        &mut seen,
    )
    .await;
    assert_eq!(down["source"], "live");

    // bob's TCP connection is cut, carol closes her stream: ejabberd forwards no unavailable.
    let bob = online(&e, "bob").await;
    let carol = online(&e, "carol").await;
    // dave is online but answers no IQ at all: he must stay online.
    let mut dave = online(&e, "dave").await;
    dave.set_auto_pong(false);
    for user in ["bob", "carol", "dave"] {
        event_for(
            &mut world,
            &format!("{user}@localhost/phone"),
            "available",
            &mut seen,
        )
        .await;
    }
    bob.drop_tcp();
    carol.close().await;
    for user in ["bob", "carol"] {
        let gone = event_for(
            &mut world,
            &format!("{user}@localhost/phone"),
            "unavailable",
            &mut seen,
        )
        .await;
        assert_eq!(gone["source"], "liveness", "{gone}");
        assert_eq!(gone["args"]["resources"], 0);
    }
    // dave gets a ping each interval and each check ends without an answer (the check's
    // deadline is the 1 s interval): after his third ping two checks have run out.
    for n in 1..=3 {
        let ping = dave
            .next_matching(T, |s| {
                s.is("iq", NS_CLIENT) && s.attr("from") == Some("herald.localhost")
            })
            .await;
        assert!(ping.is_some(), "herald's check {n} of dave never came");
    }
    while let Some(msg) = world
        .next_message_with(NS_FLUX, "event", Duration::from_millis(500))
        .await
    {
        seen.push(event_json(&msg));
    }
    assert!(
        !seen
            .iter()
            .any(|e| e["args"]["user"] == "dave@localhost/phone"
                && e["args"]["presence"] == "unavailable"),
        "dave, online but silent, was reported offline: {seen:#?}"
    );
    herald.stop_ok(STOP_TIMEOUT).await;
    drop(env);
    stop_servers((e, world, dave)).await;
}

#[tokio::test]
async fn users_online_before_herald_are_read_from_the_admin_api() {
    let e = Ejabberd::start(USERS).await;
    let env = TestEnv::new(&[&e.log_path]);
    let alice = online(&e, "alice").await;
    let mut world = world(&e).await;
    // Both sessions exist before herald connects.
    let sessions = e.sessions().await;
    assert!(
        sessions.contains(&"alice@localhost/phone".to_owned()),
        "{sessions:?}"
    );
    let presence = format!(
        "liveness = \"off\"\nejabberd_api = {{ url = \"{}\" }}",
        e.api_url()
    );
    let herald = start_herald(&e, env.store(), &presence);
    let mut seen = Vec::new();
    let snap = event_for(&mut world, "alice@localhost/phone", "available", &mut seen).await;
    assert_eq!(snap["source"], "snapshot", "{snap}");
    assert_eq!(
        (
            snap["args"]["show"].as_str(),
            snap["args"]["status"].as_str()
        ),
        (Some("chat"), Some("here"))
    );
    event_for(&mut world, "world@localhost/sink", "available", &mut seen).await;
    herald.stop_ok(STOP_TIMEOUT).await;
    drop(env);
    stop_servers((e, world, alice)).await;
}
