//! herald in the rooms users watch, against a real Prosody: a user's `push-room` makes herald
//! join the room (nick `herald`, no history), `push-list` says where herald is with each room,
//! herald comes back after a kick and after a reconnect, leaves a room nobody watches and every
//! room at a graceful stop, takes another nick when its own is taken, reports a members-only
//! room as retrying with the reason, and never creates a room that does not exist.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use std::time::Duration;

use herald::muc::{RoomState, RoomStatus, RoomsView};
use support::adhoc::{column, command, note, rows, submit, wait_until_answering};
use support::client::{to_xml, C2s};
use support::groupchat::{self as muc, is_unavailable, status_codes, RoomConfig};
use support::herald::{stop_servers, Config, Herald, Logs};
use support::prosody::Prosody;

const HERALD: &str = "herald.localhost";
const T: Duration = Duration::from_secs(15);

async fn prosody() -> Prosody {
    Prosody::builder()
        .users(&[("alice", "pa"), ("carol", "pc"), ("bob", "pb")])
        .start()
        .await
}

async fn start_herald(p: &Prosody, store: &std::path::Path) -> (Herald, RoomsView) {
    let settings = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        store,
    )
    .fast_reconnect()
    .settings();
    let (herald, observers) = Herald::start_observed(settings).await;
    (herald, observers.rooms)
}

/// Registers an app server for `c`'s user, so that its room rules have somewhere to push.
async fn register(c: &mut C2s) {
    wait_until_answering(c, HERALD, T).await;
    let form = submit(&[("jid", &["pubsub.localhost"]), ("node", &["x"])]);
    let a = command(c, HERALD, "push-register", None, None, Some(&form)).await;
    assert!(note(&a).starts_with("Registered"), "{}", note(&a));
}

async fn push_room(c: &mut C2s, room: &str, mode: &str) {
    let form = submit(&[("room", &[room]), ("nick", &["alice"]), ("mode", &[mode])]);
    command(c, HERALD, "push-room", None, None, Some(&form)).await;
}

/// What `push-list` says of `room`: the table's state column and the note.
async fn listed(c: &mut C2s, room: &str) -> (String, String) {
    let l = command(c, HERALD, "push-list", None, None, None).await;
    let r = rows(&l, 1);
    let i = column(&r, "room")
        .iter()
        .position(|x| x == room)
        .unwrap_or_else(|| panic!("{room} not listed"));
    (column(&r, "state")[i].clone(), note(&l))
}

async fn state(view: &RoomsView, room: &str, want: RoomState) -> RoomStatus {
    let got = tokio::time::timeout(
        T,
        view.wait_for(room, |s| s.is_some_and(|s| s.state == want)),
    )
    .await;
    match got {
        Ok(Some(Some(s))) => s,
        _ => panic!("{room} never {want:?}; it is {:?}", view.status(room)),
    }
}

fn herald_available(p: &minidom::Element) -> bool {
    !is_unavailable(p) && p.attr("type").is_none()
}

#[tokio::test]
async fn herald_joins_comes_back_after_kick_and_reconnect_and_leaves_at_stop() {
    let logs = Logs::default();
    let _guard = logs.install();
    let mut p = prosody().await;
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
    // Said before herald is in the room: history herald must not get.
    muc::say_with_id(&mut carol, room, "old-1", "before herald").await;

    let store = tempfile::tempdir().unwrap();
    let (herald, view) = start_herald(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    register(&mut alice).await;
    push_room(&mut alice, room, "always").await;

    let joined = muc::next_occupant(&mut carol, room, "herald", T, herald_available).await;
    assert!(joined.is_some(), "carol never saw herald join");
    let s = state(&view, room, RoomState::Joined).await;
    assert_eq!((s.nick.as_str(), s.occupants), ("herald", 2));
    let (st, text) = listed(&mut alice, room).await;
    assert_eq!(st, "joined");
    assert!(
        text.contains("dev@muc.localhost (always, as alice): joined"),
        "{text}"
    );
    // herald hands on what is said now, and got no history.
    muc::say_with_id(&mut carol, room, "new-1", "after herald").await;
    assert!(
        logs.wait_for_lines(T, 1, |l| l.contains("groupchat message")
            && l.contains("new-1"))
            .await,
        "the new message did not reach the push side"
    );
    assert_eq!(
        logs.count_lines(|l| l.contains("old-1")),
        0,
        "history was delivered"
    );

    // Kicked: herald is back (after a short backoff).
    muc::kick(&mut carol, room, "herald", "testing").await;
    let out = muc::next_occupant(&mut carol, room, "herald", T, is_unavailable)
        .await
        .expect("herald kicked");
    assert!(status_codes(&out).contains(&307), "{}", to_xml(&out));
    let back = muc::next_occupant(&mut carol, room, "herald", T, herald_available).await;
    assert!(back.is_some(), "herald did not rejoin after the kick");
    state(&view, room, RoomState::Joined).await;

    // The server restarts (the room is persistent): herald reconnects and is back in the room.
    carol.drop_tcp();
    alice.drop_tcp();
    let before = chrono::Utc::now().timestamp_millis();
    p.restart().await;
    let rejoined = view.wait_for(room, |s| {
        s.is_some_and(|s| s.state == RoomState::Joined && s.since_ms > before)
    });
    assert!(
        tokio::time::timeout(T, rejoined).await.is_ok(),
        "herald did not rejoin after the restart: {:?}",
        view.status(room)
    );
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/desk", "pc").await;
    let joined = muc::join(&mut carol, room, "carol").await;
    assert!(
        joined.nicks().contains(&"herald".to_owned()),
        "herald not in the room after the reconnect: {:?}",
        joined.nicks()
    );

    // A graceful stop: herald's unavailable reaches the room.
    herald.stop_ok(T).await;
    let left = muc::next_occupant(&mut carol, room, "herald", T, is_unavailable).await;
    assert!(left.is_some(), "herald left no unavailable in the room");
    carol.close().await;
    stop_servers(p).await;
}

#[tokio::test]
async fn nick_taken_members_only_missing_rooms_and_rules_removed() {
    let p = prosody().await;
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/desk", "pc").await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    let (taken, closed, ghost, open) = (
        "taken@muc.localhost",
        "closed@muc.localhost",
        "ghost@muc.localhost",
        "open@muc.localhost",
    );
    muc::create_room(
        &mut carol,
        taken,
        "carol",
        RoomConfig {
            persistent: false,
            ..RoomConfig::default()
        },
    )
    .await;
    muc::join(&mut bob, taken, "herald").await;
    muc::create_room(
        &mut carol,
        closed,
        "carol",
        RoomConfig {
            persistent: false,
            ..RoomConfig::default()
        },
    )
    .await;
    muc::configure(&mut carol, closed, &[("muc#roomconfig_membersonly", "1")]).await;
    muc::create_room(
        &mut carol,
        open,
        "carol",
        RoomConfig {
            persistent: false,
            ..RoomConfig::default()
        },
    )
    .await;

    let store = tempfile::tempdir().unwrap();
    let (herald, view) = start_herald(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    register(&mut alice).await;
    for room in [taken, closed, ghost, open] {
        push_room(&mut alice, room, "always").await;
    }

    // Its nick is taken: herald joins as herald_2.
    let s = state(&view, taken, RoomState::Joined).await;
    assert_eq!(s.nick, "herald_2");
    assert!(
        muc::next_occupant(&mut carol, taken, "herald_2", T, herald_available)
            .await
            .is_some(),
        "carol never saw herald_2"
    );

    // Members-only: retrying, and why.
    state(&view, closed, RoomState::Retrying).await;
    let (st, text) = listed(&mut alice, closed).await;
    assert_eq!(st, "retrying: members-only: herald is not a member");
    assert!(
        text.contains(
            "closed@muc.localhost (always, as alice): retrying: members-only: herald is not a member"
        ),
        "{text}"
    );

    // No such room: gone, and herald did not create it.
    state(&view, ghost, RoomState::Gone).await;
    // Its disco#info said so: herald never sent it a join.
    assert_eq!(
        listed(&mut alice, ghost).await.0,
        "gone: the room does not exist"
    );
    let info = muc::disco_info(&mut carol, ghost).await;
    assert_eq!(info.attr("type"), Some("error"), "{}", to_xml(&info));
    assert!(
        to_xml(&info).contains("item-not-found"),
        "{}",
        to_xml(&info)
    );
    // Once the room exists, a changed rule for it makes herald ask again, and join.
    muc::create_room(&mut carol, ghost, "carol", RoomConfig::default()).await;
    push_room(&mut alice, ghost, "mentioned").await;
    state(&view, ghost, RoomState::Joined).await;
    assert!(
        muc::next_occupant(&mut carol, ghost, "herald", T, herald_available)
            .await
            .is_some(),
        "carol never saw herald join the room once it existed"
    );

    // The rule removed: herald leaves the room.
    state(&view, open, RoomState::Joined).await;
    assert!(
        muc::next_occupant(&mut carol, open, "herald", T, herald_available)
            .await
            .is_some()
    );
    push_room(&mut alice, open, "never").await;
    let left = muc::next_occupant(&mut carol, open, "herald", T, is_unavailable)
        .await
        .expect("herald left the room nobody watches");
    assert!(!status_codes(&left).contains(&307));
    assert_eq!(view.status(open), None);

    herald.stop_ok(T).await;
    alice.close().await;
    bob.close().await;
    carol.close().await;
    stop_servers(p).await;
}
