//! Benchmark of herald's webhook path: throughput, latency, bytes on disk per queued event and
//! start-up with a large backlog.
//!
//! ```text
//! cargo run --release --example bench_webhook -- [--events N] [--latency-secs S] [--disk N] [--backlog N]
//! ```
//!
//! Everything runs in this one process, on one multi-threaded tokio runtime (as many workers as
//! cores, like the `herald` binary), over loopback only:
//!
//! - **herald** itself, through its public [`herald::app::run`], with a sled store in a temporary
//!   directory and one `[[sinks.webhook]]` named `bench` (no XMPP sink). The sink is signed
//!   (`secret` set), as a production sink would be; `batch_delay = "0ms"`.
//! - **The test suite's fake XEP-0114 server** (`tests/support/fake_server.rs`, in its fast, text
//!   level mode, as in `examples/bench_presence.rs`): it checks herald's handshake, sends a
//!   privilege advertisement (presence only), answers herald's pings and its disco#info query
//!   (identity `server/im` "Prosody"), and writes forwarded presences. Each user
//!   `P<u>@localhost/r<round>` comes online and goes offline once per round, so every stanza is a
//!   change and yields exactly one event, and the event's `args.user` + `args.presence` name the
//!   stanza that caused it.
//! - **The test suite's webhook receiver** (`tests/support/webhook_receiver.rs`): a keep-alive
//!   HTTP/1.1 server on `127.0.0.1:0` written with tokio, here keeping no bodies. As each request
//!   arrives its JSON array is parsed (`seq`, `at`, `args.user`, `args.presence` of every event)
//!   and the arrival time of every event (when the whole body had been read) recorded; it answers
//!   `200` (or `503` on demand) with an empty body.
//!
//! Phases (each checks that every expected event arrived exactly once, in `seq` order):
//!
//! 1. Warm-up, then **throughput**: `--events` presences written as fast as herald reads them;
//!    timed from the first byte written to the arrival of the last event (`batch_max = 1000`).
//! 2. **Latency** at a steady 5 000 events/s: 50 stanzas every 10 ms for `--latency-secs`; each
//!    event's latency runs from the moment its stanza group was handed to the socket to the
//!    moment the receiver had read the request carrying it.
//! 3. **Disk**: a fresh store, the endpoint answering `503`; `--disk` presences are queued, herald
//!    stops gracefully (flushing the store); the store directory is measured before and after
//!    (allocated blocks like `du`, and apparent size). The same is measured for the queue alone
//!    (the store API with the same event JSON, without herald's presence table).
//! 4. **Start-up with a backlog**: `--backlog` events are queued for sink `bench` through the
//!    store API (`Store::sink_queue`, `SeqAllocator`, realistic event JSON from
//!    `PresenceEvent::to_json`), flushed, and herald is started with a working endpoint: time from
//!    calling `app::run` to the first delivery received, and to the whole backlog drained. The
//!    start-up steps herald runs before its first delivery (`Store::open`, `SinkQueue::count()` as
//!    called by `Lane::new`, and the first `peek`) are also timed on their own.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use herald::events::{Availability, EventArgs, PresenceEvent, Source};
use herald::store::Store;

#[path = "support/bench_common.rs"]
mod bench_common;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;
#[path = "../tests/support/webhook_receiver.rs"]
mod webhook_receiver;

use bench_common::{cpu_model, cpu_seconds, mib, thousands, JID, SECRET};
use fake_server::{FakeServer, Fast, FastConn, Script};
use webhook_receiver::{Answer, Reply, Request, WebhookReceiver};

const SINK: &str = "bench";
const ADVERT: &str = "<message from='localhost' to='herald.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/></privilege></message>";
/// Throughput loads are written in chunks cut at the first stanza boundary past this many bytes.
const CHUNK: usize = 32 * 1024;
/// Latency phase: stanzas per write, and the interval between writes (5 000 events/s).
const GROUP: usize = 50;
const TICK: Duration = Duration::from_millis(10);
/// Distinct users of a load (each comes and goes once per round).
const USERS: usize = 20_000;
/// Upper bound of any wait (a failing run, not a slow one).
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

struct Args {
    events: usize,
    latency_secs: u64,
    disk: usize,
    backlog: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 300_000,
        latency_secs: 10,
        disk: 200_000,
        backlog: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("{name} {v}: {e}"))
        };
        match a.as_str() {
            "--events" => args.events = value("--events")?,
            "--latency-secs" => args.latency_secs = value("--latency-secs")? as u64,
            "--disk" => args.disk = value("--disk")?,
            "--backlog" => args.backlog = value("--backlog")?,
            "-h" | "--help" => {
                println!(
                    "usage: bench_webhook [--events N (300000)] [--latency-secs S (10)] \
                     [--disk N (200000)] [--backlog N (1000000)]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.events == 0 || args.latency_secs == 0 || args.disk == 0 || args.backlog == 0 {
        return Err("every count must be positive".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Load: forwarded presences whose events name the stanza that caused them
// ---------------------------------------------------------------------------------------------

/// Which stanza an event came from: user `P<user>@localhost/r<round>`, available or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    phase: u8,
    user: u32,
    round: u32,
    unavailable: bool,
}

impl Tag {
    /// Stanza `i` of a load: pair `i / USERS` of user `i % USERS`; even pairs bring the
    /// resource of the round online, odd pairs take it offline.
    fn of(phase: u8, i: usize) -> Tag {
        let pair = i / USERS;
        Tag {
            phase,
            user: (i % USERS) as u32,
            round: (pair / 2) as u32,
            unavailable: pair % 2 == 1,
        }
    }

    fn index(&self) -> usize {
        (self.round as usize * 2 + usize::from(self.unavailable)) * USERS + self.user as usize
    }

    /// The tag of an event's `args.user` and `args.presence`, if it follows the load's scheme.
    fn parse(user: &str, presence: &str) -> Option<Tag> {
        let (&phase, rest) = user.as_bytes().split_first()?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (node, resource) = rest.split_once("@localhost/r")?;
        Some(Tag {
            phase,
            user: node.parse().ok()?,
            round: resource.parse().ok()?,
            unavailable: presence == "unavailable",
        })
    }
}

fn render_stanza(out: &mut String, phase: u8, i: usize) {
    use std::fmt::Write as _;
    let t = Tag::of(phase, i);
    let p = phase as char;
    if t.unavailable {
        let _ = write!(
            out,
            "<presence type='unavailable' from='{p}{}@localhost/r{}' to='{JID}'/>",
            t.user, t.round
        );
    } else {
        let _ = write!(
            out,
            "<presence from='{p}{}@localhost/r{}' to='{JID}'><priority>0</priority>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://conversations.im' \
             ver='zcIke+Rk13ah4d1Q2PL8Yzx6Ujw='/></presence>",
            t.user, t.round
        );
    }
}

/// `n` stanzas cut into chunks of about `CHUNK` bytes (throughput) or of `per` stanzas.
fn render(phase: u8, n: usize, per: Option<usize>) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut text = String::with_capacity(CHUNK + 512);
    for i in 0..n {
        render_stanza(&mut text, phase, i);
        let full = match per {
            Some(per) => (i + 1) % per == 0,
            None => text.len() >= CHUNK,
        };
        if full {
            chunks.push(Bytes::from(std::mem::take(&mut text)));
        }
    }
    if !text.is_empty() {
        chunks.push(Bytes::from(text));
    }
    chunks
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver (the test suite's, with every request tallied as it arrives)
// ---------------------------------------------------------------------------------------------

/// One event as the receiver got it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    seq: u64,
    /// The event's `at`, in milliseconds since the epoch.
    stamped_ms: i64,
    tag: Option<Tag>,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    seq: u64,
    #[serde(borrow)]
    at: Cow<'a, str>,
    #[serde(borrow)]
    args: WireArgs<'a>,
}

#[derive(Deserialize)]
struct WireArgs<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    presence: Cow<'a, str>,
}

#[derive(Default)]
struct Tally {
    arrivals: Vec<Arrival>,
    /// Requests answered 200 / answered otherwise, and body bytes of the 200s.
    counts: RequestCounts,
    error: Option<String>,
}

/// The receiver of `tests/support/webhook_receiver.rs`, keeping no bodies: each request answered
/// 200 has its JSON array parsed (`seq`, `at`, `args.user`, `args.presence` of every event) as it
/// arrives, and every event's arrival time (when the whole body had been read) is recorded.
struct Receiver {
    inner: WebhookReceiver,
    tally: Arc<Mutex<Tally>>,
    /// Events recorded so far (answered 200).
    recorded: watch::Receiver<u64>,
}

impl Receiver {
    async fn start() -> Receiver {
        let inner = WebhookReceiver::start().await;
        inner.keep_bodies(false);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (recorded_tx, recorded) = watch::channel(0);
        inner.observe({
            let tally = tally.clone();
            move |r: &Request| {
                if r.answer != Answer::Status(200) {
                    lock(&tally).counts.other += 1;
                    return;
                }
                let parsed: Result<Vec<Arrival>, String> =
                    match serde_json::from_slice::<Vec<WireEvent<'_>>>(&r.body) {
                        Ok(events) => Ok(events
                            .iter()
                            .map(|e| Arrival {
                                at: r.at,
                                seq: e.seq,
                                stamped_ms: chrono::DateTime::parse_from_rfc3339(&e.at)
                                    .map(|t| t.timestamp_millis())
                                    .unwrap_or(0),
                                tag: Tag::parse(&e.args.user, &e.args.presence),
                            })
                            .collect()),
                        Err(e) => Err(format!("a body that is not an event array: {e}")),
                    };
                let mut tally = lock(&tally);
                let n = match parsed {
                    Ok(arrivals) => {
                        let n = arrivals.len() as u64;
                        tally.arrivals.extend_from_slice(&arrivals);
                        n
                    }
                    Err(e) => {
                        tally.error = Some(e);
                        0
                    }
                };
                tally.counts.ok += 1;
                tally.counts.body_bytes += r.body.len() as u64;
                drop(tally);
                recorded_tx.send_modify(|total| *total += n);
            }
        });
        Receiver {
            inner,
            tally,
            recorded,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.inner.addr
    }

    fn set_status(&self, status: u16) {
        self.inner.set_default(Reply::status(status));
    }

    fn recorded(&self) -> u64 {
        *self.recorded.borrow()
    }

    fn error(&self) -> Option<String> {
        lock(&self.tally).error.clone()
    }

    /// Takes the arrivals recorded so far and resets the request counters.
    fn take(&self) -> (Vec<Arrival>, RequestCounts) {
        let mut tally = lock(&self.tally);
        (
            std::mem::take(&mut tally.arrivals),
            std::mem::take(&mut tally.counts),
        )
    }

    /// Waits until `n` events in total have been recorded.
    async fn wait_recorded(&mut self, n: u64, what: &str) -> Result<(), String> {
        if let Some(e) = self.error() {
            return Err(format!("receiver: {e}"));
        }
        let wait = self.recorded.wait_for(|&r| r >= n);
        let arrived = matches!(tokio::time::timeout(PHASE_TIMEOUT, wait).await, Ok(Ok(_)));
        if arrived {
            Ok(())
        } else {
            Err(format!(
                "{what}: only {} of {n} events arrived within {PHASE_TIMEOUT:?}{}",
                self.recorded(),
                self.error()
                    .map(|e| format!(" (receiver: {e})"))
                    .unwrap_or_default()
            ))
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct RequestCounts {
    ok: u64,
    other: u64,
    body_bytes: u64,
}

// ---------------------------------------------------------------------------------------------
// Fake XEP-0114 server (the test suite's, in its fast mode)
// ---------------------------------------------------------------------------------------------

/// The logged-in server side of herald's connection.
struct Link {
    conn: FastConn,
}

impl Link {
    /// Waits for the answer to the snapshot-end ping herald sends after the advertisement.
    async fn logged_in(&self) -> Result<(), String> {
        if self.conn.wait_pongs(1, PHASE_TIMEOUT).await {
            Ok(())
        } else {
            Err("herald sent no snapshot ping after the advertisement".into())
        }
    }

    /// Writes `chunks` back to back; returns when the first and the last were written.
    async fn write_all(&self, chunks: &[Bytes]) -> Result<(Instant, Instant), String> {
        self.conn
            .write(chunks.to_vec())
            .await
            .ok_or_else(|| "writing the load: the connection is gone".to_owned())
    }

    /// Writes one chunk; returns the moment just before it was handed to the socket.
    async fn write_timed(&self, chunk: &Bytes) -> Result<Instant, String> {
        self.conn
            .write_timed(chunk.clone())
            .await
            .ok_or_else(|| "writing the load: the connection is gone".to_owned())
    }

    /// Pings herald and waits for the answer: every stanza written before has been read by
    /// herald's connection task and handed to the presence service.
    async fn fence(&self) -> Result<(), String> {
        if self.conn.fence(PHASE_TIMEOUT).await {
            Ok(())
        } else {
            Err("herald did not answer the fence ping".into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// herald in-process
// ---------------------------------------------------------------------------------------------

struct Herald {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), herald::app::RunError>>,
    /// Just before `app::run` was called.
    started: Instant,
    server: FakeServer,
}

async fn start_herald(
    store: &Path,
    receiver: &Receiver,
    batch_max: usize,
    retry_min: &str,
) -> Result<Herald, String> {
    // The advertisement grants presence only; disco#info names the server Prosody.
    let server = FakeServer::start(SECRET).await;
    server.script_default(Script::accept().then_send(ADVERT).fast(Fast {
        disco_identity: Some(("server".into(), "im".into(), "Prosody".into())),
        ..Fast::default()
    }));
    let addr = server.addr;
    let toml = format!(
        r#"
[component]
jid = "{JID}"
secret = "{SECRET}"
server = "{addr}"

[store]
path = '{store}'

[[sinks.webhook]]
url = "http://{hook}/hooks/presence"
name = "{SINK}"
secret = "webhook-hmac-key"
batch_max = {batch_max}
batch_delay = "0ms"
max_backlog = 5000000
retry_min = "{retry_min}"
retry_max = "60s"
timeout = "10s"
"#,
        store = store.display(),
        hook = receiver.addr(),
    );
    let settings = herald::config::load_str(&toml).map_err(|e| format!("config: {e}"))?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(herald::app::run(settings, async move {
        let _ = stop_rx.await;
    }));
    Ok(Herald {
        stop: Some(stop_tx),
        task,
        started,
        server,
    })
}

impl Herald {
    async fn connect(&mut self) -> Result<Link, String> {
        let link = tokio::select! {
            accepted = self.server.next_fast_connection(PHASE_TIMEOUT) => match accepted {
                Some(conn) => Link { conn },
                None => return Err("herald did not connect".into()),
            },
            ended = &mut self.task => return Err(format!("herald stopped before connecting: {ended:?}")),
        };
        link.logged_in().await?;
        Ok(link)
    }

    /// Graceful stop; returns how long it took.
    async fn stop(mut self) -> Result<Duration, String> {
        let t = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(t.elapsed()),
            Ok(Ok(Err(e))) => Err(format!("herald stopped with an error: {e}")),
            Ok(Err(e)) => Err(format!("herald task: {e}")),
            Err(_) => Err("herald did not stop within 30s".into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks and figures
// ---------------------------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every stanza `0..n` of `phase` produced exactly one event, and `seq` is increasing.
fn check_complete(arrivals: &[Arrival], phase: u8, n: usize, what: &str) -> Result<(), String> {
    let mut seen = vec![false; n];
    let mut last_seq = 0;
    for a in arrivals {
        let tag = a
            .tag
            .filter(|t| t.phase == phase)
            .ok_or_else(|| format!("{what}: an event from another load: {a:?}"))?;
        let i = tag.index();
        if i >= n || seen[i] {
            return Err(format!("{what}: unexpected or duplicate event {a:?}"));
        }
        seen[i] = true;
        if a.seq <= last_seq {
            return Err(format!("{what}: seq {} arrived after {last_seq}", a.seq));
        }
        last_seq = a.seq;
    }
    if arrivals.len() != n {
        return Err(format!("{what}: {} events for {n} stanzas", arrivals.len()));
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Allocated bytes (`du`, 512-byte blocks) and apparent bytes of every file under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut blocks = 0;
    let mut apparent = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                blocks += m.blocks() * 512;
                apparent += m.len();
            }
        }
    }
    (blocks, apparent)
}

/// CPU time of the whole machine (all processes) in seconds, from `/proc/stat` (USER_HZ = 100).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    busy as f64 / 100.0
}

/// Measures this process's CPU and that of every other process over a window.
#[derive(Clone, Copy)]
struct CpuWindow {
    own: f64,
    machine: f64,
    at: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    /// Cores kept busy by this process (herald, fake server, receiver), on average.
    own: f64,
    /// Cores kept busy by other processes on the machine, on average.
    others: f64,
}

impl CpuWindow {
    fn start() -> CpuWindow {
        CpuWindow {
            own: cpu_seconds(),
            machine: machine_busy_seconds(),
            at: Instant::now(),
        }
    }

    fn stop(self) -> CpuUse {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let own = cpu_seconds() - self.own;
        let machine = machine_busy_seconds() - self.machine;
        CpuUse {
            own: own / secs,
            others: ((machine - own) / secs).max(0.0),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `Instant` ↔ wall clock, to compare arrival instants with the events' `at` stamps.
struct Clock {
    instant: Instant,
    wall_ms: f64,
}

impl Clock {
    fn now() -> Clock {
        let instant = Instant::now();
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Clock { instant, wall_ms }
    }

    fn wall_ms(&self, at: Instant) -> f64 {
        self.wall_ms + (at.saturating_duration_since(self.instant)).as_secs_f64() * 1e3
            - (self.instant.saturating_duration_since(at)).as_secs_f64() * 1e3
    }
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

struct Throughput {
    events: usize,
    elapsed: Duration,
    written: Duration,
    cpu: CpuUse,
    requests: u64,
    bytes_per_event: f64,
}

async fn throughput(
    link: &Link,
    receiver: &mut Receiver,
    phase: u8,
    n: usize,
    what: &str,
) -> Result<Throughput, String> {
    let chunks = render(phase, n, None);
    let base = receiver.recorded();
    let _ = receiver.take();
    let cpu0 = CpuWindow::start();
    let (first, last) = link.write_all(&chunks).await?;
    receiver.wait_recorded(base + n as u64, what).await?;
    let cpu = cpu0.stop();
    let (arrivals, counts) = receiver.take();
    check_complete(&arrivals, phase, n, what)?;
    let done = arrivals.iter().map(|a| a.at).max().unwrap_or(first);
    Ok(Throughput {
        events: n,
        elapsed: done - first,
        written: last - first,
        cpu,
        requests: counts.ok,
        bytes_per_event: counts.body_bytes as f64 / n as f64,
    })
}

struct Latency {
    events: usize,
    secs: f64,
    sorted_ms: Vec<f64>,
    /// Stanza written → event stamped `at` (ms resolution), and `at` → received.
    ingest_ms: Vec<f64>,
    deliver_ms: Vec<f64>,
    requests: u64,
    max_tick_lag: Duration,
    cpu: CpuUse,
}

async fn latency(link: &Link, receiver: &mut Receiver, secs: u64) -> Result<Latency, String> {
    let groups = (secs * 1000 / TICK.as_millis() as u64) as usize;
    let n = groups * GROUP;
    let chunks = render(b'l', n, Some(GROUP));
    let base = receiver.recorded();
    let _ = receiver.take();
    let clock = Clock::now();
    let mut written = Vec::with_capacity(groups);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu0 = CpuWindow::start();
    let mut max_tick_lag = Duration::ZERO;
    let start = tokio::time::Instant::now();
    for (g, chunk) in chunks.iter().enumerate() {
        ticker.tick().await;
        let due = start + TICK * g as u32;
        max_tick_lag = max_tick_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        written.push(link.write_timed(chunk).await?);
    }
    let elapsed = start.elapsed();
    receiver.wait_recorded(base + n as u64, "latency").await?;
    let cpu = cpu0.stop();
    let (arrivals, counts) = receiver.take();
    check_complete(&arrivals, b'l', n, "latency")?;
    let mut sorted_ms = Vec::with_capacity(n);
    let mut ingest_ms = Vec::with_capacity(n);
    let mut deliver_ms = Vec::with_capacity(n);
    for a in &arrivals {
        let i = a.tag.map_or(0, |t| t.index());
        let w = written[i / GROUP];
        sorted_ms.push(ms(a.at - w));
        ingest_ms.push(a.stamped_ms as f64 - clock.wall_ms(w));
        deliver_ms.push(clock.wall_ms(a.at) - a.stamped_ms as f64);
    }
    for v in [&mut sorted_ms, &mut ingest_ms, &mut deliver_ms] {
        v.sort_by(f64::total_cmp);
    }
    Ok(Latency {
        events: n,
        secs: elapsed.as_secs_f64(),
        sorted_ms,
        ingest_ms,
        deliver_ms,
        requests: counts.ok,
        max_tick_lag,
        cpu,
    })
}

struct Disk {
    events: usize,
    before: (u64, u64),
    after: (u64, u64),
    queued: usize,
    ingest: Duration,
    failed_requests: u64,
    /// The same events pushed through the store API alone: (allocated, apparent) growth.
    api_only: (u64, u64),
    json_bytes: f64,
}

async fn disk(receiver: &mut Receiver, n: usize) -> Result<Disk, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    receiver.set_status(503);
    let _ = receiver.take();
    let mut herald = start_herald(dir.path(), receiver, 1000, "10s").await?;
    let link = herald.connect().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = dir_size(dir.path());
    let chunks = render(b'q', n, None);
    let t = Instant::now();
    link.write_all(&chunks).await?;
    link.fence().await?;
    let ingest = t.elapsed();
    herald.stop().await?;
    drop(link);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = dir_size(dir.path());
    let (_, counts) = receiver.take();
    receiver.set_status(200);

    // What herald queued, read back through the store API.
    let store = Store::open(dir.path(), 100, 16 << 20).map_err(|e| e.to_string())?;
    let queue = store.sink_queue(SINK).map_err(|e| e.to_string())?;
    let queued = queue.count();
    let sample = queue.peek(1000).map_err(|e| e.to_string())?;
    let json_bytes =
        sample.iter().map(|e| e.json.len()).sum::<usize>() as f64 / sample.len().max(1) as f64;
    if sample.is_empty() {
        return Err("disk: herald queued nothing".into());
    }
    let jsons: Vec<Vec<u8>> = sample.iter().map(|e| e.json.to_vec()).collect();
    drop((queue, store));

    // The queue alone: the same JSON texts, pushed with the store API into a fresh store.
    let api_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let api_only = {
        let store = Store::open(api_dir.path(), 100, 16 << 20).map_err(|e| e.to_string())?;
        let queue = store.sink_queue(SINK).map_err(|e| e.to_string())?;
        store.db_flush().map_err(|e| e.to_string())?;
        let b = dir_size(api_dir.path());
        for i in 0..n {
            queue
                .push(i as u64 + 1, &jsons[i % jsons.len()])
                .map_err(|e| e.to_string())?;
        }
        store.db_flush().map_err(|e| e.to_string())?;
        drop((queue, store));
        let a = dir_size(api_dir.path());
        (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
    };
    Ok(Disk {
        events: n,
        before,
        after,
        queued,
        ingest,
        failed_requests: counts.other,
        api_only,
        json_bytes,
    })
}

struct Backlog {
    events: usize,
    prepare: Duration,
    json_bytes: f64,
    size: (u64, u64),
    open: Duration,
    count: Duration,
    first_peek: Duration,
    first_delivery: Duration,
    drained: Duration,
    requests: u64,
    stop: Duration,
    cpu: CpuUse,
}

/// Realistic event JSON, as herald's presence service renders it.
fn backlog_event(seq: u64, at_ms: i64) -> String {
    let u = seq / 2;
    let tag = u.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) & 0xff_ffff;
    let available = seq % 2 == 0;
    PresenceEvent::new(
        seq,
        at_ms,
        Source::Live,
        EventArgs {
            user: format!("user{}@localhost/Conversations.{tag:06x}", u % 50_000),
            presence: if available {
                Availability::Available
            } else {
                Availability::Unavailable
            },
            show: (available && seq % 3 == 0).then(|| "away".to_owned()),
            status: (available && seq % 5 == 0).then(|| "In a meeting until 3pm".to_owned()),
            priority: 0,
            resources: u32::from(available),
        },
    )
    .to_json()
}

async fn backlog(receiver: &mut Receiver, n: usize) -> Result<Backlog, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let t = Instant::now();
    let mut json_total = 0usize;
    {
        let store = Store::open(dir.path(), 100, 16 << 20).map_err(|e| e.to_string())?;
        let queue = store.sink_queue(SINK).map_err(|e| e.to_string())?;
        let mut seqs = store.seq_allocator().map_err(|e| e.to_string())?;
        let at0 = herald::events::now_millis();
        for i in 0..n {
            let seq = seqs.next_seq().map_err(|e| e.to_string())?;
            let json = backlog_event(seq, at0 + (i / 100) as i64);
            json_total += json.len();
            queue
                .push(seq, json.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        seqs.release().map_err(|e| e.to_string())?;
        store.db_flush().map_err(|e| e.to_string())?;
    }
    let prepare = t.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let size = dir_size(dir.path());

    // The steps herald takes before its first delivery, on their own (page cache warm).
    let (open, count, first_peek) = {
        let t = Instant::now();
        let store = Store::open(dir.path(), 100, 16 << 20).map_err(|e| e.to_string())?;
        let queue = store.sink_queue(SINK).map_err(|e| e.to_string())?;
        let open = t.elapsed();
        let t = Instant::now();
        let c = queue.count();
        let count = t.elapsed();
        if c != n {
            return Err(format!("backlog: count() = {c}, expected {n}"));
        }
        let t = Instant::now();
        let head = queue.peek(1000).map_err(|e| e.to_string())?;
        let first_peek = t.elapsed();
        std::hint::black_box(head);
        (open, count, first_peek)
    };

    receiver.set_status(200);
    let base = receiver.recorded();
    let _ = receiver.take();
    let cpu0 = CpuWindow::start();
    let mut herald = start_herald(dir.path(), receiver, 1000, "1s").await?;
    let started = herald.started;
    let _link = herald.connect().await?;
    receiver.wait_recorded(base + n as u64, "backlog").await?;
    let cpu = cpu0.stop();
    let (arrivals, counts) = receiver.take();
    let stop = herald.stop().await?;
    if arrivals.len() != n {
        return Err(format!("backlog: {} events, expected {n}", arrivals.len()));
    }
    let mut last = 0;
    for a in &arrivals {
        if a.seq <= last {
            return Err(format!("backlog: seq {} arrived after {last}", a.seq));
        }
        last = a.seq;
    }
    let first = arrivals.iter().map(|a| a.at).min().unwrap_or(started);
    let done = arrivals.iter().map(|a| a.at).max().unwrap_or(started);
    Ok(Backlog {
        events: n,
        prepare,
        json_bytes: json_total as f64 / n as f64,
        size,
        open,
        count,
        first_peek,
        first_delivery: first - started,
        drained: done - started,
        requests: counts.ok,
        stop,
        cpu,
    })
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

struct Figures {
    warmup: Throughput,
    tput: Throughput,
    lat: Latency,
    disk: Disk,
    backlog: Backlog,
    total: Duration,
}

/// The allocator the `herald` binary uses, with its settings (`herald::allocator`).
#[global_allocator]
static GLOBAL: herald::allocator::Allocator = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    herald::allocator::configure();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_webhook: {e}");
            std::process::exit(2);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(&args).await {
        Ok(f) => report(&args, &f),
        Err(e) => {
            eprintln!("bench_webhook: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: &Args) -> Result<Figures, String> {
    let t0 = Instant::now();
    let mut receiver = Receiver::start().await;

    // Phases 1 and 2: one herald, batch_max 1000.
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let mut herald = start_herald(dir.path(), &receiver, 1000, "1s").await?;
    let link = herald.connect().await?;
    let warmup = throughput(&link, &mut receiver, b'w', 50_000, "warm-up").await?;
    eprintln!(
        "warm-up: {} events in {:.0} ms",
        warmup.events,
        ms(warmup.elapsed)
    );
    let tput = throughput(&link, &mut receiver, b't', args.events, "throughput").await?;
    eprintln!(
        "throughput: {} events in {:.0} ms",
        tput.events,
        ms(tput.elapsed)
    );
    let lat = latency(&link, &mut receiver, args.latency_secs).await?;
    eprintln!(
        "latency: {} events over {:.1} s, p99 {:.2} ms",
        lat.events,
        lat.secs,
        percentile(&lat.sorted_ms, 99.0)
    );
    herald.stop().await?;
    drop(link);
    drop(dir);

    // Phase 3.
    let disk = disk(&mut receiver, args.disk).await?;
    eprintln!(
        "disk: {} events queued, store {} -> {}",
        disk.queued,
        mib(disk.before.0 as f64),
        mib(disk.after.0 as f64)
    );

    // Phase 4.
    let backlog = backlog(&mut receiver, args.backlog).await?;
    eprintln!(
        "backlog: first delivery after {:.0} ms, drained after {:.0} ms",
        ms(backlog.first_delivery),
        ms(backlog.drained)
    );
    Ok(Figures {
        warmup,
        tput,
        lat,
        disk,
        backlog,
        total: t0.elapsed(),
    })
}

fn report(args: &Args, f: &Figures) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let rate = f.tput.events as f64 / f.tput.elapsed.as_secs_f64();
    let p = |q: f64| percentile(&f.lat.sorted_ms, q);
    let lat_max = f.lat.sorted_ms.last().copied().unwrap_or(f64::NAN);
    let per_event = |b: u64, a: u64| (a as f64 - b as f64) / f.disk.events as f64;
    let disk_du = per_event(f.disk.before.0, f.disk.after.0);
    let disk_app = per_event(f.disk.before.1, f.disk.after.1);
    let b = &f.backlog;
    let drain_rate = b.events as f64 / (b.drained - b.first_delivery).as_secs_f64();

    println!();
    println!(
        "herald bench_webhook: {cores} cores ({}); webhook sink signed (HMAC), batch_delay 0ms, loopback",
        cpu_model()
    );
    println!();
    println!(
        "| {:<62} | {:>24} | {:>10} | {:<4} |",
        "measurement", "value", "target", ""
    );
    println!("|{:-<64}|{:-<26}|{:-<12}|{:-<6}|", "", "", "", "");
    let row = |what: &str, value: String, target: &str, ok: &str| {
        println!("| {what:<62} | {value:>24} | {target:>10} | {ok:<4} |");
    };
    row(
        &format!(
            "(a) throughput, {} events, batch_max 1000 (events/s)",
            thousands(f.tput.events as f64)
        ),
        thousands(rate),
        ">= 50 000",
        verdict(rate >= 50_000.0),
    );
    row(
        &format!(
            "(b) latency p50 / p99 at 5 000 ev/s, {} events (ms)",
            thousands(f.lat.events as f64)
        ),
        format!("{:.2} / {:.2}", p(50.0), p(99.0)),
        "p99 <= 25",
        verdict(p(99.0) <= 25.0),
    );
    row("(b) latency max (ms)", format!("{lat_max:.2}"), "", "");
    row(
        &format!(
            "(c) disk per queued event, {} events (du / apparent)",
            thousands(f.disk.events as f64)
        ),
        format!("{disk_du:.0} B / {disk_app:.0} B"),
        "",
        "",
    );
    row(
        &format!(
            "(d) start-up, {} queued: app::run -> first delivery (ms)",
            thousands(b.events as f64)
        ),
        format!("{:.0}", ms(b.first_delivery)),
        "<= 3 000",
        verdict(b.first_delivery <= Duration::from_secs(3)),
    );
    row(
        "(d) app::run -> whole backlog delivered (ms)",
        format!("{:.0}", ms(b.drained)),
        "",
        "",
    );
    println!();
    println!("details:");
    println!(
        "  (a) from the first stanza byte written to the last event received; load written into the socket after {:.0} ms; \
         {} requests ({:.0} events/request, {:.0} body bytes/event); process CPU {:.2} s = {:.2} cores busy, {:.1} us CPU/event \
         (herald + fake server + receiver); other processes {:.2} cores",
        ms(f.tput.written),
        f.tput.requests,
        f.tput.events as f64 / f.tput.requests.max(1) as f64,
        f.tput.bytes_per_event,
        f.tput.cpu.own * f.tput.elapsed.as_secs_f64(),
        f.tput.cpu.own,
        f.tput.cpu.own * f.tput.elapsed.as_secs_f64() * 1e6 / f.tput.events as f64,
        f.tput.cpu.others
    );
    println!(
        "  (a) warm-up before it: {} events at {} events/s",
        thousands(f.warmup.events as f64),
        thousands(f.warmup.events as f64 / f.warmup.elapsed.as_secs_f64())
    );
    println!(
        "  (b) {} groups of {GROUP} stanzas every {} ms over {:.2} s (latest group written {:.2} ms after its tick); \
         latency = receiver has read the request carrying the event - the stanza's group was handed to the socket",
        f.lat.events / GROUP,
        TICK.as_millis(),
        f.lat.secs,
        ms(f.lat.max_tick_lag)
    );
    println!(
        "  (b) p90 {:.2} ms, p99.9 {:.2} ms; {} requests ({:.1} events/request); process CPU {:.2} cores busy; other processes {:.2} cores",
        p(90.0),
        p(99.9),
        f.lat.requests,
        f.lat.events as f64 / f.lat.requests.max(1) as f64,
        f.lat.cpu.own,
        f.lat.cpu.others
    );
    println!(
        "  (b) split at the event's `at` stamp (wall clock, 1 ms resolution): stanza -> `at` p50 {:.1} / p99 {:.1} ms; \
         `at` -> received p50 {:.1} / p99 {:.1} ms",
        percentile(&f.lat.ingest_ms, 50.0),
        percentile(&f.lat.ingest_ms, 99.0),
        percentile(&f.lat.deliver_ms, 50.0),
        percentile(&f.lat.deliver_ms, 99.0)
    );
    println!(
        "  (c) endpoint answering 503 ({} attempts); store dir before {} / {} (du / apparent), after graceful stop {} / {}; \
         {} events queued (read back with count()); ingest + fence {:.0} ms",
        f.disk.failed_requests,
        mib(f.disk.before.0 as f64),
        mib(f.disk.before.1 as f64),
        mib(f.disk.after.0 as f64),
        mib(f.disk.after.1 as f64),
        thousands(f.disk.queued as f64),
        ms(f.disk.ingest)
    );
    println!(
        "  (c) includes herald's presence table churn; event JSON {:.0} B; the queue alone (same JSON, SinkQueue::push, flush): \
         {:.0} B / {:.0} B per event (du / apparent)",
        f.disk.json_bytes,
        f.disk.api_only.0 as f64 / f.disk.events as f64,
        f.disk.api_only.1 as f64 / f.disk.events as f64
    );
    println!(
        "  (d) backlog prepared through the store API in {:.1} s (event JSON {:.0} B); store {} / {} (du / apparent) = {:.0} B / {:.0} B per event",
        b.prepare.as_secs_f64(),
        b.json_bytes,
        mib(b.size.0 as f64),
        mib(b.size.1 as f64),
        b.size.0 as f64 / b.events as f64,
        b.size.1 as f64 / b.events as f64
    );
    println!(
        "  (d) start-up steps alone (page cache warm): Store::open {:.0} ms, SinkQueue::count() (Lane::new) {:.0} ms, first peek(1000) {:.1} ms",
        ms(b.open),
        ms(b.count),
        ms(b.first_peek)
    );
    println!(
        "  (d) drain {} events/s after the first delivery; {} requests; process CPU {:.2} cores busy; other processes {:.2} cores; graceful stop {:.0} ms",
        thousands(drain_rate),
        b.requests,
        b.cpu.own,
        b.cpu.others,
        ms(b.stop)
    );
    println!(
        "  every phase verified: each stanza produced exactly one event, received once, in seq order; total run {:.1} s \
         (--events {} --latency-secs {} --disk {} --backlog {})",
        f.total.as_secs_f64(),
        args.events,
        args.latency_secs,
        args.disk,
        args.backlog
    );
    let busiest = f.tput.cpu.others.max(f.lat.cpu.others).max(b.cpu.others);
    if busiest > 0.2 {
        println!(
            "  WARNING: other processes kept up to {busiest:.2} of {cores} cores busy during a timed phase: \
             these figures are disturbed; run again on a quiet machine"
        );
    }
}
