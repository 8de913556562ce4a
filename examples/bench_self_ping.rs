//! Benchmark of herald's self-ping (XEP-0410) of the rooms it is in.
//!
//! ```text
//! cargo run --release --example bench_self_ping -- [--rooms N] [--window SECONDS]
//! ```
//!
//! herald in-process against the fake XEP-0114 server playing a MUC service
//! (`tests/support/fake_muc.rs`, answers at once), with N watched rooms (default 10 000) and the
//! default `[muc]` settings (idle 15 min, delay 60 s, cap 50):
//! 1. **Join**: time until herald is in every room (join cap 16).
//! 2. **Memory per room**: the process's resident memory after the joins minus before herald
//!    started, divided by N (herald's rooms, view, watch index and schedule, and the fake
//!    service's bookkeeping, so an upper bound).
//! 3. **The check after the login**: the first self-ping of every room (`self_ping_delay` after
//!    its join), all answered.
//! 4. **Steady state**: process CPU time (user + system, all threads, the fake service
//!    included) over a window with every room joined and quiet, as a share of one core.
//! 5. **Rejoin after a reconnect**: the server drops the stream; time from the drop until
//!    herald is in every room again.

#[allow(dead_code)]
#[path = "support/bench_common.rs"]
mod bench_common;
#[path = "../tests/support/fake_muc.rs"]
mod fake_muc;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::time::{Duration, Instant};

use bench_common::{cpu_model, cpu_seconds, mib, JID, SECRET};
use fake_muc::Muc;
use fake_server::FakeServer;
use herald::push::{Registration, RoomMode, RoomRule, UserPush};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

#[tokio::main]
async fn main() {
    let n = arg("--rooms", 10_000) as usize;
    let window = Duration::from_secs(arg("--window", 30));
    let dir = tempfile::tempdir().unwrap();
    let rooms: Vec<String> = (0..n).map(|i| format!("r{i}@muc.localhost")).collect();
    {
        let s = herald::store::Store::open(dir.path(), 10, 1 << 24).unwrap();
        let push = s.push_store().unwrap();
        for (u, chunk) in rooms.chunks(50).enumerate() {
            push.update(&format!("user{u}@localhost"), |p: &mut UserPush, _| {
                p.upsert(Registration::new("push.example", "n", 1), 5);
                for room in chunk {
                    p.set_room(RoomRule {
                        room: room.clone(),
                        nick: format!("u{u}"),
                        mode: RoomMode::Always,
                    });
                }
                Ok::<(), ()>(())
            })
            .await
            .unwrap()
            .unwrap();
        }
        s.flush().await.unwrap();
    }
    let mut server = FakeServer::start(SECRET).await;
    let toml = format!(
        "[component]\njid = \"{JID}\"\nsecret = \"{SECRET}\"\nserver = \"{}\"\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n\n[store]\npath = '{}'\n\n[http]\nlisten = \"\"\n",
        server.addr,
        dir.path().display()
    );
    let settings = herald::config::load_str(&toml).unwrap();
    let muc = Muc::new(Duration::ZERO, Duration::ZERO);
    let rss0 = rss_bytes();
    let (stop, signal) = tokio::sync::oneshot::channel::<()>();
    let herald = tokio::spawn(herald::app::run(settings, async move {
        let _ = signal.await;
    }));
    let t0 = Instant::now();
    let conn = server
        .next_connection(Duration::from_secs(30))
        .await
        .unwrap();
    let (_t, cmds) = fake_muc::serve(conn, muc.clone());
    assert!(
        muc.wait(Duration::from_secs(3600), |s| s.rooms_joined(1) == n)
            .await
    );
    let joined_in = t0.elapsed();
    let per_room = (rss_bytes() - rss0) / n as f64;
    assert!(
        muc.wait(Duration::from_secs(3600), |s| s.rooms_pinged(1) == n)
            .await
    );
    let pinged_in = t0.elapsed();
    let max_out = muc.state().max_pings_out;
    // Quiet from here on: the next pings are 15 minutes away.
    let (cpu0, w0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (cpu_seconds() - cpu0) / w0.elapsed().as_secs_f64();
    let pings_in_window = muc.state().rooms_pinged(2);
    let t1 = Instant::now();
    cmds.send(fake_muc::Cmd::Drop).unwrap();
    let conn = server
        .next_connection(Duration::from_secs(30))
        .await
        .unwrap();
    muc.state().max_joins_out = 0;
    let (_t2, _cmds) = fake_muc::serve(conn, muc.clone());
    assert!(
        muc.wait(Duration::from_secs(3600), |s| s.rooms_joined(2) == n)
            .await
    );
    let rejoined_in = t1.elapsed();
    let max_joins = muc.state().max_joins_out;
    println!("cpu: {}", cpu_model());
    println!("rooms: {n}");
    println!("joined all in {:.1} s", joined_in.as_secs_f64());
    println!(
        "memory per room: {:.0} bytes (RSS {} → {})",
        per_room,
        mib(rss0),
        mib(rss_bytes())
    );
    println!(
        "first self-ping of every room answered {:.1} s after start (at most {max_out} at once)",
        pinged_in.as_secs_f64()
    );
    println!(
        "steady state: {:.2} % of a core over {} s ({} rooms pinged again)",
        cpu * 100.0,
        window.as_secs(),
        pings_in_window
    );
    println!(
        "rejoined all after a reconnect in {:.1} s (at most {max_joins} joins at once)",
        rejoined_in.as_secs_f64()
    );
    let _ = stop.send(());
    let _ = herald.await;
}
