//! Self-ping and rejoin hints against a real Prosody: herald silently loses its occupancy
//! (the room forgets it through Prosody's admin shell, nobody is told) and, by its self-ping
//! (Prosody answers `not-acceptable` itself), finds out and is in the room again within
//! `self_ping_idle` + `self_ping_timeout`, handing the room's messages on again; and a user
//! whose client bounced a stanza is removed by Prosody with status 333 while still online and
//! gets herald's invitation back to the room.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use herald::muc::{RoomState, RoomStatus, RoomsView};
use support::adhoc::{command, note, submit, wait_until_answering};
use support::client::{to_xml, C2s};
use support::groupchat::{self as muc, is_unavailable, status_codes, RoomConfig};
use support::herald::{Config, Herald, Logs};
use support::prosody::Prosody;

const HERALD: &str = "herald.localhost";
const T: Duration = Duration::from_secs(15);
const IDLE: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(2);

async fn prosody() -> Prosody {
    Prosody::builder()
        .users(&[("alice", "pa"), ("carol", "pc")])
        .modules(&["admin_shell"])
        .start()
        .await
}

async fn start_herald(p: &Prosody, store: &std::path::Path) -> (Herald, RoomsView) {
    let toml = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        store,
    )
    .fast_reconnect()
    .toml();
    let muc = format!(
        "\n[muc]\nself_ping_idle = \"{}s\"\nself_ping_delay = \"1s\"\nself_ping_timeout = \"{}s\"\n",
        IDLE.as_secs(),
        TIMEOUT.as_secs()
    );
    let settings = herald::config::load_str(&format!("{toml}{muc}")).unwrap();
    let (herald, observers) = Herald::start_observed(settings).await;
    (herald, observers.rooms)
}

async fn watch_room(c: &mut C2s, room: &str) {
    wait_until_answering(c, HERALD, T).await;
    let form = submit(&[("jid", &["pubsub.localhost"]), ("node", &["x"])]);
    let a = command(c, HERALD, "push-register", None, None, Some(&form)).await;
    assert!(note(&a).starts_with("Registered"), "{}", note(&a));
    let form = submit(&[
        ("room", &[room]),
        ("nick", &["alice"]),
        ("mode", &["always"]),
    ]);
    command(c, HERALD, "push-room", None, None, Some(&form)).await;
}

async fn until(view: &RoomsView, room: &str, pred: impl Fn(&RoomStatus) -> bool) -> RoomStatus {
    match tokio::time::timeout(T, view.wait_for(room, |s| s.is_some_and(&pred))).await {
        Ok(Some(Some(s))) => s,
        _ => panic!("{room} never got there; it is {:?}", view.status(room)),
    }
}

/// Runs Lua in the running Prosody through its admin shell (`prosodyctl shell`).
fn admin_lua(p: &Prosody, lua: &str) -> String {
    let out = Command::new("prosodyctl")
        .arg("--config")
        .arg(&p.config_path)
        .arg("shell")
        .arg(format!("> {lua}"))
        .output()
        .expect("prosodyctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "prosodyctl shell failed: {text}");
    text
}

#[tokio::test]
async fn herald_finds_out_it_was_silently_dropped_and_joins_again() {
    let logs = Logs::default();
    let _guard = logs.install();
    let p = prosody().await;
    let room = "dev@muc.localhost";
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/desk", "pc").await;
    muc::create_room(
        &mut carol,
        room,
        "carol",
        RoomConfig {
            persistent: true,
            ..RoomConfig::default()
        },
    )
    .await;
    let store = tempfile::tempdir().unwrap();
    let (herald, view) = start_herald(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    watch_room(&mut alice, room).await;
    let joined = until(&view, room, |s| s.state == RoomState::Joined).await;
    assert_eq!(joined.health.last_error, None);
    // The check after the login: Prosody answers the self-ping itself, herald is in.
    let pinged = until(&view, room, |s| s.health.last_ping.is_some()).await;
    assert_eq!(pinged.health.last_ping.unwrap().1, "joined (result)");

    // The room forgets herald; nobody gets a presence about it.
    admin_lua(
        &p,
        &format!(
            "local r = prosody.hosts['muc.localhost'].modules.muc.get_room_from_jid('{room}'); \
             local o = r:get_occupant_by_nick('{room}/herald'); o.role = nil; r:save_occupant(o); \
             return 'forgotten'"
        ),
    );
    let forgotten = Instant::now();
    let back = until(&view, room, |s| {
        s.state == RoomState::Joined && s.health.last_error.is_some()
    })
    .await;
    let took = forgotten.elapsed();
    assert_eq!(
        back.health.last_error.unwrap().1,
        "self-ping: not joined (not-acceptable)"
    );
    // idle, its jitter (a tenth), the answer and the join.
    assert!(
        took < IDLE + IDLE / 10 + TIMEOUT,
        "back in the room after {took:?}"
    );
    let seen = muc::next_occupant(&mut carol, room, "herald", T, |p| !is_unavailable(p)).await;
    assert!(seen.is_some(), "carol never saw herald come back");
    // The room's messages reach the push side again.
    muc::say_with_id(&mut carol, room, "after-rejoin", "still pushed?").await;
    assert!(
        logs.wait_for_lines(T, 1, |l| l.contains("groupchat message")
            && l.contains("after-rejoin"))
            .await,
        "the message after the rejoin did not reach the push side"
    );
    herald.stop_ok(T).await;
}

#[tokio::test]
async fn a_user_removed_with_333_while_online_is_invited_back() {
    let p = prosody().await;
    let room = "ops@muc.localhost";
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/desk", "pc").await;
    muc::create_room(
        &mut carol,
        room,
        "carol",
        RoomConfig {
            persistent: true,
            ..RoomConfig::default()
        },
    )
    .await;
    let store = tempfile::tempdir().unwrap();
    let (herald, view) = start_herald(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    alice.send_xml("<presence/>").await;
    watch_room(&mut alice, room).await;
    until(&view, room, |s| s.state == RoomState::Joined).await;
    muc::join(&mut alice, room, "alice").await;
    // Alice's client bounces a stanza from the room: Prosody removes her with 333.
    alice
        .send_xml(&format!(
            "<presence type='error' to='{room}/alice'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
        ))
        .await;
    let out = muc::next_occupant(&mut carol, room, "alice", T, is_unavailable)
        .await
        .expect("alice removed");
    assert!(status_codes(&out).contains(&333), "{}", to_xml(&out));
    let invite = alice
        .next_matching(T, |el| {
            el.name() == "message" && el.attr("from") == Some(HERALD)
        })
        .await
        .expect("no invitation from herald");
    let x = invite
        .get_child("x", "jabber:x:conference")
        .unwrap_or_else(|| panic!("not a direct invitation: {}", to_xml(&invite)));
    assert_eq!(x.attr("jid"), Some(room));
    assert!(
        x.attr("reason").unwrap_or_default().contains("dropped out"),
        "{}",
        to_xml(&invite)
    );
    herald.stop_ok(T).await;
}
