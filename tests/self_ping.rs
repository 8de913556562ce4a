//! XEP-0410 self-ping end to end on the in-process fake server playing a MUC service
//! (tests/support/fake_muc.rs): each row of the outcome table with scripted answers (herald
//! stays, or joins again through its join path), and at scale: 5 000 joined rooms all pinged
//! with the concurrency cap reached and never exceeded, then a reconnect that joins them all
//! again within the join cap.

#[path = "support/fake_muc.rs"]
mod fake_muc;
#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/herald.rs"]
mod herald_support;

use std::path::Path;
use std::time::Duration;

use fake_muc::{Muc, Reply};
use fake_server::FakeServer;
use herald::muc::{RoomState, RoomsView};
use herald::push::{Registration, RoomMode, RoomRule, UserPush};
use herald_support::{Config, Herald};

const SECRET: &str = "s3cr3t";
const HERALD: &str = "herald.localhost";

/// Writes `rooms` as watched rooms (50 per user, each user with one registration).
async fn seed(store: &Path, rooms: &[String]) {
    let s = herald::store::Store::open(store, 10, 1 << 24).unwrap();
    let push = s.push_store().unwrap();
    for (u, chunk) in rooms.chunks(50).enumerate() {
        let user = format!("user{u}@localhost");
        push.update(&user, |p: &mut UserPush, _| {
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

async fn start(server: &FakeServer, store: &Path, muc: &str) -> (Herald, RoomsView) {
    let toml = Config::new(HERALD, SECRET, server.addr, store)
        .fast_reconnect()
        .toml();
    let settings = herald::config::load_str(&format!("{toml}\n[muc]\n{muc}\n")).unwrap();
    let (herald, observers) = Herald::start_observed(settings).await;
    (herald, observers.rooms)
}

/// One room per row of the table, named after it, with the answers its pings get.
fn table() -> Vec<(&'static str, Vec<Reply>, u32, u32)> {
    use Reply::*;
    // (room, scripted answers, pings, joins) once everything settled.
    vec![
        ("result", vec![Result], 1, 1),
        ("unavailable", vec![Error("service-unavailable")], 1, 1),
        (
            "not-implemented",
            vec![Error("feature-not-implemented")],
            1,
            1,
        ),
        // Joined, checked again after the delay (answered by the default: result).
        ("item-not-found", vec![Error("item-not-found")], 2, 1),
        // Three undecided in a row: out of the room, joined again.
        (
            "remote-not-found",
            vec![Error("remote-server-not-found"); 3],
            3,
            2,
        ),
        (
            "remote-timeout",
            vec![Error("remote-server-timeout"); 3],
            3,
            2,
        ),
        // Two undecided, then a result: it stays.
        (
            "undecided-twice",
            vec![Error("remote-server-timeout"); 2],
            3,
            1,
        ),
        ("timeout", vec![Silent; 3], 3, 2),
        ("not-acceptable", vec![Error("not-acceptable")], 1, 2),
        ("not-allowed", vec![Error("not-allowed")], 1, 2),
        ("bad-request", vec![Error("bad-request")], 1, 2),
    ]
}

#[tokio::test]
async fn each_row_of_the_xep_0410_table() {
    let dir = tempfile::tempdir().unwrap();
    let rows = table();
    let rooms: Vec<String> = rows
        .iter()
        .map(|r| format!("{}@muc.localhost", r.0))
        .collect();
    seed(dir.path(), &rooms).await;
    let mut server = FakeServer::start(SECRET).await;
    let muc = Muc::new(Duration::ZERO, Duration::ZERO);
    for ((_, replies, ..), room) in rows.iter().zip(&rooms) {
        muc.script(room, replies);
    }
    let (herald, view) = start(
        &server,
        dir.path(),
        "self_ping_idle = \"1h\"\nself_ping_delay = \"200ms\"\nself_ping_timeout = \"300ms\"",
    )
    .await;
    let conn = server
        .next_connection(Duration::from_secs(10))
        .await
        .unwrap();
    let (_task, _cmds) = fake_muc::serve(conn, muc.clone());
    let settled = muc
        .wait(Duration::from_secs(20), |s| {
            rows.iter().zip(&rooms).all(|((_, _, pings, joins), room)| {
                s.pings(room) >= *pings && s.joins(room) >= *joins
            })
        })
        .await;
    let (seen, want) = {
        let s = muc.state();
        let seen: Vec<(&str, u32, u32)> = rows
            .iter()
            .zip(&rooms)
            .map(|((name, ..), room)| (*name, s.pings(room), s.joins(room)))
            .collect();
        let want: Vec<(&str, u32, u32)> = rows.iter().map(|(n, _, p, j)| (*n, *p, *j)).collect();
        (seen, want)
    };
    assert!(settled, "{seen:?}");
    assert_eq!(seen, want);
    // The service counts a ping when it reads it; herald records the outcome when the answer
    // is back: wait for both.
    for room in &rooms {
        let st = tokio::time::timeout(
            Duration::from_secs(5),
            view.wait_for(room, |s| {
                s.is_some_and(|s| s.state == RoomState::Joined && s.health.last_ping.is_some())
            }),
        )
        .await;
        assert!(
            matches!(st, Ok(Some(Some(_)))),
            "{room}: {:?}",
            view.status(room)
        );
    }
    let st = view.status("not-acceptable@muc.localhost").unwrap();
    assert_eq!(
        st.health.last_ping.unwrap().1,
        "not joined (not-acceptable)"
    );
    assert_eq!(
        st.health.last_error.unwrap().1,
        "self-ping: not joined (not-acceptable)"
    );
    assert_eq!(st.health.failing_since_ms, None, "back in the room");
    let st = view.status("timeout@muc.localhost").unwrap();
    assert_eq!(
        st.health.last_error.unwrap().1,
        "self-ping undecided 3 times in a row (timeout)"
    );
    herald.stop_ok(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_room_that_forgot_herald_is_joined_again_after_the_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let room = "quiet@muc.localhost".to_owned();
    seed(dir.path(), std::slice::from_ref(&room)).await;
    let mut server = FakeServer::start(SECRET).await;
    let muc = Muc::new(Duration::ZERO, Duration::ZERO);
    let (herald, view) = start(
        &server,
        dir.path(),
        "self_ping_idle = \"1s\"\nself_ping_delay = \"1s\"",
    )
    .await;
    let conn = server
        .next_connection(Duration::from_secs(10))
        .await
        .unwrap();
    let (_task, _cmds) = fake_muc::serve(conn, muc.clone());
    // The first check after the login: herald is in.
    assert!(
        muc.wait(Duration::from_secs(10), |s| s.pings(&room) >= 1)
            .await
    );
    assert_eq!(muc.state().joins(&room), 1);
    muc.state().forget(&room);
    let t = std::time::Instant::now();
    assert!(
        muc.wait(Duration::from_secs(10), |s| s.joins(&room) >= 2)
            .await
    );
    // idle (1 s) + its jitter (0.1 s) + the answer: herald was back well within idle + timeout
    // (31 s); 10 s leaves room for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let st = tokio::time::timeout(
        Duration::from_secs(5),
        view.wait_for(&room, |s| s.is_some_and(|s| s.state == RoomState::Joined)),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(
        st.health.last_ping.unwrap().1,
        "not joined (not-acceptable)"
    );
    herald.stop_ok(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn five_thousand_rooms_are_pinged_within_the_cap_and_rejoined_after_a_reconnect() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let rooms: Vec<String> = (0..N).map(|i| format!("r{i}@muc.localhost")).collect();
    seed(dir.path(), &rooms).await;
    let mut server = FakeServer::start(SECRET).await;
    // Answers to pings wait 50 ms: 50 at once answer 1 000 a second, fewer than come due.
    let muc = Muc::new(Duration::from_millis(2), Duration::from_millis(50));
    let (herald, _view) = start(
        &server,
        dir.path(),
        "self_ping_idle = \"1h\"\nself_ping_delay = \"1s\"",
    )
    .await;
    let conn = server
        .next_connection(Duration::from_secs(10))
        .await
        .unwrap();
    let (_task, cmds) = fake_muc::serve(conn, muc.clone());
    let all_pinged = muc
        .wait(Duration::from_secs(120), |s| s.rooms_pinged(1) == N)
        .await;
    {
        let s = muc.state();
        assert!(all_pinged, "{} of {N} rooms pinged", s.pings.len());
        assert_eq!(
            s.max_pings_out, 50,
            "the default cap, reached and never exceeded"
        );
        assert!(s.max_joins_out <= 16, "joins at once: {}", s.max_joins_out);
        assert!(rooms.iter().all(|r| s.joins(r) == 1 && s.pings(r) == 1));
    }
    // The server goes away; herald logs in again and joins every room again.
    cmds.send(fake_muc::Cmd::Drop).unwrap();
    let conn = server
        .next_connection(Duration::from_secs(10))
        .await
        .unwrap();
    muc.state().max_joins_out = 0;
    let (_task, _cmds) = fake_muc::serve(conn, muc.clone());
    let rejoined = muc
        .wait(Duration::from_secs(120), |s| s.rooms_joined(2) == N)
        .await;
    {
        let s = muc.state();
        assert!(
            rejoined,
            "{} rooms rejoined",
            rooms.iter().filter(|r| s.joins(r) >= 2).count()
        );
        assert!(s.max_joins_out <= 16, "joins at once: {}", s.max_joins_out);
        assert_eq!(s.max_joins_out, 16, "the join cap was reached");
    }
    herald.stop_ok(Duration::from_secs(10)).await;
}
