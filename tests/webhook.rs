//! Webhook delivery semantics, end to end: herald's public [`herald::app::run`] in-process, fed
//! forwarded presences by the fake XEP-0114 server (`support/fake_server.rs`), delivering to the
//! scriptable HTTP endpoint of `support/webhook_receiver.rs`.
//!
//! The contract under test is DESIGN.md "Presence events" (webhook sink): a `POST` with
//! `Content-Type: application/json`, a JSON array of events in `seq` order, a batch id header
//! (`X-Herald-Batch`) stable across retries, `X-Herald-Signature` when a secret is set; 2xx =
//! delivered, 408/429/5xx-but-501 = retry (429 honours `Retry-After`), other answers = dead letter
//! (kept, listed by `herald dead-letters list`); a bounded backlog; one sink never slows another.
//!
//! Timers are small (retry 100–400 ms, timeout 500 ms, store flush 10 ms) so the file runs in a
//! few seconds; waits are for events, with a timeout that only bounds a failing test.
//! `HERALD_TEST_LOG=herald=debug` shows herald's logs.

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fake_server::{escape, Conn, FakeServer, Script};
use herald_support::{
    event_json, is_event_message, seq, transitions, user_presence, Config, Herald, Logs, JID,
    SECRET,
};
use serde_json::Value;
use webhook_receiver::{Answer, Reply, Request, WebhookReceiver};

/// Name of the webhook sink (its queue and dead letters in the store).
const HOOK: &str = "hook";

/// Long enough for anything herald does on loopback; only a failing test waits this long.
const EVENTUALLY: Duration = Duration::from_secs(5);
/// How long "nothing more comes" is watched for (longer than `retry_max`).
const QUIET: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// One test's world: the fake XMPP server, the webhook endpoint and a store directory.
struct Setup {
    server: FakeServer,
    receiver: WebhookReceiver,
    dir: tempfile::TempDir,
    /// `[[sinks.webhook]]` keys (raw TOML values) beyond `url` and `name`.
    hook: BTreeMap<&'static str, String>,
    /// Whether an `[[sinks.xmpp]]` (server user `world@localhost`) is configured too. On by
    /// default: herald closes its XMPP stream right after login when no XMPP sink holds an
    /// `XmppHandle` (see `a_webhook_only_herald_stays_connected_and_delivers`), so without one
    /// no presence would ever reach the webhook and every other test here would only re-detect
    /// that one bug.
    xmpp_sink: bool,
}

impl Setup {
    async fn new() -> Setup {
        let server = FakeServer::start(SECRET).await;
        server.script_default(Script::accept().advertise());
        let hook = BTreeMap::from([
            ("retry_min", "\"100ms\"".to_owned()),
            ("retry_max", "\"400ms\"".to_owned()),
            ("timeout", "\"500ms\"".to_owned()),
        ]);
        Setup {
            server,
            receiver: WebhookReceiver::start().await,
            dir: tempfile::tempdir().expect("tempdir"),
            hook,
            xmpp_sink: true,
        }
    }

    /// Sets (or replaces) a `[[sinks.webhook]]` key; `value` is TOML.
    fn hook(mut self, key: &'static str, value: &str) -> Setup {
        self.hook.insert(key, value.to_owned());
        self
    }

    fn without_xmpp_sink(mut self) -> Setup {
        self.xmpp_sink = false;
        self
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("component.toml")
    }

    /// The configuration, also written to `component.toml` (for the `herald` command line).
    fn config(&self) -> Config {
        let mut hook = format!(
            "name = \"{HOOK}\"\nurl = \"{}\"\n",
            self.receiver.url("/hook")
        );
        for (k, v) in &self.hook {
            hook.push_str(&format!("{k} = {v}\n"));
        }
        // No snapshot: the fake server sends none, and a restart must stay quiet (only the
        // outbox is delivered), so every event a test sees is one it caused.
        let mut config = Config::new(JID, SECRET, self.server.addr, &self.store())
            .fast_reconnect()
            .presence("snapshot = \"never\"")
            .webhook(&hook);
        if self.xmpp_sink {
            config = config.xmpp_sink();
        }
        std::fs::write(self.config_path(), config.toml()).expect("write component.toml");
        config
    }

    /// Starts herald in-process and returns it with its (logged-in) connection.
    async fn start(&mut self) -> (Herald, Conn) {
        let herald = Herald::start_with_test_log(self.config().settings());
        let conn = self
            .server
            .next_connection(EVENTUALLY)
            .await
            .expect("herald logs in to the fake server");
        (herald, conn)
    }

    /// `herald --config component.toml dead-letters ARGS…` (herald must be stopped).
    async fn dead_letters(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--config")
            .arg(self.config_path())
            .arg("dead-letters")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .await
            .expect("run herald dead-letters");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "herald dead-letters {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// A forwarded available presence of `user` (a full JID) with optional show/status/priority.
fn available(user: &str) -> String {
    format!("<presence from='{}' to='{JID}'/>", escape(user))
}

fn unavailable(user: &str) -> String {
    format!(
        "<presence type='unavailable' from='{}' to='{JID}'/>",
        escape(user)
    )
}

fn presence_xml((user, presence): &(String, &str)) -> String {
    match *presence {
        "available" => available(user),
        _ => unavailable(user),
    }
}

fn expected_pairs(sent: &[(String, &str)]) -> Vec<(String, String)> {
    sent.iter()
        .map(|(u, p)| (u.clone(), (*p).to_owned()))
        .collect()
}

/// Asserts the DESIGN.md event shape (fields, types, formats) of one event from a webhook body.
fn assert_event_shape(e: &Value) {
    let obj = e
        .as_object()
        .unwrap_or_else(|| panic!("event is not an object: {e}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["args", "at", "seq", "source", "trace", "type"],
        "event fields: {e}"
    );
    assert!(
        e["trace"].as_str().is_some_and(|t| !t.is_empty()),
        "trace: {e}"
    );
    assert_eq!(e["type"], "PRESENCE_DID_CHANGE", "{e}");
    assert!(e["seq"].as_u64().is_some_and(|s| s > 0), "seq: {e}");
    let at = e["at"].as_str().unwrap_or_default();
    assert!(
        at.len() == 24 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
        "at {at:?}: {e}"
    );
    assert!(
        matches!(
            e["source"].as_str(),
            Some("live" | "snapshot" | "resync" | "liveness")
        ),
        "source: {e}"
    );
    let args = e["args"].as_object().unwrap_or_else(|| panic!("args: {e}"));
    for k in args.keys() {
        assert!(
            matches!(
                k.as_str(),
                "user" | "presence" | "show" | "status" | "priority" | "resources"
            ),
            "unexpected args.{k}: {e}"
        );
    }
    assert!(
        args["user"].as_str().is_some_and(|u| u.contains('@')),
        "{e}"
    );
    assert!(
        matches!(args["presence"].as_str(), Some("available" | "unavailable")),
        "{e}"
    );
    assert!(args["priority"].is_i64(), "{e}");
    assert!(args["resources"].is_u64(), "{e}");
    for k in ["show", "status"] {
        if let Some(v) = args.get(k) {
            assert!(
                v.is_string(),
                "args.{k} is omitted when absent, never null: {e}"
            );
        }
    }
}

/// Asserts what holds for every request herald sends.
fn assert_request_shape(r: &Request) {
    assert_eq!(r.method, "POST", "request #{}", r.index);
    assert_eq!(r.path, "/hook", "request #{}", r.index);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "request #{} headers {:?}",
        r.index,
        r.headers
    );
    assert!(
        r.batch_id().is_some_and(|b| !b.is_empty()),
        "request #{} has no X-Herald-Batch: {:?}",
        r.index,
        r.headers
    );
    assert!(
        r.header("user-agent")
            .is_some_and(|ua| ua.starts_with("herald/")),
        "request #{} user agent {:?}",
        r.index,
        r.header("user-agent")
    );
    let events = r.events();
    assert!(
        !events.is_empty(),
        "request #{} has an empty batch",
        r.index
    );
    for e in &events {
        assert_event_shape(e);
    }
    let seqs = r.seqs();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "request #{}: body not in seq order: {seqs:?}",
        r.index
    );
}

fn describe(reqs: &[Request]) -> String {
    let mut out = String::new();
    for r in reqs {
        let seqs = std::panic::catch_unwind(|| r.seqs()).unwrap_or_default();
        out.push_str(&format!(
            "\n  #{} conn {} {:?} batch {:?} seqs {:?}",
            r.index,
            r.conn,
            r.answer,
            r.batch_id(),
            seqs
        ));
    }
    if out.is_empty() {
        out.push_str(" (none)");
    }
    out
}

/// Receives `n` event messages from herald's XMPP sink on `conn`.
async fn xmpp_events(conn: &mut Conn, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.recv_matching(is_event_message, left).await {
            Some(msg) => got.push(event_json(&msg)),
            None => panic!(
                "the XMPP sink delivered {} of {n} events within {timeout:?}",
                got.len()
            ),
        }
    }
    got
}

/// Seqs of the accepted events, in delivery order.
fn accepted_seqs(receiver: &WebhookReceiver) -> Vec<u64> {
    receiver.accepted_events().iter().map(seq).collect()
}

/// Dead letters as listed by the CLI: `(seq, reason)` of the lines `  seq N at TIME: REASON`.
fn listed_dead_letters(listing: &str) -> Vec<(u64, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("  seq ")?;
            let (seq, rest) = rest.split_once(" at ")?;
            let (_, reason) = rest.split_once(": ")?;
            Some((seq.parse().ok()?, reason.to_owned()))
        })
        .collect()
}

/// The value of `name=` in a log line (up to the next space), if it is there.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()
}

/// `(batch, reason)` of every failed delivery to the webhook sink herald logged so far.
fn failed_deliveries(logs: &Logs) -> Vec<(String, String)> {
    logs.text()
        .lines()
        .filter(|l| {
            l.contains("delivery failed; will retry")
                && l.contains(&format!("sink=webhook {HOOK} "))
        })
        .map(|l| {
            let batch = log_field(l, "batch").unwrap_or_default().to_owned();
            let reason = l.split_once(" reason=").map_or("", |(_, r)| r).to_owned();
            (batch, reason)
        })
        .collect()
}

/// Attempts refused at connection time (nothing listening), among `failed`.
fn refused(failed: &[(String, String)]) -> usize {
    failed
        .iter()
        .filter(|(_, reason)| reason.starts_with("connection failed"))
        .count()
}

/// `(events, first_seq, last_seq)` of every backlog trim of the webhook sink herald logged.
fn backlog_trims(logs: &Logs) -> Vec<(usize, u64, u64)> {
    logs.text()
        .lines()
        .filter(|l| {
            l.contains("backlog over max_backlog") && l.contains(&format!("sink=webhook {HOOK} "))
        })
        .map(|l| {
            let number = |name| {
                log_field(l, name)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no numeric {name} in {l:?}"))
            };
            (
                number("events") as usize,
                number("first_seq"),
                number("last_seq"),
            )
        })
        .collect()
}

/// Waits until `cond` holds on herald's log; false after `timeout`.
async fn wait_for_log(logs: &Logs, timeout: Duration, cond: impl Fn(&Logs) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond(logs) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// 1. Retry on 5xx: same batch, same id, delivered once
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_are_retried_with_the_same_batch_id_and_delivered_once() {
    let mut s = Setup::new()
        .await
        .hook("batch_max", "3")
        // The first event wakes the worker; let the other two join its batch.
        .hook("batch_delay", "\"300ms\"");
    s.receiver.script_all([
        Reply::status(500).body("database is down"),
        Reply::status(500),
    ]);
    let (herald, conn) = s.start().await;

    conn.send_raw(&format!(
        "<presence from='alice@localhost/phone' to='{JID}'><show>away</show><status>brb</status>\
         <priority>5</priority></presence>{}{}",
        available("alice@localhost/laptop"),
        unavailable("alice@localhost/phone"),
    ))
    .await;
    assert!(
        s.receiver
            .wait_for(EVENTUALLY, |r| r.iter().any(Request::accepted))
            .await,
        "no attempt was accepted:{}",
        describe(&s.receiver.requests())
    );
    s.receiver.wait_quiet(QUIET).await;
    let reqs = s.receiver.requests();
    let answers: Vec<Answer> = reqs.iter().map(|r| r.answer).collect();
    assert_eq!(
        answers,
        [
            Answer::Status(500),
            Answer::Status(500),
            Answer::Status(200)
        ],
        "two retries, then delivered once:{}",
        describe(&reqs)
    );
    for r in &reqs {
        assert_request_shape(r);
    }
    let id = reqs[0].batch_id().unwrap();
    for r in &reqs[1..] {
        assert_eq!(
            r.batch_id(),
            Some(id),
            "the batch id changed across retries"
        );
        assert_eq!(r.body, reqs[0].body, "a retry sends the same batch");
    }
    // Backoff: retry_min 100 ms, equal jitter ⇒ ≥ 50 ms, then ≥ 100 ms.
    let gap1 = reqs[1].at - reqs[0].at;
    let gap2 = reqs[2].at - reqs[1].at;
    assert!(
        gap1 >= Duration::from_millis(45),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(95),
        "second retry after {gap2:?}"
    );

    let events = reqs[2].events();
    assert_eq!(events.len(), 3, "one batch of the three events");
    let seqs = reqs[2].seqs();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive seqs: {seqs:?}"
    );
    let (phone, laptop, gone) = (&events[0], &events[1], &events[2]);
    assert_eq!(phone["args"]["user"], "alice@localhost/phone");
    assert_eq!(phone["args"]["presence"], "available");
    assert_eq!(phone["args"]["show"], "away");
    assert_eq!(phone["args"]["status"], "brb");
    assert_eq!(phone["args"]["priority"], 5);
    assert_eq!(phone["args"]["resources"], 1);
    assert_eq!(laptop["args"]["user"], "alice@localhost/laptop");
    assert_eq!(laptop["args"]["presence"], "available");
    assert_eq!(laptop["args"]["resources"], 2);
    assert!(laptop["args"].get("show").is_none(), "{laptop}");
    assert!(laptop["args"].get("status").is_none(), "{laptop}");
    assert_eq!(gone["args"]["user"], "alice@localhost/phone");
    assert_eq!(gone["args"]["presence"], "unavailable");
    assert_eq!(gone["args"]["resources"], 1);
    for e in &events {
        assert_eq!(e["source"], "live", "{e}");
    }
    let traces: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["trace"].as_str()).collect();
    assert_eq!(traces.len(), 3, "distinct traces");

    // The next event is a new batch (new id), right after the delivered one.
    conn.send_raw(&available("bob@localhost/pc")).await;
    assert!(
        s.receiver.wait_for(EVENTUALLY, |r| r.len() >= 4).await,
        "the next event was not sent"
    );
    let next = &s.receiver.requests()[3];
    assert_request_shape(next);
    assert_ne!(next.batch_id(), Some(id), "a new batch has a new id");
    assert_eq!(next.seqs(), [seqs[2] + 1]);
    herald.stop_ok(EVENTUALLY).await;
}

// ---------------------------------------------------------------------------------------------
// 2. 429 + Retry-After
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let mut s = Setup::new().await;
    s.receiver
        .script(Reply::status(429).header("Retry-After", "1"));
    let (herald, conn) = s.start().await;

    conn.send_raw(&available("alice@localhost/phone")).await;
    assert!(
        s.receiver
            .wait_for(Duration::from_secs(4), |r| r.iter().any(Request::accepted))
            .await,
        "not delivered after the 429:{}",
        describe(&s.receiver.requests())
    );
    let reqs = s.receiver.requests();
    assert_eq!(reqs.len(), 2, "{}", describe(&reqs));
    assert_eq!(reqs[0].answer, Answer::Status(429));
    assert_eq!(reqs[0].batch_id(), reqs[1].batch_id());
    let gap = reqs[1].at - reqs[0].at;
    // Retry-After: 1 replaces the 100 ms backoff.
    assert!(
        gap >= Duration::from_millis(950),
        "retried {gap:?} after a 429 with Retry-After: 1"
    );
    assert!(
        gap < Duration::from_millis(2500),
        "retried only after {gap:?}"
    );
    herald.stop_ok(EVENTUALLY).await;
}

// ---------------------------------------------------------------------------------------------
// 3. 400: dead letter, listed, requeued, delivered after a restart
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_request_is_a_dead_letter_that_can_be_requeued() {
    let mut s = Setup::new().await;
    s.receiver
        .script(Reply::status(400).body("{\"error\":\"unknown field\"}"));
    let (herald, conn) = s.start().await;

    conn.send_raw(&available("alice@localhost/phone")).await;
    assert!(
        s.receiver.wait_for(EVENTUALLY, |r| !r.is_empty()).await,
        "no request"
    );
    let refused = s.receiver.requests()[0].clone();
    assert_eq!(refused.answer, Answer::Status(400));
    let refused_event = refused.events().remove(0);
    let dead_seq = seq(&refused_event);

    conn.send_raw(&format!(
        "{}{}",
        available("bob@localhost/pc"),
        unavailable("alice@localhost/phone")
    ))
    .await;
    assert!(
        s.receiver.wait_for_accepted_seqs(2, EVENTUALLY).await,
        "later events were not delivered after a dead letter:{}",
        describe(&s.receiver.requests())
    );
    s.receiver.wait_quiet(QUIET).await;
    let reqs = s.receiver.requests();
    for r in &reqs {
        assert_request_shape(r);
    }
    assert!(
        reqs[1..].iter().all(|r| !r.seqs().contains(&dead_seq)),
        "the refused batch was retried:{}",
        describe(&reqs)
    );
    let later = accepted_seqs(&s.receiver);
    assert_eq!(later, [dead_seq + 1, dead_seq + 2], "{}", describe(&reqs));
    herald.stop_ok(EVENTUALLY).await;

    // Listed by the command line, with the answer that killed it.
    let listing = s.dead_letters(&["list"]).await;
    assert!(
        listing.contains(&format!("sink {HOOK}: 0 queued, 1 dead letters")),
        "{listing}"
    );
    let letters = listed_dead_letters(&listing);
    assert_eq!(letters.len(), 1, "{listing}");
    assert_eq!(letters[0].0, dead_seq, "{listing}");
    assert!(letters[0].1.contains("400"), "reason: {listing}");
    assert!(
        letters[0].1.contains("unknown field"),
        "the reason quotes the endpoint's answer: {listing}"
    );
    assert!(
        listing.contains(refused_event["trace"].as_str().unwrap()),
        "the listing shows the event: {listing}"
    );

    let requeued = s.dead_letters(&["requeue", &dead_seq.to_string()]).await;
    assert!(
        requeued.contains(&format!("sink {HOOK}: 1 dead letters queued again")),
        "{requeued}"
    );
    let listing = s.dead_letters(&["list"]).await;
    assert!(
        listing.contains(&format!("sink {HOOK}: 1 queued, 0 dead letters")),
        "{listing}"
    );

    // The next start delivers it, unchanged (same trace, seq, args).
    let before = s.receiver.request_count();
    let (herald, _conn) = s.start().await;
    assert!(
        s.receiver
            .wait_for(EVENTUALLY, |r| r[before..].iter().any(Request::accepted))
            .await,
        "the requeued event was not delivered after the restart:{}",
        describe(&s.receiver.requests())
    );
    s.receiver.wait_quiet(QUIET).await;
    let reqs = s.receiver.requests();
    let after: Vec<&Request> = reqs[before..].iter().collect();
    assert_eq!(after.len(), 1, "{}", describe(&reqs));
    assert_request_shape(after[0]);
    assert_eq!(after[0].events(), vec![refused_event]);
    herald.stop_ok(EVENTUALLY).await;
    let listing = s.dead_letters(&["list"]).await;
    assert!(
        listing.contains(&format!("sink {HOOK}: 0 queued, 0 dead letters")),
        "{listing}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_endpoint_that_hangs_once_is_retried_after_the_timeout() {
    let mut s = Setup::new().await;
    s.receiver.script(Reply::Hang);
    let (herald, conn) = s.start().await;

    conn.send_raw(&available("alice@localhost/phone")).await;
    assert!(
        s.receiver
            .wait_for(EVENTUALLY, |r| r.iter().any(Request::accepted))
            .await,
        "not delivered after a timeout:{}",
        describe(&s.receiver.requests())
    );
    s.receiver.wait_quiet(QUIET).await;
    let reqs = s.receiver.requests();
    assert_eq!(
        reqs.iter().map(|r| r.answer).collect::<Vec<_>>(),
        [Answer::Hang, Answer::Status(200)],
        "{}",
        describe(&reqs)
    );
    assert_eq!(reqs[0].batch_id(), reqs[1].batch_id());
    assert_eq!(reqs[0].body, reqs[1].body);
    let gap = reqs[1].at - reqs[0].at;
    // The 500 ms timeout, then at least half of retry_min.
    assert!(
        gap >= Duration::from_millis(540),
        "retried {gap:?} after a request that never got an answer (timeout 500ms)"
    );
    assert!(gap < Duration::from_secs(2), "retried only after {gap:?}");
    herald.stop_ok(EVENTUALLY).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Connection refused for a while
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_endpoint_down_for_a_while_gets_everything_in_order_exactly_once() {
    const N: usize = 50;
    /// Refused attempts to wait for while down: with retry 100–400 ms, about a second.
    const REFUSALS: usize = 4;
    let logs = Logs::default();
    let _log_guard = logs.install();
    let mut s = Setup::new().await;
    let (herald, conn) = s.start().await;

    // One delivery first, so herald holds a pooled keep-alive connection that going down breaks.
    let warmup = ("warm@localhost/up".to_owned(), "available");
    conn.send_raw(&presence_xml(&warmup)).await;
    assert!(
        s.receiver.wait_for_accepted_seqs(1, EVENTUALLY).await,
        "warm-up event not delivered"
    );
    let warm_seq = accepted_seqs(&s.receiver)[0];

    s.receiver.go_down().await;
    let down_at = s.receiver.request_count();
    let failed_before = failed_deliveries(&logs).len();
    let sent = transitions(N, 10, "u");
    for t in &sent {
        conn.send_raw(&presence_xml(t)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // herald keeps trying while nothing listens: wait for its attempts to be refused a few times.
    assert!(
        wait_for_log(&logs, EVENTUALLY, |logs| {
            refused(&failed_deliveries(logs)[failed_before..]) >= REFUSALS
        })
        .await,
        "herald did not retry an endpoint refusing connections {REFUSALS} times; failed attempts: \
         {:?}",
        &failed_deliveries(&logs)[failed_before..]
    );
    s.receiver.come_up().await;
    let up_at = Instant::now();
    // Every attempt while down was for one batch, the oldest undelivered event first: the
    // batch is kept, with its id, until the endpoint takes it.
    let failed = failed_deliveries(&logs)[failed_before..].to_vec();
    let retried: std::collections::BTreeSet<&str> =
        failed.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        retried.len(),
        1,
        "the batch changed between attempts while the endpoint was down: {failed:?}"
    );

    assert!(
        s.receiver.wait_for_accepted_seqs(N + 1, EVENTUALLY).await,
        "not everything was delivered after the endpoint came back:{}",
        describe(&s.receiver.requests())
    );
    let first_after = s.receiver.requests()[down_at].clone();
    assert!(
        first_after.at.saturating_duration_since(up_at) < Duration::from_secs(1),
        "first attempt {:?} after the endpoint came back (retry_max 400ms)",
        first_after.at.saturating_duration_since(up_at)
    );
    assert_eq!(
        first_after.batch_id(),
        retried.first().copied(),
        "the first request after the endpoint came back is not the batch herald was retrying"
    );
    assert_eq!(
        first_after.seqs().first(),
        Some(&(warm_seq + 1)),
        "the batch retried while down starts with the first event sent while down"
    );
    s.receiver.wait_quiet(QUIET).await;
    let reqs = s.receiver.requests();
    for r in &reqs {
        assert_request_shape(r);
    }
    let events = s.receiver.accepted_events();
    let seqs: Vec<u64> = events.iter().map(seq).collect();
    assert_eq!(
        seqs.len(),
        N + 1,
        "each event exactly once:{}",
        describe(&reqs)
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in seq order, no gap, no duplicate: {seqs:?}"
    );
    let mut want = expected_pairs(std::slice::from_ref(&warmup));
    want.extend(expected_pairs(&sent));
    let got: Vec<(String, String)> = events.iter().map(user_presence).collect();
    assert_eq!(got, want, "the events, in the order they happened");
    herald.stop_ok(EVENTUALLY).await;
}

// ---------------------------------------------------------------------------------------------
// 6. HMAC signature and configured headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn requests_are_signed_and_carry_the_configured_headers() {
    const KEY: &str = "0b7c-hook-key";
    let mut s = Setup::new()
        .await
        .hook("secret", &format!("\"{KEY}\""))
        .hook("headers", "{ Authorization = \"Bearer t\" }");
    // The receiver checks every signature itself and answers 401 to a bad one.
    s.receiver.set_secret(KEY.as_bytes());
    s.receiver.script(Reply::status(503));
    let (herald, conn) = s.start().await;

    let sent = transitions(6, 3, "signed");
    for t in &sent {
        conn.send_raw(&presence_xml(t)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        s.receiver
            .wait_for_accepted_seqs(sent.len(), EVENTUALLY)
            .await,
        "not delivered:{}",
        describe(&s.receiver.requests())
    );
    let reqs = s.receiver.requests();
    assert!(reqs.len() >= 2, "{}", describe(&reqs));
    for r in &reqs {
        assert_request_shape(r);
        assert_eq!(
            r.signature_valid,
            Some(true),
            "request #{} signature {:?} does not match its body",
            r.index,
            r.header("x-herald-signature")
        );
        assert!(r.signature_ok(KEY.as_bytes()));
        assert!(!r.signature_ok(b"another key"), "the key matters");
        assert_eq!(
            r.header("authorization"),
            Some("Bearer t"),
            "request #{}",
            r.index
        );
        assert_ne!(r.answer, Answer::Status(401));
    }
    let got: Vec<(String, String)> = s
        .receiver
        .accepted_events()
        .iter()
        .map(user_presence)
        .collect();
    assert_eq!(got, expected_pairs(&sent));
    herald.stop_ok(EVENTUALLY).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Bounded backlog
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_backlog_over_max_backlog_dead_letters_the_oldest_and_spares_other_sinks() {
    const N: usize = 30;
    let logs = Logs::default();
    let _log_guard = logs.install();
    let mut s = Setup::new().await.hook("max_backlog", "10");
    s.receiver.go_down().await;
    let (herald, mut conn) = s.start().await;

    let sent = transitions(N, 7, "b");
    let burst: String = sent.iter().map(presence_xml).collect();
    conn.send_raw(&burst).await;

    // The other sink gets everything, at once.
    let xmpp = xmpp_events(&mut conn, N, EVENTUALLY).await;
    let got: Vec<(String, String)> = xmpp.iter().map(user_presence).collect();
    assert_eq!(got, expected_pairs(&sent), "the XMPP sink's events");
    let all: Vec<u64> = xmpp.iter().map(seq).collect();
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");

    // While the endpoint is down, herald tries it, is refused, and trims the backlog to the 10
    // newest: the 20 oldest go to the dead letters then, not once the endpoint is back.
    let trimmed = |logs: &Logs| backlog_trims(logs).iter().map(|t| t.0).sum::<usize>();
    assert!(
        wait_for_log(&logs, EVENTUALLY, |logs| trimmed(logs) >= N - 10).await,
        "herald did not trim the backlog to max_backlog while the endpoint was down: trims \
         {:?}, failed attempts {:?}",
        backlog_trims(&logs),
        failed_deliveries(&logs)
    );
    let trims = backlog_trims(&logs);
    assert_eq!(trimmed(&logs), N - 10, "trims {trims:?}");
    assert_eq!(
        (trims[0].1, trims[trims.len() - 1].2),
        (all[0], all[N - 11]),
        "the trims took the oldest events, in order: {trims:?}"
    );
    assert!(
        wait_for_log(&logs, EVENTUALLY, |logs| refused(&failed_deliveries(logs))
            >= 1)
        .await,
        "herald never tried the endpoint while it was down: {:?}",
        failed_deliveries(&logs)
    );
    s.receiver.come_up().await;
    assert!(
        s.receiver.wait_for_accepted_seqs(10, EVENTUALLY).await,
        "the newest events were not delivered:{}",
        describe(&s.receiver.requests())
    );
    s.receiver.wait_quiet(QUIET).await;
    let reqs = s.receiver.requests();
    for r in &reqs {
        assert_request_shape(r);
    }
    assert_eq!(
        accepted_seqs(&s.receiver),
        all[N - 10..],
        "exactly the 10 newest, once, in order:{}",
        describe(&reqs)
    );
    let delivered = s.receiver.accepted_events();
    assert_eq!(
        delivered,
        xmpp[N - 10..],
        "the same events as the XMPP sink's"
    );
    herald.stop_ok(EVENTUALLY).await;

    let listing = s.dead_letters(&["list"]).await;
    assert!(
        listing.contains(&format!("sink {HOOK}: 0 queued, 20 dead letters")),
        "{listing}"
    );
    assert!(
        listing.contains("sink xmpp:world@localhost: 0 queued, 0 dead letters"),
        "{listing}"
    );
    let letters = listed_dead_letters(&listing);
    assert_eq!(
        letters.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        all[..N - 10],
        "the 20 oldest are the dead letters: {listing}"
    );
    for (_, reason) in &letters {
        assert!(reason.contains("max_backlog"), "reason {reason:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. A hanging endpoint does not slow anything else
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hanging_endpoint_never_slows_the_other_sinks() {
    const N: usize = 40;
    let mut s = Setup::new().await.hook("timeout", "\"2s\"");
    s.receiver.set_default(Reply::Hang);
    let (herald, mut conn) = s.start().await;

    let sent = transitions(N, 8, "h");
    let mut worst = Duration::ZERO;
    for (i, t) in sent.iter().enumerate() {
        let at = Instant::now();
        conn.send_raw(&presence_xml(t)).await;
        let got = xmpp_events(&mut conn, 1, Duration::from_secs(1)).await;
        let took = at.elapsed();
        worst = worst.max(took);
        assert_eq!(user_presence(&got[0]), expected_pairs(&sent[i..=i])[0]);
        if i % 8 == 0 {
            // A burst between the single events: the hanging sink's backlog keeps growing.
            let burst = transitions(16, 16, &format!("burst{i}-"));
            conn.send_raw(&burst.iter().map(presence_xml).collect::<String>())
                .await;
            xmpp_events(&mut conn, burst.len(), Duration::from_secs(1)).await;
        }
    }
    eprintln!("worst XMPP latency with a hanging webhook: {worst:?}");
    let reqs = s.receiver.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r.answer == Answer::Hang),
        "the webhook endpoint was tried and hung:{}",
        describe(&reqs)
    );
    let stop_at = Instant::now();
    herald.stop_ok(EVENTUALLY).await;
    eprintln!(
        "stopped {:?} after the signal with a hanging webhook",
        stop_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 9. A webhook is enough: no XMPP sink needed
// ---------------------------------------------------------------------------------------------

/// DESIGN.md's sinks are independent: a deployment with only `[[sinks.webhook]]` must stay
/// connected to the server and deliver every presence change to the webhook.
#[tokio::test]
async fn a_webhook_only_herald_stays_connected_and_delivers() {
    let mut s = Setup::new().await.without_xmpp_sink();
    let (herald, mut conn) = s.start().await;

    conn.send_raw(&available("alice@localhost/phone")).await;
    let delivered = s.receiver.wait_for_accepted_seqs(1, EVENTUALLY).await;
    let closed = conn.closed(Duration::ZERO).await || conn.ended();
    assert!(
        herald.is_running() && !closed,
        "herald (webhook sink only) closed its XMPP stream / stopped right after login \
         (app::run finished: {}, stream closed: {closed}); nothing can reach the webhook",
        !herald.is_running()
    );
    assert!(
        delivered,
        "a presence was not delivered to the only sink, a webhook:{}",
        describe(&s.receiver.requests())
    );
    let events = s.receiver.accepted_events();
    assert_eq!(user_presence(&events[0]).0, "alice@localhost/phone");
    herald.stop_ok(EVENTUALLY).await;
}
