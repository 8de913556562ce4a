//! Crash safety of the webhook outbox with the real binary: `herald --config FILE` is killed with
//! SIGKILL (`std::process::Child::kill`) and restarted on the same store.
//!
//! The XMPP side is the fake XEP-0114 server (`support/fake_server.rs`), the endpoint the
//! scriptable receiver (`support/webhook_receiver.rs`). What must hold (DESIGN.md "Presence
//! events": "Events are persisted in the outbox before delivery and deleted only when
//! acknowledged; a restart resumes where it stopped"):
//!
//! - after a kill, every event herald had persisted is delivered at least once;
//! - deliveries stay in `seq` order; a `seq` is delivered twice only if a batch holding it was
//!   already attempted before the kill (its acknowledgement may have been lost with the process);
//! - nothing else is invented: the events after the restart are exactly the persisted ones.
//!
//! The config uses `[presence] snapshot = "never"`. A snapshot after the restart would make herald
//! (correctly) compare it with its persisted presence table and emit `resync`/`snapshot` events
//! with new `seq`s for whatever differs; with the fake server we would have to script a snapshot
//! matching a table whose last writes may or may not have survived the kill, so the set of
//! events after the restart would depend on timing. With no snapshot the restart is quiet: the
//! only events delivered after it are the ones in the outbox, which makes "exactly the K
//! transitions, each at least once, nothing else" an exact assertion.
//!
//! An XMPP sink (server user `world@localhost`, acknowledged by the fake server's ping answers)
//! runs alongside: its messages prove herald has turned every presence into an event, i.e.
//! pushed it into every sink's queue, before we wait for the flush and kill. (It is also needed
//! because herald currently closes its XMPP stream at once when no XMPP sink exists; see
//! `webhook.rs`, `a_webhook_only_herald_stays_connected_and_delivers`.)

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_server::{escape, Conn, FakeServer, Script};
use herald_support::{
    event_json, file_tail, is_event_message, seq, transitions, user_presence, Config,
    HeraldProcess, JID, SECRET,
};
use serde_json::Value;
use webhook_receiver::{Answer, Reply, Request, WebhookReceiver};

/// Generous: the binary starts, opens the store and logs in.
const EVENTUALLY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The herald process
// ---------------------------------------------------------------------------------------------

fn log_tail(path: &Path) -> String {
    file_tail(path, 80)
}

/// Prints herald's log tail when the test fails (always with env `HERALD_TEST_DUMP`).
struct DumpOnPanic(PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("HERALD_TEST_DUMP").is_some() {
            eprintln!(
                "===== herald log ({}) =====\n{}",
                self.0.display(),
                log_tail(&self.0)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Setup {
    server: FakeServer,
    receiver: WebhookReceiver,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let server = FakeServer::start(SECRET).await;
        server.script_default(Script::accept().advertise());
        Setup {
            server,
            receiver: WebhookReceiver::start().await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("herald.log")
    }

    /// Writes `component.toml` and returns its path.
    fn write_config(&self) -> PathBuf {
        let config = Config::new(
            JID,
            SECRET,
            self.server.addr,
            &self.dir.path().join("store"),
        )
        .fast_reconnect()
        .presence("snapshot = \"never\"")
        .xmpp_sink()
        .webhook(&format!(
            r#"name = "hook"
url = "{url}"
retry_min = "100ms"
retry_max = "400ms"
timeout = "500ms"
batch_max = 50
"#,
            url = self.receiver.url("/hook"),
        ));
        config.settings();
        let path = self.dir.path().join("component.toml");
        std::fs::write(&path, config.toml()).expect("write component.toml");
        path
    }

    async fn spawn(&mut self) -> (HeraldProcess, Conn) {
        let herald = HeraldProcess::spawn(&self.write_config(), &self.log());
        let conn = self
            .server
            .next_connection(EVENTUALLY)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "herald did not log in to the fake server:\n{}",
                    log_tail(&self.log())
                )
            });
        (herald, conn)
    }
}

fn presence_xml((user, presence): &(String, &str)) -> String {
    let kind = if *presence == "unavailable" {
        " type='unavailable'"
    } else {
        ""
    };
    format!("<presence{kind} from='{}' to='{JID}'/>", escape(user))
}

/// Receives `n` event messages from the XMPP sink.
async fn xmpp_events(conn: &mut Conn, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(msg) = conn.recv_matching(is_event_message, left).await else {
            panic!(
                "the XMPP sink delivered {} of {n} events in {timeout:?}",
                got.len()
            );
        };
        got.push(event_json(&msg));
    }
    got
}

/// Waits until a file under `dir` holds `needle`, i.e. the store has written it out (SIGKILL
/// cannot take back what is in the files). False after `timeout`.
async fn wait_until_in_files(dir: &Path, needle: &[u8], timeout: Duration) -> bool {
    fn holds(dir: &Path, needle: &[u8]) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() {
                holds(&path, needle)
            } else {
                std::fs::read(&path)
                    .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
            }
        })
    }
    let deadline = Instant::now() + timeout;
    loop {
        if holds(dir, needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn describe(reqs: &[Request]) -> String {
    let mut out = String::new();
    for r in reqs {
        let seqs = r.seqs();
        out.push_str(&format!(
            "\n  #{} {:?} batch {:?} seqs {:?}..={:?} ({})",
            r.index,
            r.answer,
            r.batch_id(),
            seqs.first(),
            seqs.last(),
            seqs.len()
        ));
    }
    out
}

/// Every `seq` of the requests `reqs`, answered or not.
fn seqs_of(reqs: &[Request]) -> BTreeSet<u64> {
    reqs.iter().flat_map(Request::seqs).collect()
}

/// The accepted (2xx) events of `reqs`, in delivery order.
fn accepted(reqs: &[Request]) -> Vec<Value> {
    reqs.iter()
        .filter(|r| r.accepted())
        .flat_map(Request::events)
        .collect()
}

/// Checks the order of the accepted deliveries: a `seq` seen for the first time is always above
/// every `seq` accepted before it (seq order overall), and a `seq` accepted again must belong to
/// `attempted_before_kill`. Returns the first delivery of each `seq`, in order, and the number
/// of duplicates.
fn check_order_and_duplicates(
    deliveries: &[Value],
    attempted_before_kill: &BTreeSet<u64>,
) -> (BTreeMap<u64, Value>, usize) {
    let mut first: BTreeMap<u64, Value> = BTreeMap::new();
    let mut max = 0;
    let mut duplicates = 0;
    for e in deliveries {
        let s = seq(e);
        if let Some(earlier) = first.get(&s) {
            assert!(
                attempted_before_kill.contains(&s),
                "seq {s} delivered twice although no batch holding it was attempted before the kill"
            );
            assert_eq!(
                earlier, e,
                "seq {s} delivered twice with different contents"
            );
            duplicates += 1;
            continue;
        }
        assert!(
            s > max,
            "seq {s} delivered for the first time after seq {max}: not in seq order"
        );
        max = s;
        first.insert(s, e.clone());
    }
    (first, duplicates)
}

// ---------------------------------------------------------------------------------------------
// 1. Kill after everything was persisted
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigkill_after_the_events_were_persisted_loses_nothing() {
    const K: usize = 300;
    let started = Instant::now();
    let mut s = Setup::new().await;
    let _dump = DumpOnPanic(s.log());
    s.receiver.set_default(Reply::status(500).body("try later"));
    let (mut herald, mut conn) = s.spawn().await;

    // 20 users over 15 rounds: every user ends online (even last round), see below.
    let sent = transitions(K, 20, "u");
    for chunk in sent.chunks(50) {
        conn.send_raw(&chunk.iter().map(presence_xml).collect::<String>())
            .await;
    }
    // Every presence became an event (pushed into every sink's queue) …
    let xmpp = xmpp_events(&mut conn, K, EVENTUALLY).await;
    let want: Vec<(String, String)> = sent
        .iter()
        .map(|(u, p)| (u.clone(), (*p).to_owned()))
        .collect();
    assert_eq!(
        xmpp.iter().map(user_presence).collect::<Vec<_>>(),
        want,
        "the XMPP sink's events"
    );
    // … and it is on disk. Proof: a later change to the presence table alone (a new status of a
    // user who stays online: no event with the default `changes = "availability"`) has reached
    // the store's files; the group commits before it, which hold every event, were written first.
    let marker = format!("persisted-{}", uuid::Uuid::new_v4().simple());
    conn.send_raw(&format!(
        "<presence from='u0@localhost/r' to='{JID}'><status>{marker}</status></presence>"
    ))
    .await;
    assert!(
        wait_until_in_files(&s.dir.path().join("store"), marker.as_bytes(), EVENTUALLY).await,
        "the store's files never held the status change written after the events:\n{}",
        log_tail(&s.log())
    );
    herald.kill9();
    let before = s.receiver.requests();
    assert!(!before.is_empty(), "herald never tried the endpoint");
    assert!(
        before.iter().all(|r| r.answer == Answer::Status(500)),
        "{}",
        describe(&before)
    );
    let attempted = seqs_of(&before);

    s.receiver.set_default(Reply::status(200));
    let (mut herald, _conn) = s.spawn().await;
    assert!(
        s.receiver.wait_for_accepted_seqs(K, EVENTUALLY).await,
        "not every event was delivered after the restart:{}",
        describe(&s.receiver.requests())
    );
    s.receiver.wait_quiet(Duration::from_millis(800)).await;
    herald.terminate(EVENTUALLY).await;

    let reqs = s.receiver.requests();
    let deliveries = accepted(&reqs);
    let (first, duplicates) = check_order_and_duplicates(&deliveries, &attempted);
    assert_eq!(
        first.len(),
        K,
        "exactly the K events, nothing else:{}",
        describe(&reqs)
    );
    // The webhook got the very events the XMPP sink got (same trace, seq, args, at, source).
    let from_xmpp: BTreeMap<u64, Value> = xmpp.iter().map(|e| (seq(e), e.clone())).collect();
    assert_eq!(first, from_xmpp, "the webhook's events are the XMPP sink's");
    eprintln!(
        "kill after persist: {K} events, {} requests before the kill (seqs {:?}..={:?} attempted), \
         {} after, {duplicates} duplicates, {:?}",
        before.len(),
        attempted.first(),
        attempted.last(),
        reqs.len() - before.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Kill in the middle of a burst
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigkill_in_the_middle_of_a_burst_keeps_everything_the_endpoint_saw() {
    const TOTAL: usize = 3000;
    const KILL_AFTER_SEQ: u64 = 300;
    let started = Instant::now();
    let mut s = Setup::new().await;
    let _dump = DumpOnPanic(s.log());
    // Each batch fails once and then succeeds: before the kill the endpoint sees ever newer
    // events, some of them only in a batch it refused.
    s.receiver
        .script_all(std::iter::repeat_n([Reply::status(500), Reply::status(200)], TOTAL).flatten());
    let (mut herald, conn) = s.spawn().await;

    let sent = Arc::new(transitions(TOTAL, 50, "u"));
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (sent, written, stop) = (sent.clone(), written.clone(), stop.clone());
        async move {
            // Slower than the worker drains (≈ 30 events per 500/200 cycle of ≈ 100 ms, below
            // batch_max): its batches hold the freshest events, pushed a moment before.
            for t in sent.iter() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                conn.send_raw(&presence_xml(t)).await;
                written.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            conn
        }
    });

    // Kill right after the endpoint refused a batch it had never seen (a first attempt) that
    // reaches past KILL_AFTER_SEQ: that batch holds the newest events herald had.
    let trigger = |reqs: &[Request]| {
        reqs.iter().any(|r| {
            r.answer == Answer::Status(500)
                && r.seqs().last().is_some_and(|&s| s >= KILL_AFTER_SEQ)
                && !reqs[..r.index]
                    .iter()
                    .any(|earlier| earlier.batch_id() == r.batch_id())
        })
    };
    let triggered = s.receiver.wait_for(EVENTUALLY, trigger).await;
    herald.kill9();
    let killed_at = written.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let conn = sender.await.expect("the sender task");
    drop(conn);
    assert!(
        triggered,
        "the endpoint never saw seq {KILL_AFTER_SEQ}:{}",
        describe(&s.receiver.requests())
    );
    assert!(
        killed_at < TOTAL,
        "the burst was over before the kill: not a mid-burst kill"
    );
    let before = s.receiver.requests();
    let attempted = seqs_of(&before);
    let seen_max = *attempted.last().expect("requests before the kill");
    let refused_only: BTreeSet<u64> = {
        let ok: BTreeSet<u64> = accepted(&before).iter().map(seq).collect();
        attempted.difference(&ok).copied().collect()
    };

    s.receiver.clear_script();
    s.receiver.set_default(Reply::status(200));
    let (mut herald, _conn) = s.spawn().await;
    let all_seen = |reqs: &[Request]| {
        let got: BTreeSet<u64> = accepted(reqs).iter().map(seq).collect();
        (1..=seen_max).all(|s| got.contains(&s))
    };
    let complete = s.receiver.wait_for(EVENTUALLY, all_seen).await;
    s.receiver.wait_quiet(Duration::from_millis(800)).await;
    herald.terminate(EVENTUALLY).await;

    let reqs = s.receiver.requests();
    let deliveries = accepted(&reqs);
    let got: BTreeSet<u64> = deliveries.iter().map(seq).collect();
    let missing: Vec<u64> = (1..=seen_max).filter(|s| !got.contains(s)).collect();
    let missing_refused: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|s| refused_only.contains(s))
        .collect();
    assert!(
        complete && missing.is_empty(),
        "after the kill, {} events up to seq {seen_max} (the newest the endpoint saw) were never \
         delivered: {missing:?}; {} of them ({missing_refused:?}) the endpoint had received in a \
         batch it refused (500) before the kill, so herald sent events it had not yet made \
         durable and lost them with the process.\nrequests before the kill:{}",
        missing.len(),
        missing_refused.len(),
        describe(&before)
    );
    let (first, duplicates) = check_order_and_duplicates(&deliveries, &attempted);
    // seq n is the n-th presence sent (fresh store, one event per presence, in stream order).
    for (s, e) in &first {
        let i = usize::try_from(*s).unwrap() - 1;
        let want = &sent[i];
        assert_eq!(
            user_presence(e),
            (want.0.clone(), want.1.to_owned()),
            "seq {s} is not the {s}-th presence sent"
        );
        assert_eq!(e["source"], "live", "{e}");
    }
    let max_delivered = first.keys().last().copied().unwrap_or(0);
    eprintln!(
        "kill mid-burst: {killed_at}/{TOTAL} presences written at the kill, endpoint saw up to seq \
         {seen_max}, {} distinct events delivered (up to seq {max_delivered}), {duplicates} \
         duplicates, {} requests, {:?}",
        first.len(),
        reqs.len(),
        started.elapsed()
    );
}
