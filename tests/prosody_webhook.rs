//! Both sinks end to end against a real Prosody 0.12 (+ mod_privilege): herald runs in-process
//! with an XMPP sink (the server user `world`, a real c2s client) and a webhook sink (the
//! receiver of `support/webhook_receiver.rs`, checking the HMAC signature), while real c2s users
//! log in, change their presence, log out, close their stream or drop TCP, and while herald
//! restarts and learns from Prosody's snapshot.
//!
//! The contract: the webhook receives exactly the events the server user receives (same trace,
//! seq, args, at, source), in the same order, each once; both are in `seq` order.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`. Without them these
//! tests fail (they are never skipped). `HERALD_TEST_DUMP=1` prints herald's log and the Prosody
//! log tail even when a test passes.

mod support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::path::Path;
use std::time::{Duration, Instant};

use minidom::Element;
use serde_json::Value;
use support::client::C2s;
use support::herald::{event_json, stop_servers, Config, Herald, TestEnv};
use support::prosody::Prosody;
use support::server_user::ServerUser;
use webhook_receiver::{Request, WebhookReceiver};

/// HMAC key of the webhook sink; the receiver verifies every request with it.
const HOOK_KEY: &str = "prosody-hook-key";
/// Longest wait for one expected event.
const T: Duration = Duration::from_secs(8);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(1200);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------------
// herald in-process, with both sinks
// ------------------------------------------------------------------------------------------------

fn start_herald(p: &Prosody, store: &Path, receiver: &WebhookReceiver) -> Herald {
    Herald::start(
        Config::new(
            &p.component_jid,
            &p.component_secret,
            p.component_addr(),
            store,
        )
        .presence("changes = \"all\"")
        .xmpp_sink()
        .webhook(&format!(
            r#"name = "game"
url = "{url}"
secret = "{HOOK_KEY}"
headers = {{ Authorization = "Bearer game-token" }}
retry_min = "100ms"
retry_max = "400ms"
timeout = "2s"
"#,
            url = receiver.url("/hooks/presence"),
        ))
        .settings(),
    )
}

// ------------------------------------------------------------------------------------------------
// The two views of the events
// ------------------------------------------------------------------------------------------------

/// The server user, collecting the JSON of every event message.
type World = ServerUser<Value>;

async fn login_world(p: &Prosody) -> World {
    ServerUser::login(p, event_checked, list).await
}

/// An event message's JSON; its `id` must be the event's `trace`.
fn event_checked(msg: &Element) -> Value {
    let json = event_json(msg);
    assert_eq!(
        msg.attr("id"),
        json["trace"].as_str(),
        "message id == trace"
    );
    json
}

/// Receives until `n` events have arrived; panics after the test timeout.
async fn wait_for(world: &mut World, n: usize, what: &str) {
    world.wait_until(what, T, |got| got.len() >= n).await;
}

fn line(e: &Value) -> String {
    format!(
        "#{} {} {} {} r={} show={} status={}",
        e["seq"],
        e["source"],
        e["args"]["user"],
        e["args"]["presence"],
        e["args"]["resources"],
        e["args"]["show"],
        e["args"]["status"]
    )
}

fn list(events: &[Value]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("\n  {}", line(e)));
    }
    if out.is_empty() {
        out.push_str(" (none)");
    }
    out
}

/// The webhook's accepted events, after checking every request's envelope and signature.
fn webhook_events(receiver: &WebhookReceiver) -> Vec<Value> {
    let reqs = receiver.requests();
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/presence");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer game-token"));
        assert!(
            r.batch_id().is_some(),
            "request #{} without X-Herald-Batch",
            r.index
        );
        assert_eq!(
            r.signature_valid,
            Some(true),
            "request #{}: bad X-Herald-Signature {:?}",
            r.index,
            r.header("x-herald-signature")
        );
        assert!(r.accepted(), "request #{} answered {:?}", r.index, r.answer);
    }
    reqs.iter().flat_map(Request::events).collect()
}

/// Asserts that the webhook got exactly the server user's events, in the same order, each once,
/// in strictly increasing `seq` order.
fn assert_same_events(world: &[Value], hook: &[Value]) {
    for (i, (w, h)) in world.iter().zip(hook).enumerate() {
        assert_eq!(
            w,
            h,
            "event #{i} differs between the server user and the webhook\nserver user:{}\nwebhook:{}",
            list(world),
            list(hook)
        );
    }
    assert_eq!(
        world.len(),
        hook.len(),
        "different numbers of events\nserver user:{}\nwebhook:{}",
        list(world),
        list(hook)
    );
    let seqs: Vec<u64> = world.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), world.len(), "every event has a seq");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "not in strictly increasing seq order (or a duplicate):{}",
        list(world)
    );
}

/// `(user, presence, source)` of each event, for readable expectations.
fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["args"]["user"].as_str().unwrap_or_default().to_owned(),
                e["args"]["presence"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn s3(user: &str, presence: &str, source: &str) -> (String, String, String) {
    (user.to_owned(), presence.to_owned(), source.to_owned())
}

/// Round trip to the server: once answered, Prosody has forwarded everything `c` sent before.
async fn sync(c: &mut C2s, id: &str) {
    c.send_xml(&format!(
        "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let answer = c
        .next_matching(T, |el| el.name() == "iq" && el.attr("id") == Some(id))
        .await;
    assert!(answer.is_some(), "{}: no answer to the sync ping", c.jid());
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

/// Live transitions of every kind: both sinks get the same events.
#[tokio::test]
async fn webhook_gets_exactly_what_the_server_user_gets() {
    let started = Instant::now();
    let p = Prosody::builder()
        .users(&[
            ("world", "pw"),
            ("alice", "pa"),
            ("bob", "pb"),
            ("carol", "pc"),
        ])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);
    let receiver = WebhookReceiver::start().await;
    receiver.set_secret(HOOK_KEY.as_bytes());

    let herald = start_herald(&p, env.store(), &receiver);
    let mut world = login_world(&p).await;
    wait_for(&mut world, 1, "its own presence event").await;

    let mut phone = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    phone.send_presence(None, Some("morning"), 1).await;
    wait_for(&mut world, 2, "alice/phone available").await;
    let mut laptop = C2s::login(&p.c2s_addr(), "alice@localhost/laptop", "pa").await;
    laptop.send_presence(None, None, 0).await;
    wait_for(&mut world, 3, "alice/laptop available").await;
    phone.send_presence(Some("away"), Some("morning"), 1).await;
    sync(&mut phone, "away").await;
    wait_for(&mut world, 4, "alice/phone away").await;
    laptop.send_unavailable().await;
    wait_for(&mut world, 5, "alice/laptop unavailable").await;
    phone.close().await;
    wait_for(&mut world, 6, "alice/phone gone (stream closed)").await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    bob.send_presence(Some("dnd"), Some("busy"), -1).await;
    wait_for(&mut world, 7, "bob available").await;
    bob.drop_tcp();
    wait_for(&mut world, 8, "bob gone (TCP dropped)").await;
    // A quick succession: carol comes, changes, goes, with no wait in between.
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/tab", "pc").await;
    carol.send_presence(None, None, 0).await;
    carol.send_presence(Some("xa"), Some("lunch"), 0).await;
    carol.send_unavailable().await;
    wait_for(&mut world, 11, "carol available, xa, unavailable").await;
    world.collect_for(QUIET).await;

    assert!(
        receiver.wait_for_accepted_seqs(world.got.len(), T).await,
        "the webhook did not get as many events as the server user ({}):{}",
        world.got.len(),
        list(&receiver.accepted_events())
    );
    receiver.wait_quiet(QUIET).await;
    let hook = webhook_events(&receiver);
    assert_same_events(&world.got, &hook);
    assert_eq!(
        summary(&hook),
        [
            s3("world@localhost/sink", "available", "live"),
            s3("alice@localhost/phone", "available", "live"),
            s3("alice@localhost/laptop", "available", "live"),
            s3("alice@localhost/phone", "available", "live"),
            s3("alice@localhost/laptop", "unavailable", "live"),
            s3("alice@localhost/phone", "unavailable", "live"),
            s3("bob@localhost/desk", "available", "live"),
            s3("bob@localhost/desk", "unavailable", "live"),
            s3("carol@localhost/tab", "available", "live"),
            s3("carol@localhost/tab", "available", "live"),
            s3("carol@localhost/tab", "unavailable", "live"),
        ],
        "{}",
        list(&hook)
    );
    assert_eq!(hook[3]["args"]["show"], "away");
    assert_eq!(hook[6]["args"]["show"], "dnd");
    assert_eq!(hook[6]["args"]["status"], "busy");
    assert_eq!(hook[6]["args"]["priority"], -1);
    assert_eq!(hook[9]["args"]["show"], "xa");

    herald.stop_ok(STOP_TIMEOUT).await;
    drop(laptop);
    drop(carol);
    stop_servers(p).await;
    eprintln!(
        "webhook_gets_exactly_what_the_server_user_gets: {:?}",
        started.elapsed()
    );
}

/// Events learnt from Prosody's snapshot (`snapshot`) and from the difference after a restart
/// (`resync`) reach both sinks identically too.
#[tokio::test]
async fn snapshot_and_resync_events_reach_both_sinks_identically() {
    let started = Instant::now();
    let p = Prosody::builder()
        .users(&[("world", "pw"), ("alice", "pa"), ("carol", "pc")])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);
    let receiver = WebhookReceiver::start().await;
    receiver.set_secret(HOOK_KEY.as_bytes());

    // Online before herald starts: both come with the snapshot.
    let mut world = login_world(&p).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    alice
        .send_presence(Some("chat"), Some("here first"), 2)
        .await;
    sync(&mut alice, "before-herald").await;

    let herald = start_herald(&p, env.store(), &receiver);
    wait_for(&mut world, 2, "the snapshot of world and alice").await;
    world.collect_for(QUIET).await;
    herald.stop_ok(STOP_TIMEOUT).await;

    // While herald is away: alice leaves, carol arrives.
    alice.send_unavailable().await;
    drop(alice);
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/tab", "pc").await;
    carol.send_presence(None, None, 0).await;
    sync(&mut carol, "while-away").await;

    let herald = start_herald(&p, env.store(), &receiver);
    wait_for(
        &mut world,
        4,
        "alice resynced offline, carol from the snapshot",
    )
    .await;
    // Live again after the restart.
    carol.send_unavailable().await;
    wait_for(&mut world, 5, "carol unavailable").await;
    world.collect_for(QUIET).await;

    assert!(
        receiver.wait_for_accepted_seqs(world.got.len(), T).await,
        "the webhook did not get as many events as the server user ({}):{}",
        world.got.len(),
        list(&receiver.accepted_events())
    );
    receiver.wait_quiet(QUIET).await;
    let hook = webhook_events(&receiver);
    assert_same_events(&world.got, &hook);
    let mut first_run = summary(&hook[..2]);
    first_run.sort();
    assert_eq!(
        first_run,
        [
            s3("alice@localhost/phone", "available", "snapshot"),
            s3("world@localhost/sink", "available", "snapshot"),
        ],
        "{}",
        list(&hook)
    );
    let mut restart = summary(&hook[2..4]);
    restart.sort();
    assert_eq!(
        restart,
        [
            s3("alice@localhost/phone", "unavailable", "resync"),
            s3("carol@localhost/tab", "available", "snapshot"),
        ],
        "{}",
        list(&hook)
    );
    assert_eq!(
        summary(&hook[4..]),
        [s3("carol@localhost/tab", "unavailable", "live")],
        "{}",
        list(&hook)
    );

    herald.stop_ok(STOP_TIMEOUT).await;
    drop(carol);
    drop(world);
    stop_servers(p).await;
    eprintln!(
        "snapshot_and_resync_events_reach_both_sinks_identically: {:?}",
        started.elapsed()
    );
}
