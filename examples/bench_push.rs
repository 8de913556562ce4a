//! Benchmark of group-chat push: one room, many absent watchers, each its own registration.
//!
//! ```text
//! cargo run --release --example bench_push -- [--watchers N] [--rate M] [--seconds S]
//!     [--rooms R] [--apps K] [--sweep M1,M2,…] [--max-in-flight N] [--per-server N]
//! ```
//!
//! Everything runs in this one process, on one multi-threaded tokio runtime (one worker per
//! core, like the `herald` binary), with the binary's allocator and its settings:
//!
//! - **herald** through [`herald::app::run_with`], a fresh store in a temporary directory,
//!   `presence.snapshot = "never"`, no HTTP listener, `[push] domains = ["localhost"]`,
//!   `coalesce = "0s"` (every message is pushed at once), other `[push]` settings at their
//!   defaults unless `--max-in-flight` / `--per-server` set them.
//! - **A text-level XEP-0114 server** (`examples/support/bench_common.rs`, `push_server`) logs
//!   herald in with Prosody's privilege advertisement (`presence = managed_entity`), answers the
//!   rooms' `disco#info`, answers each join with three occupants (`sender`, `alice`, `bob`) and
//!   the self-presence (status 110), answers every publish with a `result` from the app server
//!   JID it was sent to, and writes the groupchat messages
//!   `<message from='bench@muc.localhost/sender' to='herald.localhost' type='groupchat' id='m-N'>`.
//!
//! Phases:
//!
//! 1. **Registrations**: `--watchers` users `wI@localhost` (default 1 000) register one app
//!    server each (`push0.localhost` … over `--apps`, default 1) through herald's `Push` handle
//!    (what the ad-hoc commands call), and watch `bench@muc.localhost` as nick `wI`, mode
//!    `always`; 64 at a time. None of them is in the room: every one is pushed for every
//!    message. Memory is read before and after (and after herald has joined the room).
//! 2. **Rooms**: watcher I also watches `rI@muc.localhost`, for I < `--rooms` (default 1 000);
//!    herald joins each. Memory is read again once every room is joined.
//! 3. **Warm-up**: one second of messages at `--rate`; every publish must come back.
//! 4. **Measured run**: `--seconds` (default 10) of messages at `--rate` (default 100/s),
//!    paced on the clock; then, with `--sweep`, the same at each listed rate, until publishes
//!    no longer keep up.
//!
//! Latency: from the moment the server hands the write carrying message N to its socket, to
//! the moment the read that brought a publish with `message-count` N+1 returned (every watcher
//! is absent all along, so the count of each registration is the message number). It covers
//! the loopback both ways, herald's reader, the rooms owner, the push owner's decision, the
//! outbox write and its flush, the publish task (registration read, IQ built and queued),
//! herald's writer, and the server's read.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::muc::RoomState;
use herald::push::{Push, Registration, RoomMode, RoomRule};
use herald::xmpp::routes::LinkStatus;
use tokio::sync::oneshot;

#[allow(dead_code)]
#[path = "support/bench_common.rs"]
mod bench_common;

use bench_common::push_server::{self, PushConn, Seen};
use bench_common::{cpu_model, cpu_seconds, thousands, JID, SECRET};

const ROOM: &str = "bench@muc.localhost";
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Counting allocator (as bench_presence): live-heap growth over a window.
// ---------------------------------------------------------------------------------------------

struct CountingAlloc;

static COUNT_HEAP: AtomicBool = AtomicBool::new(false);
static HEAP_DELTA: AtomicI64 = AtomicI64::new(0);

fn count(delta: i64) {
    if COUNT_HEAP.load(Ordering::Relaxed) {
        HEAP_DELTA.fetch_add(delta, Ordering::Relaxed);
    }
}

static INNER: herald::allocator::Allocator = mimalloc::MiMalloc;

// SAFETY: every call is forwarded to `INNER` unchanged; only counters are updated around it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        unsafe { INNER.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn heap_window() {
    HEAP_DELTA.store(0, Ordering::SeqCst);
    COUNT_HEAP.store(true, Ordering::SeqCst);
}

fn heap_delta() -> i64 {
    COUNT_HEAP.store(false, Ordering::SeqCst);
    HEAP_DELTA.load(Ordering::SeqCst)
}

fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

struct Args {
    watchers: usize,
    rate: u64,
    seconds: u64,
    rooms: usize,
    apps: usize,
    sweep: Vec<u64>,
    max_in_flight: Option<usize>,
    per_server: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        watchers: 1000,
        rate: 100,
        seconds: 10,
        rooms: 1000,
        apps: 1,
        sweep: Vec::new(),
        max_in_flight: None,
        per_server: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || -> Result<usize, String> {
            value.parse().map_err(|_| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--watchers" => a.watchers = num()?.max(1),
            "--rate" => a.rate = num()?.max(1) as u64,
            "--seconds" => a.seconds = num()?.max(1) as u64,
            "--rooms" => a.rooms = num()?,
            "--apps" => a.apps = num()?.max(1),
            "--max-in-flight" => a.max_in_flight = Some(num()?),
            "--per-server" => a.per_server = Some(num()?),
            "--sweep" => {
                a.sweep = value
                    .split(',')
                    .map(|r| r.trim().parse().map_err(|_| format!("bad rate {r}")))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.rooms > a.watchers {
        return Err("--rooms must not exceed --watchers (one extra room per watcher)".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    herald::allocator::configure();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_push: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args).await {
        eprintln!("bench_push: FAILED: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

fn registration(i: usize, apps: usize) -> Registration {
    let mut r = Registration::new(
        &format!("push{}.localhost", i % apps),
        &format!("node-{i:06}-yxs32uqsflafdk3iuqo"),
        herald::push::now_ms(),
    );
    r.options = Some(format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>{i:032}</value></field></x>"
    ));
    r
}

/// Runs `f(i)` for every `i` in `0..n`, 64 at a time (the store's flushes are shared).
async fn in_parallel<F, Fut>(n: usize, f: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let f = Arc::new(f);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let f = f.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(64) {
                f(i).await?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn register_watchers(push: &Push, n: usize, apps: usize) -> Result<(), String> {
    let push = push.clone();
    in_parallel(n, move |i| {
        let push = push.clone();
        async move {
            let user = format!("w{i}@localhost");
            push.register(&user, registration(i, apps))
                .await
                .map_err(|e| format!("register {user}: {e}"))?;
            let rule = RoomRule {
                room: ROOM.into(),
                nick: format!("w{i}"),
                mode: RoomMode::Always,
            };
            push.set_room(&user, rule)
                .await
                .map_err(|e| format!("watch for {user}: {e}"))?;
            Ok(())
        }
    })
    .await
}

async fn watch_rooms(push: &Push, n: usize) -> Result<(), String> {
    let push = push.clone();
    in_parallel(n, move |i| {
        let push = push.clone();
        async move {
            let user = format!("w{i}@localhost");
            let rule = RoomRule {
                room: format!("r{i}@{}", push_server::MUC),
                nick: format!("w{i}"),
                mode: RoomMode::Always,
            };
            push.set_room(&user, rule)
                .await
                .map_err(|e| format!("watch for {user}: {e}"))?;
            Ok(())
        }
    })
    .await
}

async fn wait_joined(rooms: &herald::muc::RoomsView, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let joined = rooms
            .all()
            .iter()
            .filter(|(_, s)| s.state == RoomState::Joined)
            .count();
        if joined >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {joined} of {n} rooms joined"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One paced run: `rate` messages/s for `seconds`, starting at message index `first`.
struct Run {
    rate: u64,
    messages: u64,
    expected: u64,
    seen: Seen,
    /// First message handed to the writer → last publish read.
    elapsed: Duration,
    /// Last message handed to the writer → last publish read.
    drain: Duration,
    cpu: f64,
    complete: bool,
}

impl Run {
    fn publish_rate(&self) -> f64 {
        self.seen.publishes_in_run() as f64 / self.elapsed.as_secs_f64()
    }

    /// Publishes kept up: every one came back, and the last one within 250 ms of the last
    /// message (no backlog built up).
    fn kept_up(&self) -> bool {
        self.complete && self.drain <= Duration::from_millis(250)
    }
}

trait InRun {
    fn publishes_in_run(&self) -> u64;
}

impl InRun for Seen {
    fn publishes_in_run(&self) -> u64 {
        self.latencies_us.len() as u64 + self.unmatched
    }
}

async fn paced(
    conn: &PushConn,
    first: u64,
    rate: u64,
    seconds: u64,
    watchers: u64,
) -> Result<Run, String> {
    let messages = rate * seconds;
    let before = conn.publishes();
    let _ = conn.take();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < messages {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(messages);
        if due > sent {
            conn.send_messages(ROOM, "sender", first + sent..first + due);
            sent = due;
        }
        let next = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    let last_write = Instant::now();
    let expected = messages * watchers;
    let complete = conn
        .wait_publishes(
            before + expected,
            Duration::from_secs(60) + Duration::from_secs(seconds),
        )
        .await;
    let seen = conn.take();
    let cpu = cpu_seconds() - cpu0;
    let end = seen.last_read.unwrap_or(last_write);
    Ok(Run {
        rate,
        messages,
        expected,
        elapsed: end.saturating_duration_since(start),
        drain: end.saturating_duration_since(last_write),
        seen,
        cpu,
        complete,
    })
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let (addr, conn_rx) = push_server::start(SECRET, &["sender", "alice", "bob"])
        .await
        .map_err(|e| e.to_string())?;
    let store = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut push_cfg = String::from("domains = [\"localhost\"]\ncoalesce = \"0s\"\n");
    if let Some(n) = args.max_in_flight {
        push_cfg.push_str(&format!("max_in_flight = {n}\n"));
    }
    if let Some(n) = args.per_server {
        push_cfg.push_str(&format!("max_in_flight_per_server = {n}\n"));
    }
    let toml = format!(
        "[component]\njid = \"{JID}\"\nsecret = \"{SECRET}\"\nserver = \"{addr}\"\n\
         [store]\npath = '{}'\n[presence]\nsnapshot = \"never\"\n[http]\nlisten = \"\"\n\
         [push]\n{push_cfg}",
        store.path().display()
    );
    let settings = herald::config::load_str(&toml).map_err(|e| format!("config: {e}\n{toml}"))?;
    let push_settings = settings.push.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let (obs_tx, obs_rx) = oneshot::channel();
    let herald = tokio::spawn(herald::app::run_with(
        settings,
        herald::xmpp::iq_handlers::IqHandlers::new(),
        async move {
            let _ = stopped.await;
        },
        move |o| {
            let _ = obs_tx.send(o);
        },
    ));
    let o = obs_rx.await.map_err(|_| "herald did not start")?;
    let conn = tokio::time::timeout(Duration::from_secs(15), conn_rx)
        .await
        .map_err(|_| "herald did not log in")?
        .map_err(|_| "the server stopped")?;
    let mut status = o.status.clone();
    status
        .wait_for(|s| matches!(s, LinkStatus::Up { .. }))
        .await
        .map_err(|_| "no login")?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Registrations.
    let rss0 = rss_bytes();
    heap_window();
    let t = Instant::now();
    register_watchers(&o.push, args.watchers, args.apps).await?;
    let reg_time = t.elapsed();
    wait_joined(&o.rooms, 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heap_regs = heap_delta();
    let rss1 = rss_bytes();
    eprintln!(
        "{} watchers registered in {:.2?}; herald is in {ROOM}",
        args.watchers, reg_time
    );

    // 2. Rooms.
    heap_window();
    let t = Instant::now();
    watch_rooms(&o.push, args.rooms).await?;
    wait_joined(&o.rooms, args.rooms + 1).await?;
    let rooms_time = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heap_rooms = heap_delta();
    let rss2 = rss_bytes();
    eprintln!(
        "{} more rooms watched and joined in {:.2?} ({} joins answered)",
        args.rooms,
        rooms_time,
        conn.joins()
    );

    // 3. Warm-up, then 4. the measured runs.
    let watchers = args.watchers as u64;
    let mut next = 0u64;
    let warm = paced(&conn, next, args.rate, 1, watchers).await?;
    next += warm.messages;
    if !warm.complete {
        return Err(format!(
            "warm-up: {} of {} publishes came back",
            warm.seen.publishes_in_run(),
            warm.expected
        ));
    }
    eprintln!(
        "warm-up: {} publishes at {:.0}/s",
        warm.expected,
        warm.publish_rate()
    );
    let mut runs = Vec::new();
    for rate in std::iter::once(args.rate).chain(args.sweep.iter().copied()) {
        let mut r = paced(&conn, next, rate, args.seconds, watchers).await?;
        next += r.messages;
        // Sorted once, here: the report reads percentiles.
        r.seen.latencies_us.sort_unstable();
        eprintln!(
            "{rate} messages/s: {:.0} publishes/s (offered {}), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, drain {:.0?}, {}",
            r.publish_rate(),
            rate * watchers,
            pct(&r.seen.latencies_us, 0.5),
            pct(&r.seen.latencies_us, 0.99),
            pct(&r.seen.latencies_us, 1.0),
            r.drain,
            if r.kept_up() { "kept up" } else { "fell behind" }
        );
        let kept = r.kept_up();
        runs.push(r);
        if !kept {
            if !runs.last().is_some_and(|r| r.complete) {
                // Let the backlog drain before stopping.
                let _ = conn
                    .wait_publishes(next * watchers, Duration::from_secs(120))
                    .await;
            }
            break;
        }
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), herald).await;

    // Report.
    let main = &runs[0];
    let lat = &main.seen.latencies_us;
    let mut last: Vec<u32> = main
        .seen
        .last_us
        .iter()
        .zip(&main.seen.per_message)
        .filter(|(_, n)| **n > 0)
        .map(|(us, _)| *us)
        .collect();
    last.sort_unstable();
    let mut first: Vec<u32> = main
        .seen
        .first_us
        .iter()
        .copied()
        .filter(|us| *us != u32::MAX)
        .collect();
    first.sort_unstable();
    let per_reg_heap = heap_regs as f64 / args.watchers as f64;
    let per_reg_rss = (rss1 - rss0) as f64 / args.watchers as f64;
    let rooms = args.rooms.max(1) as f64;
    let per_room_heap = heap_rooms as f64 / rooms;
    let per_room_rss = (rss2 - rss1) as f64 / rooms;
    println!(
        "bench_push ({}; {} cores): {} watchers (absent, one registration each, {} app server(s)), \
         in-flight caps {} / {} per app server",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.watchers,
        args.apps,
        push_settings.max_in_flight,
        push_settings.max_in_flight_per_server
    );
    println!("| measurement | value | target | |");
    println!("|---|---|---|---|");
    let rate = main.publish_rate();
    println!(
        "| publishes/s at {} messages/s × {} watchers ({} offered), {} s | **{}/s** | ≥ 20 000/s | {} |",
        main.rate,
        args.watchers,
        thousands((main.rate * watchers) as f64),
        args.seconds,
        thousands(rate),
        verdict(rate >= 20_000.0)
    );
    println!(
        "| latency, message written → publish read: p50 / p99 / max ({} publishes) | {:.2} / **{:.2}** / {:.2} ms | p99 ≤ 10 ms | {} |",
        lat.len(),
        pct(lat, 0.5),
        pct(lat, 0.99),
        pct(lat, 1.0),
        verdict(pct(lat, 0.99) <= 10.0)
    );
    println!(
        "| a message's first publish: p50 / p99 / max ({} messages) | {:.2} / {:.2} / {:.2} ms | | |",
        first.len(),
        pct(&first, 0.5),
        pct(&first, 0.99),
        pct(&first, 1.0)
    );
    println!(
        "| a message's last publish: p50 / p99 / max ({} messages) | {:.2} / {:.2} / {:.2} ms | | |",
        last.len(),
        pct(&last, 0.5),
        pct(&last, 0.99),
        pct(&last, 1.0)
    );
    println!(
        "| drain after the last message | {:.1} ms | | {} |",
        main.drain.as_secs_f64() * 1000.0,
        if main.kept_up() {
            "kept up"
        } else {
            "fell behind"
        }
    );
    println!(
        "| CPU per publish (whole process: herald and the server) | {:.1} µs ({:.2} cores) | | |",
        main.cpu / main.seen.publishes_in_run().max(1) as f64 * 1e6,
        main.cpu / main.elapsed.as_secs_f64()
    );
    println!(
        "| memory per registration ({} registrations, each watching the room) | heap {:.0} B, RSS {:.0} B | | |",
        args.watchers, per_reg_heap, per_reg_rss
    );
    println!(
        "| memory per watched room ({} rooms, joined, 4 occupants each) | heap {:.0} B, RSS {:.0} B | | |",
        args.rooms, per_room_heap, per_room_rss
    );
    if runs.len() > 1 {
        println!();
        println!("| messages/s | offered publishes/s | publishes/s | p50 / p99 / max | drain | |");
        println!("|---|---|---|---|---|---|");
        for r in &runs {
            let l = &r.seen.latencies_us;
            println!(
                "| {} | {} | {} | {:.2} / {:.2} / {:.2} ms | {:.0} ms | {} |",
                r.rate,
                thousands((r.rate * watchers) as f64),
                thousands(r.publish_rate()),
                pct(l, 0.5),
                pct(l, 0.99),
                pct(l, 1.0),
                r.drain.as_secs_f64() * 1000.0,
                if r.kept_up() {
                    "kept up"
                } else {
                    "fell behind"
                }
            );
        }
    }
    if !main.complete {
        eprintln!(
            "bench_push: {} of {} publishes came back within {} s of the last message (herald fell behind)",
            main.seen.publishes_in_run(),
            main.expected,
            60 + args.seconds
        );
    }
    let unmatched: u64 = runs.iter().map(|r| r.seen.unmatched).sum();
    if unmatched > 0 {
        return Err(format!("{unmatched} publishes named no message written"));
    }
    if !main.complete {
        return Err(format!(
            "{} of {} publishes came back",
            main.seen.publishes_in_run(),
            main.expected
        ));
    }
    Ok(())
}
