//! `admin-rooms`: admins only; every room with its state and health.

use super::tests::*;
use crate::adhoc::CommandError;
use crate::muc::{RoomHealth, RoomState, RoomStatus, RoomsView};

#[tokio::test]
async fn admin_rooms_lists_every_room_with_its_health() {
    let e = env();
    let (tx, view) = RoomsView::channel();
    e.ctx.rooms.set(view).unwrap();
    tx.send_modify(|m| {
        m.insert(
            "dev@muc.example.org".into(),
            RoomStatus {
                state: RoomState::Joined,
                since_ms: 1_700_000_000_000,
                reason: None,
                nick: "herald".into(),
                occupants: 3,
                health: RoomHealth {
                    last_ping: Some((1_700_000_060_000, "joined (result)".into())),
                    failing_since_ms: None,
                    last_error: Some((1_699_999_000_000, "kicked from the room".into())),
                },
            },
        );
        m.insert(
            "ops@muc.example.org".into(),
            RoomStatus {
                state: RoomState::Rejoining,
                since_ms: 1_700_000_000_000,
                reason: Some("self-ping: not joined (not-acceptable)".into()),
                nick: "herald".into(),
                occupants: 0,
                health: RoomHealth {
                    last_ping: Some((1_700_000_000_000, "not joined (not-acceptable)".into())),
                    failing_since_ms: Some(1_700_000_000_000),
                    last_error: Some((
                        1_700_000_000_000,
                        "self-ping: not joined (not-acceptable)".into(),
                    )),
                },
            },
        );
    });
    assert!(matches!(
        e.run(ALICE, "admin-rooms", None, None).await,
        Err(CommandError::Forbidden(_))
    ));
    let done = e.run(ADMIN, "admin-rooms", None, None).await.unwrap();
    assert_eq!(
        note(&done),
        "2 watched room(s): 1 joined, 0 joining, 1 rejoining, 0 retrying, 0 gone."
    );
    let r = rows(&done, 0);
    let get = |row: usize, var: &str| {
        r[row]
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get(0, "room"), "dev@muc.example.org");
    assert_eq!(get(0, "state"), "joined");
    assert_eq!(get(0, "occupants"), "3");
    assert_eq!(get(0, "last-ping"), "2023-11-14T22:14:20Z");
    assert_eq!(get(0, "ping-outcome"), "joined (result)");
    assert_eq!(get(0, "failing-since"), "");
    assert_eq!(
        get(0, "last-error"),
        "kicked from the room (2023-11-14T21:56:40Z)"
    );
    assert_eq!(
        get(1, "state"),
        "rejoining: self-ping: not joined (not-acceptable)"
    );
    assert_eq!(get(1, "failing-since"), "2023-11-14T22:13:20Z");
}
