//! Benchmark of the presence API: `GET /v1/presence` with 100 000 resources online, and the
//! presence pipeline's throughput while that request is served in a loop.
//!
//! ```text
//! cargo run --release --example bench_http -- [--resources N] [--events N] [--rounds N] [--interval-ms N]
//! ```
//!
//! Everything runs in this one process, on one multi-threaded tokio runtime (one worker per
//! core, like the `herald` binary):
//!
//! - **herald** through [`herald::app::run_with`], a fresh store in a temporary directory, its
//!   HTTP listener on `127.0.0.1:0` with a token, no sinks, `presence.snapshot = "never"`.
//! - **A fake XEP-0114 server** on `127.0.0.1:0`: the test suite's `tests/support/fake_server.rs`
//!   in its fast mode logs herald in and advertises `presence = managed_entity`; it writes
//!   pre-rendered forwarded presences and drains what herald writes.
//!
//! Phases:
//!
//! 1. `--resources` distinct resources come online (default 100 000); done when the presence
//!    owner counts them all.
//! 2. Response time: 10 sequential `GET /v1/presence` (reqwest, whole body read); the first
//!    answer is parsed and must list every resource.
//! 3. Throughput, `--rounds` times (default 3) each, alternating: `--events` presences (default
//!    200 000; 10 000 other resources, available and unavailable in turn, so each one is an
//!    event), timed from the first byte written until a marker presence written after them is
//!    in the table; once idle, once while a client (in this process, on the same cores)
//!    requests `/v1/presence` in a loop, back to back or `--interval-ms` apart.
//!    The medians are compared: the loaded figure must stay within 10 % of the idle one.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use herald::presence::query::PresenceReader;

#[allow(dead_code)]
#[path = "support/bench_common.rs"]
mod bench_common;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use bench_common::{cpu_model, JID, SECRET};
use fake_server::{FakeServer, Fast, Script};

const TOKEN: &str = "bench-token-0123456789";
const CHURN_RESOURCES: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(120);
const SHOWS: [Option<&str>; 4] = [None, Some("away"), Some("dnd"), Some("xa")];

struct Args {
    resources: usize,
    events: usize,
    rounds: usize,
    /// Pause between two requests of the loop (0: back to back).
    interval_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        resources: 100_000,
        events: 200_000,
        rounds: 3,
        interval_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--resources" => a.resources = num()?,
            "--events" => a.events = num()?,
            "--rounds" => a.rounds = num()?.max(1),
            "--interval-ms" => a.interval_ms = num()? as u64,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn available(out: &mut String, jid: &str, i: usize) {
    let _ = write!(out, "<presence xml:lang='en' to='{JID}' from='{jid}'>");
    if let Some(show) = SHOWS[i % SHOWS.len()] {
        let _ = write!(out, "<show>{show}</show>");
    }
    if i % 3 == 0 {
        let _ = write!(out, "<status>status text number {i}</status>");
    }
    out.push_str("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ver='pMz1cwDIt+7tSfPaUm2hqoQTTfQ='/></presence>");
}

fn unavailable(out: &mut String, jid: &str) {
    let _ = write!(
        out,
        "<presence type='unavailable' to='{JID}' from='{jid}'/>"
    );
}

/// Stanzas, gathered into chunks of about 32 KiB cut at stanza boundaries.
#[derive(Default)]
struct Chunks {
    done: Vec<Bytes>,
    cur: String,
}

impl Chunks {
    fn stanza(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.cur);
        if self.cur.len() >= 32 * 1024 {
            self.done.push(Bytes::from(std::mem::take(&mut self.cur)));
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.done.push(Bytes::from(self.cur));
        }
        self.done
    }
}

fn online_load(n: usize) -> Vec<Bytes> {
    let mut c = Chunks::default();
    for i in 0..n {
        c.stanza(|s| available(s, &format!("user{i}@localhost/phone.{i:06x}"), i));
    }
    c.finish()
}

/// `events` presences over the churn resources (every one a change when `events` is a multiple
/// of twice their number), then `marker` available.
fn churn_load(events: usize, marker: &str) -> Vec<Bytes> {
    let mut c = Chunks::default();
    for i in 0..events {
        let jid = format!("churn{}@localhost/desk", i % CHURN_RESOURCES);
        if (i / CHURN_RESOURCES) % 2 == 0 {
            c.stanza(|s| available(s, &jid, i));
        } else {
            c.stanza(|s| unavailable(s, &jid));
        }
    }
    c.stanza(|s| available(s, marker, 0));
    c.finish()
}

struct Load {
    chunks: Vec<Bytes>,
    started: oneshot::Sender<Instant>,
}

async fn wait_online(reader: &PresenceReader, pred: impl Fn(usize) -> bool) -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let online = reader.stats().await.map_err(|e| e.to_string())?.online;
        if pred(online) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out with {online} online"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_user(reader: &PresenceReader, bare: &str) -> Result<Instant, String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if reader.is_online(bare).await.map_err(|e| e.to_string())? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!("{bare} never came online"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One whole `GET /v1/presence`: its time and body size.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<(Duration, Bytes), String> {
    let t = Instant::now();
    let resp = client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((t.elapsed(), body))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    herald::allocator::configure();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_http: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args).await {
        eprintln!("bench_http: FAILED: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    // The fake server: Prosody's advertisement, then loads; it drains herald's output.
    let mut fake = FakeServer::start(SECRET).await;
    fake.script_default(Script::accept().advertise().fast(Fast::default()));
    let server = fake.addr;
    let store = tempfile::tempdir().map_err(|e| e.to_string())?;
    let toml = format!(
        "[component]\njid = \"{JID}\"\nsecret = \"{SECRET}\"\nserver = \"{server}\"\n\
         [store]\npath = '{}'\n[presence]\nsnapshot = \"never\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        store.path().display()
    );
    let settings = herald::config::load_str(&toml).map_err(|e| format!("config: {e}"))?;
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
    let observers = obs_rx.await.map_err(|_| "herald did not start")?;
    let reader = observers.presence.clone();
    let http = observers.http.ok_or("no HTTP listener")?;
    let url = format!("http://{http}/v1/presence");

    let conn = fake
        .next_fast_connection(Duration::from_secs(15))
        .await
        .ok_or("herald did not connect")?;
    let (loads, mut load_rx) = mpsc::unbounded_channel::<Load>();
    tokio::spawn(async move {
        while let Some(load) = load_rx.recv().await {
            match conn.write(load.chunks).await {
                Some((started, _)) => {
                    let _ = load.started.send(started);
                }
                None => return,
            }
        }
    });
    let send = |chunks: Vec<Bytes>| -> Result<oneshot::Receiver<Instant>, String> {
        let (started, at) = oneshot::channel();
        loads
            .send(Load { chunks, started })
            .map_err(|_| "the fake server's writer stopped".to_owned())?;
        Ok(at)
    };

    // 1. Fill the table.
    let t = Instant::now();
    drop(send(online_load(args.resources))?);
    wait_online(&reader, |n| n >= args.resources).await?;
    eprintln!("{} resources online in {:.1?}", args.resources, t.elapsed());

    // 2. Response time.
    let client = reqwest::Client::new();
    let (first, body) = fetch(&client, &url).await?;
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    let listed = json["resources"].as_array().map_or(0, Vec::len);
    if listed != args.resources {
        return Err(format!(
            "listed {listed} resources, expected {}",
            args.resources
        ));
    }
    let mut times = vec![first.as_secs_f64()];
    for _ in 0..9 {
        times.push(fetch(&client, &url).await?.0.as_secs_f64());
    }
    let (min, max) = times
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
    let med = median(&mut times);
    // The part of it the presence owner spends: the copy between two commits.
    let mut copies = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let view = reader.table().await.map_err(|e| e.to_string())?;
        copies.push(t.elapsed().as_secs_f64());
        drop(view);
    }
    let copy_med = median(&mut copies);

    // 3. Throughput, idle and under the request loop, alternating.
    let mut idle = Vec::new();
    let mut loaded = Vec::new();
    let mut served = 0usize;
    for round in 0..args.rounds * 2 {
        let under_load = round % 2 == 1;
        let marker = format!("marker{round}@localhost/m");
        let load = churn_load(args.events, &marker);
        let (halt, mut halted) = watch::channel(false);
        let looper = under_load.then(|| {
            let (client, url) = (client.clone(), url.clone());
            let pause = Duration::from_millis(args.interval_ms);
            tokio::spawn(async move {
                let mut n = 0usize;
                while !*halted.borrow_and_update() {
                    if fetch(&client, &url).await.is_err() {
                        break;
                    }
                    n += 1;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                n
            })
        });
        let started = send(load)?;
        let end = wait_user(&reader, &format!("marker{round}@localhost")).await?;
        let start = started.await.map_err(|_| "load never started")?;
        let _ = halt.send(true);
        if let Some(l) = looper {
            served += l.await.unwrap_or(0);
        }
        let rate = (args.events + 1) as f64 / (end - start).as_secs_f64();
        eprintln!(
            "round {round}: {} {rate:.0} events/s",
            if under_load { "loaded" } else { "idle  " }
        );
        if under_load {
            loaded.push(rate);
        } else {
            idle.push(rate);
        }
    }
    let (idle_med, loaded_med) = (median(&mut idle), median(&mut loaded));
    let drop_pct = (1.0 - loaded_med / idle_med) * 100.0;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), herald).await;

    println!("bench_http ({}; {} cores)", cpu_model(), num_cores());
    println!("| measurement | figure |");
    println!("|---|---|");
    println!(
        "| GET /v1/presence, {} resources ({:.1} MiB JSON), 10 requests | median {:.0} ms, min {:.0} ms, max {:.0} ms |",
        args.resources,
        body.len() as f64 / (1024.0 * 1024.0),
        med * 1000.0,
        min * 1000.0,
        max * 1000.0
    );
    println!(
        "| of which the presence owner's table copy (`PresenceReader::table`), 10 calls | median {:.1} ms |",
        copy_med * 1000.0
    );
    println!(
        "| presence pipeline, idle (median of {}) | {idle_med:.0} events/s |",
        idle.len()
    );
    println!(
        "| presence pipeline, /v1/presence served in a loop, {} (median of {}; {served} responses) | {loaded_med:.0} events/s |",
        if args.interval_ms == 0 { "back to back".to_owned() } else { format!("{} ms between requests", args.interval_ms) },
        loaded.len()
    );
    println!(
        "| drop under the request loop (target ≤ 10 %) | {drop_pct:.1} % {} |",
        if drop_pct <= 10.0 { "ok" } else { "MISS" }
    );
    Ok(())
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
