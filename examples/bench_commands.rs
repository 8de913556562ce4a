//! Benchmark of herald's push registration path.
//!
//! ```text
//! cargo run --release --example bench_commands -- [--round-trips N] [--registrations N]
//! ```
//!
//! 1. **Registrations per second into the store**: `Push::register` (validated, written as one
//!    record per user, flushed before it returns, as every command does before it answers),
//!    one writer at a time and 64 writers at once (distinct users), on a sled store in a
//!    temporary directory.
//! 2. **Command round trip over loopback**: a real Prosody (tests/support/prosody.rs), herald
//!    in-process, and a real c2s client (tests/support/client.rs) that sends one-shot
//!    `push-register` commands (a submitted form in the `execute`, so one round trip each, each
//!    one a durable write) and `push-list` commands, one at a time; latency from sending the IQ
//!    to reading herald's `completed` answer, through Prosody both ways.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::push::{Push, Registration};
use herald::xmpp::iq_handlers::IqHandlers;
use herald::xmpp::routes::LinkStatus;
use support::adhoc::{command, note, submit, wait_until_answering};
use support::client::C2s;
use support::herald::Config;
use support::prosody::Prosody;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort_unstable();
    println!(
        "{what}: n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        d.len(),
        pct(&d, 0.5),
        pct(&d, 0.9),
        pct(&d, 0.99),
        d[d.len() - 1]
    );
}

async fn store_rate(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let settings = herald::config::load_str(&format!(
        "[component]\njid = \"herald.localhost\"\nsecret = \"s\"\n[store]\npath = '{}'\n",
        dir.path().display()
    ))
    .unwrap();
    let store = herald::store::Store::open(dir.path(), 100, 16 << 20).unwrap();
    let push = Arc::new(Push::new(
        settings.push.clone(),
        store.push_store().unwrap(),
    ));
    let reg = |i: usize| {
        let mut r = Registration::new(
            "push.example.net",
            &format!("node-{i}"),
            herald::push::now_ms(),
        );
        r.options = Some(format!("<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>{i:032}</value></field></x>"));
        r
    };
    let t = Instant::now();
    for i in 0..n {
        push.register(&format!("seq{i}@localhost"), reg(i))
            .await
            .unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "store, 1 writer: {n} registrations in {secs:.2}s = {:.0}/s",
        n as f64 / secs
    );
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let push = push.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(64) {
                push.register(&format!("par{i}@localhost"), reg(i))
                    .await
                    .unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = t.elapsed().as_secs_f64();
    println!(
        "store, 64 writers: {n} registrations in {secs:.2}s = {:.0}/s",
        n as f64 / secs
    );
}

async fn round_trips(n: usize) {
    let p = Prosody::builder().users(&[("alice", "pa")]).start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        dir.path(),
    )
    .xmpp_sink()
    .settings();
    let (stop, signal) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let herald = tokio::spawn(herald::app::run_with(
        settings,
        IqHandlers::new(),
        async move {
            let _ = signal.await;
        },
        |o| {
            let _ = tx.send(o.status);
        },
    ));
    let mut status = rx.await.unwrap();
    status
        .wait_for(|s| matches!(s, LinkStatus::Up { .. }))
        .await
        .unwrap();
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/bench", "pa").await;
    wait_until_answering(&mut alice, "herald.localhost", Duration::from_secs(10)).await;
    for (what, node) in [
        ("push-register (one-shot, durable write)", "push-register"),
        ("push-list", "push-list"),
    ] {
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let form = (node == "push-register").then(|| {
                submit(&[
                    ("jid", &["push.example.net"]),
                    ("node", &[&format!("n{}", i % 5)]),
                    ("secret", &["s3cr3t"]),
                ])
            });
            let t = Instant::now();
            let a = command(
                &mut alice,
                "herald.localhost",
                node,
                None,
                None,
                form.as_deref(),
            )
            .await;
            let d = t.elapsed();
            note(&a);
            if i >= 20 {
                lat.push(d);
            }
        }
        report(&format!("round trip via Prosody, {what}"), lat);
    }
    alice.close().await;
    let _ = stop.send(());
    herald.await.unwrap().unwrap();
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
}

#[tokio::main]
async fn main() {
    store_rate(arg("--registrations", 2000)).await;
    round_trips(arg("--round-trips", 500)).await;
}
