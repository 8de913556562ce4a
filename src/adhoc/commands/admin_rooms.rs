//! `admin-rooms` (admins only): every watched room with herald's state in it and its health:
//! nick, occupants, the last self-ping and what it said, since when herald has been out of the
//! room and the last error. Completes at once.

use std::sync::Arc;

use super::{time, Ctx};
use crate::adhoc::xml::{self, Note};
use crate::adhoc::{Command, CommandFuture, Input, Reply, Requester};
use crate::muc::{RoomState, RoomStatus};

pub const NODE: &str = "admin-rooms";

/// The table's columns.
pub const COLUMNS: &[(&str, &str)] = &[
    ("room", "Room"),
    ("state", "State"),
    ("nick", "Nick"),
    ("occupants", "Occupants"),
    ("last-ping", "Last self-ping"),
    ("ping-outcome", "Self-ping outcome"),
    ("failing-since", "Failing since"),
    ("last-error", "Last error"),
];

pub struct AdminRooms(pub Arc<Ctx>);

/// One row of the table (pure).
pub fn row(room: &str, s: &RoomStatus) -> Vec<String> {
    let h = &s.health;
    vec![
        room.to_owned(),
        s.describe(),
        s.nick.clone(),
        s.occupants.to_string(),
        h.last_ping
            .as_ref()
            .map(|(t, _)| time(*t))
            .unwrap_or_default(),
        h.last_ping
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or_default(),
        h.failing_since_ms.map(time).unwrap_or_default(),
        h.last_error
            .as_ref()
            .map(|(t, e)| format!("{} ({})", e, time(*t)))
            .unwrap_or_default(),
    ]
}

fn list(ctx: Arc<Ctx>) -> CommandFuture {
    Box::pin(async move {
        let all = ctx.rooms.get().map(|v| v.all()).unwrap_or_default();
        let rows: Vec<Vec<String>> = all.iter().map(|(r, s)| row(r, s)).collect();
        let count = |st: RoomState| all.iter().filter(|(_, s)| s.state == st).count();
        let note = format!(
            "{} watched room(s): {} joined, {} joining, {} rejoining, {} retrying, {} gone.",
            all.len(),
            count(RoomState::Joined),
            count(RoomState::Joining),
            count(RoomState::Rejoining),
            count(RoomState::Retrying),
            count(RoomState::Gone),
        );
        let result = xml::result("herald's rooms", Vec::new(), COLUMNS, &rows);
        Ok(Reply::Done {
            note: Note::info(note),
            results: vec![result],
        })
    })
}

impl Command for AdminRooms {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "herald's rooms and their health"
    }

    fn admin_only(&self) -> bool {
        true
    }

    fn start(&self, _: Requester) -> CommandFuture {
        list(self.0.clone())
    }

    fn submit(&self, _: Input) -> CommandFuture {
        list(self.0.clone())
    }
}
