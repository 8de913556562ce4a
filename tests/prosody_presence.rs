//! herald end to end against a real Prosody 0.12 (+ mod_privilege): real c2s clients change their
//! presence, herald runs in-process (`herald::app::run`), and the "server user" `world` is a real
//! c2s client that receives the event messages. What the server user gets is the contract:
//! the message envelope (`id == trace`, `from` = the component, `<body>Presence update</body>`,
//! `<event xmlns='flux:xmpp' mime='application/json'>`), the JSON, the order and `seq`.
//!
//! Every test has its own Prosody, store and log capture, so they run in parallel. herald's logs
//! are captured per test (a thread-local `tracing` subscriber: `#[tokio::test]` runs every task of
//! a test on its own thread) and printed, with the Prosody log tail, when a test fails.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`. Without them these
//! tests fail (they are never skipped).

mod support;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use minidom::Element;
use serde_json::Value;
use support::client::{C2s, NS_CLIENT};
use support::herald::{stop_servers, Config, Herald, Logs, TestEnv, NS_FLUX};
use support::prosody::Prosody;
use support::server_user::ServerUser;

const COMPONENT: &str = "herald.localhost";
const WORLD: &str = "world@localhost";
const NS_DELAY: &str = "urn:xmpp:delay";
/// Longest wait for one expected event.
const T: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(1500);
/// How long a graceful shutdown of herald may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------------
// herald in-process
// ------------------------------------------------------------------------------------------------

/// Starts herald against `p` with its store in `store`; `changes` is `[presence] changes`.
fn start_herald(p: &Prosody, store: &Path, changes: &str) -> Herald {
    start_herald_with(p, store, &format!("changes = \"{changes}\""))
}

/// Like [`start_herald`], with `presence` as the body of the `[presence]` section.
fn start_herald_with(p: &Prosody, store: &Path, presence: &str) -> Herald {
    Herald::start(
        Config::new(
            &p.component_jid,
            &p.component_secret,
            p.component_addr(),
            store,
        )
        .presence(presence)
        .xmpp_sink()
        .settings(),
    )
}

/// herald's log line closing the snapshot of a (re)connection, whether the server sent one or not.
fn snapshot_handled(line: &str) -> bool {
    line.contains("presence snapshot complete")
        || line.contains("the server sent no presence snapshot")
}

/// Waits for the ERROR about the missing presence permission.
async fn wait_for_missing_presence_error(logs: &Logs) -> String {
    logs.wait_for_line(T, |l| l.contains("ERROR") && l.contains("managed_entity"))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no ERROR line mentioning managed_entity within {T:?}:\n{}",
                logs.text()
            )
        })
}

// ------------------------------------------------------------------------------------------------
// Events as the server user sees them
// ------------------------------------------------------------------------------------------------

/// One event message received by the server user; [`Event::parse`] checks the envelope.
#[derive(Debug, Clone)]
struct Event {
    json: Value,
}

impl Event {
    /// Parses an event message, asserting everything that holds for every event.
    fn parse(msg: &Element) -> Event {
        let xml = String::from(msg);
        let ctx = || format!("in {xml}");
        assert_eq!(msg.name(), "message", "{}", ctx());
        assert_eq!(msg.attr("type"), Some("chat"), "{}", ctx());
        assert_eq!(msg.attr("from"), Some(COMPONENT), "{}", ctx());
        assert_eq!(
            msg.attr("to").map(|t| t.split('/').next().unwrap_or(t)),
            Some(WORLD),
            "{}",
            ctx()
        );
        let body = msg
            .get_child("body", NS_CLIENT)
            .unwrap_or_else(|| panic!("no <body/> {}", ctx()));
        assert_eq!(body.text(), "Presence update", "{}", ctx());
        let event = msg
            .get_child("event", NS_FLUX)
            .unwrap_or_else(|| panic!("no <event xmlns='flux:xmpp'/> {}", ctx()));
        assert_eq!(event.attr("mime"), Some("application/json"), "{}", ctx());
        // Prosody adds a <delay/> to a message it kept offline for the server user.
        assert_eq!(
            msg.children().filter(|c| !c.is("delay", NS_DELAY)).count(),
            2,
            "only <body/> and <event/> {}",
            ctx()
        );
        let json: Value = serde_json::from_str(&event.text())
            .unwrap_or_else(|e| panic!("event is not JSON ({e}) {}", ctx()));
        let trace = json["trace"]
            .as_str()
            .unwrap_or_else(|| panic!("no trace {}", ctx()));
        assert!(!trace.is_empty(), "{}", ctx());
        assert_eq!(msg.attr("id"), Some(trace), "message id == trace {}", ctx());
        assert_eq!(json["type"], "PRESENCE_DID_CHANGE", "{}", ctx());
        assert!(json["seq"].as_u64().is_some(), "seq {}", ctx());
        let at = json["at"].as_str().unwrap_or_default();
        assert!(
            at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
            "at {at:?} {}",
            ctx()
        );
        let args = &json["args"];
        assert!(
            args["user"].as_str().is_some_and(|u| u.contains('@')),
            "{}",
            ctx()
        );
        assert!(
            matches!(args["presence"].as_str(), Some("available" | "unavailable")),
            "{}",
            ctx()
        );
        assert!(args["resources"].as_u64().is_some(), "{}", ctx());
        for key in ["show", "status"] {
            // Omitted when absent, never null.
            if let Some(v) = args.get(key) {
                assert!(v.is_string(), "{key} {}", ctx());
            }
        }
        assert!(
            matches!(
                json["source"].as_str(),
                Some("live" | "snapshot" | "resync" | "liveness")
            ),
            "{}",
            ctx()
        );
        Event { json }
    }

    fn trace(&self) -> &str {
        self.json["trace"].as_str().unwrap_or_default()
    }
    fn seq(&self) -> u64 {
        self.json["seq"].as_u64().unwrap_or_default()
    }
    fn source(&self) -> &str {
        self.json["source"].as_str().unwrap_or_default()
    }
    fn user(&self) -> &str {
        self.json["args"]["user"].as_str().unwrap_or_default()
    }
    fn bare(&self) -> &str {
        self.user().split('/').next().unwrap_or_default()
    }
    fn presence(&self) -> &str {
        self.json["args"]["presence"].as_str().unwrap_or_default()
    }
    fn resources(&self) -> u64 {
        self.json["args"]["resources"].as_u64().unwrap_or(u64::MAX)
    }
    fn show(&self) -> Option<&str> {
        self.json["args"]["show"].as_str()
    }
    fn status(&self) -> Option<&str> {
        self.json["args"]["status"].as_str()
    }
    fn priority(&self) -> i64 {
        self.json["args"]["priority"].as_i64().unwrap_or(i64::MIN)
    }
    fn is_world(&self) -> bool {
        self.bare() == WORLD
    }
    /// `(user, presence, resources, show)`: what the exact-sequence assertions compare.
    fn key(&self) -> (String, String, u64, Option<String>) {
        (
            self.user().to_owned(),
            self.presence().to_owned(),
            self.resources(),
            self.show().map(str::to_owned),
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} {} r={} show={:?} status={:?} prio={}",
            self.seq(),
            self.source(),
            self.user(),
            self.presence(),
            self.resources(),
            self.show(),
            self.status(),
            self.priority()
        )
    }
}

fn list(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("\n  {e}"));
    }
    if out.is_empty() {
        out.push_str(" (none)");
    }
    out
}

/// Expected `(user, presence, resources, show)`.
fn exp(
    user: &str,
    presence: &str,
    resources: u64,
    show: Option<&str>,
) -> (String, String, u64, Option<String>) {
    (
        user.to_owned(),
        presence.to_owned(),
        resources,
        show.map(str::to_owned),
    )
}

/// The events not about the server user itself.
fn others(events: &[Event]) -> Vec<Event> {
    events.iter().filter(|e| !e.is_world()).cloned().collect()
}

fn of(events: &[Event], bare: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.bare() == bare)
        .cloned()
        .collect()
}

/// Asserts that no trace appears twice.
fn assert_no_duplicates(events: &[Event]) {
    let mut seen = std::collections::HashSet::new();
    for e in events {
        assert!(
            seen.insert(e.trace().to_owned()),
            "event delivered twice: {e}\nall:{}",
            list(events)
        );
    }
}

/// Drops repeated traces (legitimate only across a reconnect or restart); returns how many.
fn dedupe(events: &[Event]) -> (Vec<Event>, usize) {
    let mut seen = std::collections::HashSet::new();
    let out: Vec<Event> = events
        .iter()
        .filter(|e| seen.insert(e.trace().to_owned()))
        .cloned()
        .collect();
    let dups = events.len() - out.len();
    (out, dups)
}

fn assert_seq_increasing(events: &[Event]) {
    for w in events.windows(2) {
        assert!(
            w[1].seq() > w[0].seq(),
            "seq not strictly increasing: {} then {}\nall:{}",
            w[0],
            w[1],
            list(events)
        );
    }
}

/// The server user `world@localhost/sink`, collecting every event message.
type World = ServerUser<Event>;

async fn login_world(p: &Prosody) -> World {
    ServerUser::login(p, Event::parse, list).await
}

/// Number of events not about the server user itself.
fn other_count(world: &World) -> usize {
    world.got.iter().filter(|e| !e.is_world()).count()
}

// ------------------------------------------------------------------------------------------------
// Clients
// ------------------------------------------------------------------------------------------------

/// Round trip (XEP-0199 ping to the server): once it returns, Prosody has processed (and forwarded
/// to herald) everything `c` sent before.
async fn sync(c: &mut C2s) {
    static N: AtomicU64 = AtomicU64::new(0);
    let id = format!("sync-{}", N.fetch_add(1, Ordering::Relaxed));
    c.send_xml(&format!(
        "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let answer = c
        .next_matching(T, |el| {
            el.name() == "iq" && el.attr("id") == Some(id.as_str())
        })
        .await;
    assert!(answer.is_some(), "{}: no answer to the sync ping", c.jid());
}

async fn login(p: &Prosody, jid: &str, password: &str) -> C2s {
    C2s::login(&p.c2s_addr(), jid, password).await
}

/// Starts herald and waits for the server user's own presence event: herald is connected and the
/// XMPP sink delivers.
async fn start_with_world(p: &Prosody, store: &Path, changes: &str) -> (Herald, World) {
    let herald = start_herald(p, store, changes);
    let mut world = login_world(p).await;
    world
        .wait_until("its own presence event", T, |g| {
            g.iter().any(Event::is_world)
        })
        .await;
    (herald, world)
}

// ------------------------------------------------------------------------------------------------
// 1. Live transitions
// ------------------------------------------------------------------------------------------------

/// alice/phone and alice/laptop come online, the phone goes away, the laptop sends unavailable,
/// the phone closes its stream without unavailable, bob comes online and drops TCP; the server
/// user must get exactly the expected sequence (the away change only with `changes = "all"`).
async fn live_transitions(changes: &str) {
    let p = Prosody::builder()
        .users(&[("world", "pw"), ("alice", "pa"), ("bob", "pb")])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);
    let all = changes == "all";

    let (herald, mut world) = start_with_world(&p, env.store(), changes).await;

    let mut phone = login(&p, "alice@localhost/phone", "pa").await;
    phone.send_presence(None, Some("morning"), 1).await;
    world
        .wait_until("alice/phone available", T, |g| !others(g).is_empty())
        .await;

    let mut laptop = login(&p, "alice@localhost/laptop", "pa").await;
    laptop.send_presence(None, None, 0).await;
    world
        .wait_until("alice/laptop available", T, |g| others(g).len() >= 2)
        .await;

    // Only the show changes. The round trip makes Prosody forward it before the laptop's
    // unavailable, so an event for it would come before the laptop's.
    phone.send_presence(Some("away"), Some("morning"), 1).await;
    sync(&mut phone).await;
    if all {
        world
            .wait_until("alice/phone away", T, |g| others(g).len() >= 3)
            .await;
    }
    let n = other_count(&world);

    laptop.send_unavailable().await;
    world
        .wait_until("alice/laptop unavailable", T, |g| others(g).len() > n)
        .await;

    phone.close().await;
    world
        .wait_until("alice/phone unavailable (stream closed)", T, |g| {
            others(g).len() > n + 1
        })
        .await;

    let mut bob = login(&p, "bob@localhost/desk", "pb").await;
    bob.send_presence(None, None, 0).await;
    world
        .wait_until("bob available", T, |g| others(g).len() > n + 2)
        .await;
    bob.drop_tcp();
    world
        .wait_until("bob unavailable (TCP dropped)", T, |g| {
            others(g).len() > n + 3
        })
        .await;

    // Nothing else comes.
    world.collect_for(QUIET).await;

    let got = world.got.clone();
    assert_no_duplicates(&got);
    assert_seq_increasing(&got);
    let mine = of(&got, WORLD);
    assert_eq!(
        mine.len(),
        1,
        "exactly one event about the server user itself:{}",
        list(&got)
    );
    assert_eq!(mine[0].presence(), "available");

    let evs = others(&got);
    for e in &evs {
        assert_eq!(e.source(), "live", "{e}\nall:{}", list(&got));
    }
    let mut want = vec![
        exp("alice@localhost/phone", "available", 1, None),
        exp("alice@localhost/laptop", "available", 2, None),
    ];
    if all {
        want.push(exp("alice@localhost/phone", "available", 2, Some("away")));
    }
    want.extend([
        exp("alice@localhost/laptop", "unavailable", 1, None),
        exp("alice@localhost/phone", "unavailable", 0, None),
        exp("bob@localhost/desk", "available", 1, None),
        exp("bob@localhost/desk", "unavailable", 0, None),
    ]);
    let keys: Vec<_> = evs.iter().map(Event::key).collect();
    assert_eq!(keys, want, "event sequence; got:{}", list(&got));

    // Fields passed through: status and priority of the phone, none for the laptop.
    assert_eq!(evs[0].status(), Some("morning"), "{}", evs[0]);
    assert_eq!(evs[0].priority(), 1, "{}", evs[0]);
    assert_eq!(evs[1].status(), None, "{}", evs[1]);
    assert_eq!(evs[1].priority(), 0, "{}", evs[1]);
    if all {
        assert_eq!(evs[2].status(), Some("morning"), "{}", evs[2]);
        assert_eq!(evs[2].priority(), 1, "{}", evs[2]);
    }
    // Unavailable events carry no show/status.
    for e in evs.iter().filter(|e| e.presence() == "unavailable") {
        assert_eq!((e.show(), e.status()), (None, None), "{e}");
    }

    assert!(herald.is_running(), "herald stopped on its own");
    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    drop(laptop);
    stop_servers(vec![p]).await;
}

#[tokio::test]
async fn live_transitions_availability_only() {
    let started = Instant::now();
    live_transitions("availability").await;
    eprintln!(
        "live_transitions_availability_only: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn live_transitions_with_all_changes() {
    let started = Instant::now();
    live_transitions("all").await;
    eprintln!("live_transitions_with_all_changes: {:?}", started.elapsed());
}

// ------------------------------------------------------------------------------------------------
// 2. Online before herald starts
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_online_before_herald_starts_comes_as_snapshot() {
    let started = Instant::now();
    let p = Prosody::builder()
        .users(&[("world", "pw"), ("carol", "pc")])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);

    let mut world = login_world(&p).await;
    let mut carol = login(&p, "carol@localhost/harness", "pc").await;
    carol
        .send_presence(Some("dnd"), Some("carol was online first"), 0)
        .await;
    sync(&mut carol).await;

    let herald = start_herald(&p, env.store(), "availability");
    world
        .wait_until("carol's snapshot event", T, |g| {
            !of(g, "carol@localhost").is_empty()
        })
        .await;
    world.collect_for(QUIET).await;

    let got = world.got.clone();
    assert_no_duplicates(&got);
    assert_seq_increasing(&got);
    let c = of(&got, "carol@localhost");
    assert_eq!(c.len(), 1, "exactly one event for carol:{}", list(&got));
    let e = &c[0];
    assert_eq!(e.user(), "carol@localhost/harness", "{e}");
    assert_eq!(e.presence(), "available", "{e}");
    assert_eq!(e.source(), "snapshot", "{e}");
    assert_eq!(e.show(), Some("dnd"), "{e}");
    assert_eq!(e.status(), Some("carol was online first"), "{e}");
    assert_eq!(e.priority(), 0, "{e}");
    assert_eq!(e.resources(), 1, "{e}");
    // The server user was online first too: one snapshot event about itself, nothing else.
    let w = of(&got, WORLD);
    assert_eq!(w.len(), 1, "{}", list(&got));
    assert_eq!(w[0].source(), "snapshot", "{}", w[0]);
    assert_eq!(got.len(), 2, "{}", list(&got));

    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    stop_servers(vec![p]).await;
    eprintln!(
        "user_online_before_herald_starts_comes_as_snapshot: {:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// 3. Restart while users come and go
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn restart_reports_what_changed_while_away() {
    let started = Instant::now();
    let p = Prosody::builder()
        .users(&[
            ("world", "pw"),
            ("alice", "pa"),
            ("bob", "pb"),
            ("dave", "pd"),
        ])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);

    let (herald, mut world) = start_with_world(&p, env.store(), "availability").await;
    let mut alice = login(&p, "alice@localhost/phone", "pa").await;
    alice.send_presence(Some("chat"), Some("here"), 0).await;
    let mut bob = login(&p, "bob@localhost/desk", "pb").await;
    bob.send_presence(None, None, 0).await;
    world
        .wait_until("alice and bob available", T, |g| {
            !of(g, "alice@localhost").is_empty() && !of(g, "bob@localhost").is_empty()
        })
        .await;
    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    world.collect_for(Duration::from_millis(300)).await;
    let before = world.got.clone();
    assert_no_duplicates(&before);
    assert_seq_increasing(&before);
    assert_eq!(before.len(), 3, "world, alice, bob:{}", list(&before));
    let max_before = before.iter().map(Event::seq).max().unwrap();

    // While herald is down: bob goes offline, dave comes online, alice stays.
    bob.send_unavailable().await;
    sync(&mut bob).await;
    bob.close().await;
    let mut dave = login(&p, "dave@localhost/tablet", "pd").await;
    dave.send_presence(Some("xa"), Some("back later"), 0).await;
    sync(&mut dave).await;
    sync(&mut alice).await;

    let herald = start_herald(&p, env.store(), "availability");
    world
        .wait_until("bob's and dave's changes", T, |g| {
            let after = &g[before.len()..];
            !of(after, "bob@localhost").is_empty() && !of(after, "dave@localhost").is_empty()
        })
        .await;
    world.collect_for(QUIET).await;
    let (all, dups) = dedupe(&world.got);
    if dups > 0 {
        eprintln!("restart_reports_what_changed_while_away: {dups} duplicate(s) after the restart");
    }
    assert_seq_increasing(&all);
    let after: Vec<Event> = all
        .iter()
        .filter(|e| !before.iter().any(|b| b.trace() == e.trace()))
        .cloned()
        .collect();

    let b = of(&after, "bob@localhost");
    assert_eq!(b.len(), 1, "one event for bob:{}", list(&after));
    assert_eq!(b[0].user(), "bob@localhost/desk", "{}", b[0]);
    assert_eq!(b[0].presence(), "unavailable", "{}", b[0]);
    assert_eq!(b[0].source(), "resync", "{}", b[0]);
    assert_eq!(b[0].resources(), 0, "{}", b[0]);
    let d = of(&after, "dave@localhost");
    assert_eq!(d.len(), 1, "one event for dave:{}", list(&after));
    assert_eq!(d[0].user(), "dave@localhost/tablet", "{}", d[0]);
    assert_eq!(d[0].presence(), "available", "{}", d[0]);
    assert_eq!(d[0].source(), "snapshot", "{}", d[0]);
    assert_eq!(d[0].show(), Some("xa"), "{}", d[0]);
    assert_eq!(d[0].status(), Some("back later"), "{}", d[0]);
    assert_eq!(d[0].resources(), 1, "{}", d[0]);
    assert_eq!(
        after.len(),
        2,
        "nothing for alice nor the server user, who stayed online:{}",
        list(&after)
    );
    for e in &after {
        assert!(
            e.seq() > max_before,
            "seq reused after the restart: {e} (before: up to {max_before})"
        );
    }

    // herald is live again: alice's next change is a live event.
    alice.send_unavailable().await;
    world
        .wait_until("alice unavailable after the restart", T, |g| {
            g.iter()
                .any(|e| e.bare() == "alice@localhost" && e.presence() == "unavailable")
        })
        .await;
    let last = world.got.last().unwrap().clone();
    assert_eq!(
        (last.user(), last.source(), last.resources()),
        ("alice@localhost/phone", "live", 0),
        "{last}"
    );
    assert!(last.seq() > after.iter().map(Event::seq).max().unwrap());

    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    drop(dave);
    stop_servers(vec![p]).await;
    eprintln!(
        "restart_reports_what_changed_while_away: {:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// 4. The server user receives through a herald restart
// ------------------------------------------------------------------------------------------------

/// Status changes alice makes right before each stop.
const BURST: usize = 150;
/// Stop/restart cycles.
const ROUNDS: usize = 3;

/// Events the worker reported delivered between "shutting down" and "herald stopped", per run.
fn delivered_during_shutdown(log: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut current: Option<u64> = None;
    for line in log.lines() {
        if line.contains("herald::app: shutting down") {
            current = Some(0);
        } else if line.contains("herald::app: herald stopped") {
            out.extend(current.take());
        } else if let Some(n) = current.as_mut() {
            if line.contains("delivered sink=") {
                *n += line
                    .split("events=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    out
}

/// In each round, alice sends a burst of status changes (`changes = "all"`: one event each), carol
/// logs in with a new resource, and herald is stopped as soon as the server user has seen the
/// first events of the burst (herald is then busy reading, producing and delivering the rest),
/// then restarted on the same store.
/// Whatever herald produced before it stopped must reach the server user before the restart
/// (shutdown flushes); what it had not read yet must come after the restart from Prosody's
/// snapshot (`resync` for alice's last status, `snapshot` for carol). Nothing is lost, nothing is
/// left over as a stale live event for the next run.
#[tokio::test]
async fn events_produced_before_shutdown_are_delivered() {
    let started = Instant::now();
    let p = Prosody::builder()
        .users(&[
            ("world", "pw"),
            ("alice", "pa"),
            ("carol", "pc"),
            ("dave", "pd"),
        ])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);

    let (mut herald, mut world) = start_with_world(&p, env.store(), "all").await;
    let mut alice = login(&p, "alice@localhost/phone", "pa").await;
    alice.send_presence(None, Some("start"), 0).await;
    world
        .wait_until("alice available", T, |g| {
            !of(g, "alice@localhost").is_empty()
        })
        .await;

    // Index into world.got where each round's restart happened.
    let mut restarted_at = Vec::new();
    let mut carols = Vec::new();
    let mut shutdowns = Vec::new();
    let mut probes = Vec::new();
    for round in 0..ROUNDS {
        let mut carol = login(&p, &format!("carol@localhost/r{round}"), "pc").await;
        for i in 0..BURST {
            alice
                .send_presence(None, Some(&format!("{round}-{i}")), 0)
                .await;
        }
        carol
            .send_presence(None, Some(&format!("round {round}")), 0)
            .await;
        carols.push(carol);
        // Stop while herald is in the middle of the burst: once the server user has seen a few
        // of its events (more each round).
        let seen = 1 + round * BURST / 4;
        world
            .wait_until(&format!("{seen} events of burst {round}"), T, |g| {
                g.iter()
                    .filter(|e| {
                        e.status()
                            .is_some_and(|s| s.starts_with(&format!("{round}-")))
                    })
                    .count()
                    >= seen
            })
            .await;
        let stop_requested = Instant::now();
        herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
        shutdowns.push(stop_requested.elapsed());
        // Anything in flight when run returned arrives within this.
        world.collect_for(Duration::from_millis(500)).await;
        restarted_at.push(world.got.len());

        herald = start_herald(&p, env.store(), "all");
        // Ready for the next round once a probe's presence has come through: whatever the
        // server sent before it (the snapshot) has been handled, and later presences are live.
        let probe_jid = format!("dave@localhost/probe{round}");
        let mut probe = login(&p, &probe_jid, "pd").await;
        probe.send_presence(None, None, 0).await;
        world
            .wait_until(&format!("{probe_jid}'s event"), T, |g| {
                g.iter().any(|e| e.user() == probe_jid)
            })
            .await;
        probes.push(probe);
        let last = format!("{round}-{}", BURST - 1);
        let carol_jid = format!("carol@localhost/r{round}");
        world
            .wait_until(&format!("alice's status {last} and {carol_jid}"), T, |g| {
                of(g, "alice@localhost")
                    .last()
                    .is_some_and(|e| e.status() == Some(last.as_str()))
                    && g.iter().any(|e| e.user() == carol_jid)
            })
            .await;
    }
    world.collect_for(QUIET).await;
    herald
        .stop(STOP_TIMEOUT)
        .await
        .expect("graceful shutdown after the last restart");

    let got = world.got.clone();
    let (all, dups) = dedupe(&got);
    if dups > 0 {
        eprintln!("events_produced_before_shutdown_are_delivered: {dups} duplicate(s)");
    }
    assert_seq_increasing(&all);
    // Position (in arrival order) of the first copy of each trace.
    let first_at = |e: &Event| got.iter().position(|g| g.trace() == e.trace()).unwrap();
    let mut report = Vec::new();
    for round in 0..ROUNDS {
        let prefix = format!("{round}-");
        let burst: Vec<Event> = of(&all, "alice@localhost")
            .into_iter()
            .filter(|e| e.status().is_some_and(|s| s.starts_with(&prefix)))
            .collect();
        let live: Vec<&Event> = burst.iter().filter(|e| e.source() == "live").collect();
        // Live events are a prefix of the burst, in order, with no gap: herald handles the
        // stream in order and stops reading at one point.
        for (i, e) in live.iter().enumerate() {
            assert_eq!(
                e.status(),
                Some(format!("{round}-{i}").as_str()),
                "round {round}: live events must be {round}-0, {round}-1, ... in order:{}",
                list(&burst)
            );
            assert!(
                first_at(e) < restarted_at[round],
                "round {round}: a live event produced before the shutdown was delivered only \
                 after the restart (shutdown did not flush it): {e}\nburst:{}",
                list(&burst)
            );
        }
        let rest: Vec<&Event> = burst.iter().filter(|e| e.source() != "live").collect();
        if live.len() == BURST {
            assert!(
                rest.is_empty(),
                "round {round}: herald had it all, nothing to resync:{}",
                list(&burst)
            );
        } else {
            assert_eq!(
                rest.len(),
                1,
                "round {round}: one resync for alice's last status:{}",
                list(&burst)
            );
            assert_eq!(rest[0].source(), "resync", "{}", rest[0]);
            assert_eq!(
                rest[0].status(),
                Some(format!("{round}-{}", BURST - 1).as_str()),
                "{}",
                rest[0]
            );
            assert!(first_at(rest[0]) >= restarted_at[round], "{}", rest[0]);
        }
        let carol_jid = format!("carol@localhost/r{round}");
        let c: Vec<&Event> = all.iter().filter(|e| e.user() == carol_jid).collect();
        assert_eq!(
            c.len(),
            1,
            "exactly one event for {carol_jid}:{}",
            list(&got)
        );
        assert_eq!(c[0].presence(), "available", "{}", c[0]);
        assert_eq!(c[0].status(), Some(format!("round {round}").as_str()));
        assert_eq!(c[0].resources(), round as u64 + 1, "{}", c[0]);
        match c[0].source() {
            "live" => assert!(
                first_at(c[0]) < restarted_at[round],
                "{carol_jid}'s live event was produced before the shutdown but delivered only \
                 after the restart: {}",
                c[0]
            ),
            "snapshot" => assert!(first_at(c[0]) >= restarted_at[round], "{}", c[0]),
            other => panic!("{carol_jid}'s event has source {other}: {}", c[0]),
        }
        let probe_jid = format!("dave@localhost/probe{round}");
        let pr: Vec<&Event> = all.iter().filter(|e| e.user() == probe_jid).collect();
        assert_eq!(
            pr.len(),
            1,
            "exactly one event for {probe_jid}:{}",
            list(&got)
        );
        assert_eq!(
            (pr[0].presence(), pr[0].resources()),
            ("available", round as u64 + 1),
            "{}",
            pr[0]
        );
        report.push(format!(
            "round {round}: {}/{BURST} live, carol {}, shutdown {:?}",
            live.len(),
            c[0].source(),
            shutdowns[round]
        ));
    }
    // Nothing else: alice's first event, the bursts, carols, probes, the server user's own event.
    let w = of(&all, WORLD);
    assert_eq!(
        w.len(),
        1,
        "the server user's own event only once:{}",
        list(&w)
    );
    let accounted = 1 + 1 + 2 * ROUNDS;
    let bursts = of(&all, "alice@localhost").len() - 1;
    assert_eq!(
        all.len(),
        accounted + bursts,
        "unexpected events:{}",
        list(&all)
    );

    stop_servers(vec![p]).await;
    eprintln!(
        "events_produced_before_shutdown_are_delivered: {:?}\n  {}\n  events delivered during \
         each shutdown: {:?}",
        started.elapsed(),
        report.join("\n  "),
        delivered_during_shutdown(&env.logs.text())
    );
    drop((carols, probes));
}

// ------------------------------------------------------------------------------------------------
// Server restart
// ------------------------------------------------------------------------------------------------

/// How Prosody goes down in [`server_goes_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// SIGTERM: Prosody closes every session (and forwards their unavailable) before it exits.
    Graceful,
    /// SIGKILL: nothing is forwarded; herald only sees its connection drop.
    Crash,
}

/// Prosody goes down under a running herald (world and alice online) and comes back on the same
/// ports; herald reconnects by itself. Nobody logs in again before herald has reconnected and
/// handled the server's (empty) snapshot; then the server user logs in again. alice comes back
/// (same resource, same presence) only if `alice_returns`. `snapshot`: `[presence] snapshot`.
/// Returns the events about alice received after the restart.
async fn server_goes_down(down: Down, snapshot: Option<&str>, alice_returns: bool) -> Vec<Event> {
    let mut p = Prosody::builder()
        .users(&[("world", "pw"), ("alice", "pa")])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);
    let mut presence = "changes = \"availability\"".to_owned();
    if let Some(mode) = snapshot {
        presence.push_str(&format!("\nsnapshot = \"{mode}\""));
    }

    let herald = start_herald_with(&p, env.store(), &presence);
    let mut world = login_world(&p).await;
    let mut alice = login(&p, "alice@localhost/phone", "pa").await;
    alice.send_presence(None, None, 0).await;
    world
        .wait_until("world and alice available", T, |g| {
            !of(g, "alice@localhost").is_empty() && !of(g, WORLD).is_empty()
        })
        .await;
    let max_before = world.got.iter().map(Event::seq).max().unwrap();

    if down == Down::Crash {
        let pid = p.pid().expect("prosody pid");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
    p.restart().await;
    // herald reconnects by itself (backoff from 1 s). Wait until it has, and has handled the
    // server's snapshot (one of these lines per connection), before anyone logs in again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while p
        .log()
        .matches("External component successfully authenticated")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "herald did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        env.logs.wait_for_lines(T, 2, snapshot_handled).await,
        "herald did not handle the snapshot after reconnecting within {T:?}"
    );
    assert!(herald.is_running(), "herald stopped on its own");
    drop((world, alice));

    // Events sent while the server user was offline are kept by Prosody (mod_offline) and
    // delivered when it logs in again.
    let mut world = login_world(&p).await;
    let mut alice = None;
    if alice_returns {
        let mut a = login(&p, "alice@localhost/phone", "pa").await;
        a.send_presence(None, None, 0).await;
        sync(&mut a).await;
        alice = Some(a);
    }
    let want = if alice_returns { 2 } else { 1 };
    world
        .wait_until(
            if alice_returns {
                "alice offline, then back"
            } else {
                "alice offline"
            },
            T,
            |g| of(g, "alice@localhost").len() >= want,
        )
        .await;
    world.collect_for(QUIET).await;
    let (got, dups) = dedupe(&world.got);
    if dups > 0 {
        eprintln!("{dups} duplicate(s) after the server restart");
    }
    assert_seq_increasing(&got);
    for e in &got {
        assert!(e.seq() > max_before, "{e}");
    }
    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    drop(alice);
    stop_servers(vec![p]).await;
    of(&got, "alice@localhost")
}

#[tokio::test]
async fn server_restart_reports_users_offline_then_back() {
    let started = Instant::now();
    let a = server_goes_down(Down::Graceful, None, true).await;
    assert_eq!(a.len(), 2, "{}", list(&a));
    assert_eq!(
        (a[0].user(), a[0].presence(), a[0].resources()),
        ("alice@localhost/phone", "unavailable", 0),
        "{}",
        a[0]
    );
    assert!(matches!(a[0].source(), "live" | "resync"), "{}", a[0]);
    assert_eq!(
        (
            a[1].user(),
            a[1].presence(),
            a[1].resources(),
            a[1].source()
        ),
        ("alice@localhost/phone", "available", 1, "live"),
        "{}",
        a[1]
    );
    eprintln!(
        "server_restart_reports_users_offline_then_back: {:?} (offline event: {})",
        started.elapsed(),
        a[0].source()
    );
}

/// After a server crash, users who do not come back must be reported offline (they are not in
/// the server's snapshot after herald reconnects), with the default `[presence] snapshot`.
#[tokio::test]
async fn server_crash_reports_users_offline() {
    let started = Instant::now();
    let a = server_goes_down(Down::Crash, None, false).await;
    assert_eq!(a.len(), 1, "{}", list(&a));
    assert_eq!(
        (
            a[0].user(),
            a[0].presence(),
            a[0].resources(),
            a[0].source()
        ),
        ("alice@localhost/phone", "unavailable", 0, "resync"),
        "{}",
        a[0]
    );
    eprintln!(
        "server_crash_reports_users_offline: {:?}",
        started.elapsed()
    );
}

/// The same with `snapshot = "always"` (Prosody).
#[tokio::test]
async fn server_crash_reports_users_offline_snapshot_always() {
    let started = Instant::now();
    let a = server_goes_down(Down::Crash, Some("always"), false).await;
    assert_eq!(a.len(), 1, "{}", list(&a));
    assert_eq!(
        (
            a[0].user(),
            a[0].presence(),
            a[0].resources(),
            a[0].source()
        ),
        ("alice@localhost/phone", "unavailable", 0, "resync"),
        "{}",
        a[0]
    );
    eprintln!(
        "server_crash_reports_users_offline_snapshot_always: {:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// 5. Missing presence permission
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_presence_permission_is_reported_and_not_fatal() {
    let started = Instant::now();
    let p = Prosody::builder()
        .users(&[("world", "pw"), ("alice", "pa")])
        .privileges(&[("roster", "both")])
        .start()
        .await;
    let env = TestEnv::new(&[&p.log_path]);

    let herald = start_herald(&p, env.store(), "availability");
    let line = wait_for_missing_presence_error(&env.logs).await;
    assert!(line.contains(COMPONENT), "names the component: {line}");

    let mut world = login_world(&p).await;
    let mut alice = login(&p, "alice@localhost/phone", "pa").await;
    alice
        .send_presence(None, Some("invisible to herald"), 0)
        .await;
    sync(&mut alice).await;
    world.collect_for(Duration::from_secs(2)).await;
    assert!(
        world.got.is_empty(),
        "no event expected:{}",
        list(&world.got)
    );

    assert!(herald.is_running(), "herald stopped on its own");
    assert_eq!(
        p.log()
            .matches("External component successfully authenticated")
            .count(),
        1,
        "herald connected once and stayed connected"
    );
    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    stop_servers(vec![p]).await;
    eprintln!(
        "missing_presence_permission_is_reported_and_not_fatal: {:?}",
        started.elapsed()
    );
}

/// A server that does not forward presence sends no snapshot either: a herald restarting against
/// it learns nothing, so it must not declare the users it knew offline. `snapshot`: the
/// `[presence] snapshot` setting (`None`: the default).
async fn restart_without_presence_permission(snapshot: Option<&str>) {
    let (full, narrow) = tokio::join!(
        Prosody::builder()
            .users(&[("world", "pw"), ("alice", "pa")])
            .start(),
        Prosody::builder()
            .users(&[("world", "pw"), ("alice", "pa")])
            .privileges(&[("roster", "both")])
            .start()
    );
    let env = TestEnv::new(&[&full.log_path, &narrow.log_path]);
    let mut presence = "changes = \"availability\"".to_owned();
    if let Some(mode) = snapshot {
        presence.push_str(&format!("\nsnapshot = \"{mode}\""));
    }

    // First run, with presence permission: world and alice are online, herald knows it.
    let herald = start_herald_with(&full, env.store(), &presence);
    let mut world = login_world(&full).await;
    let mut alice = login(&full, "alice@localhost/phone", "pa").await;
    alice.send_presence(None, None, 0).await;
    world
        .wait_until("world and alice available", T, |g| {
            !of(g, "alice@localhost").is_empty() && !of(g, WORLD).is_empty()
        })
        .await;
    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");

    // Second run, same store, against a server that grants no presence permission (think: the
    // same server, whose operator dropped the permission by mistake). Both are online there too.
    let mut world2 = login_world(&narrow).await;
    let mut alice2 = login(&narrow, "alice@localhost/phone", "pa").await;
    alice2.send_presence(None, None, 0).await;
    sync(&mut alice2).await;
    let herald = start_herald_with(&narrow, env.store(), &presence);
    wait_for_missing_presence_error(&env.logs).await;
    world2.collect_for(Duration::from_secs(2)).await;
    assert!(
        world2.got.is_empty(),
        "herald saw no presence at all (the server did not grant it), yet announced:{}",
        list(&world2.got)
    );
    herald.stop(STOP_TIMEOUT).await.expect("graceful shutdown");
    drop((alice, alice2));
    stop_servers(vec![full, narrow]).await;
}

#[tokio::test]
async fn missing_presence_permission_does_not_declare_known_users_offline() {
    let started = Instant::now();
    restart_without_presence_permission(None).await;
    eprintln!(
        "missing_presence_permission_does_not_declare_known_users_offline: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn missing_presence_permission_does_not_declare_known_users_offline_snapshot_always() {
    let started = Instant::now();
    restart_without_presence_permission(Some("always")).await;
    eprintln!(
        "missing_presence_permission_does_not_declare_known_users_offline_snapshot_always: {:?}",
        started.elapsed()
    );
}
