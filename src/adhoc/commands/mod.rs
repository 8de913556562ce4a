//! herald's commands, one per file. Node names and field `var`s are the public interface.
//!
//! | node | who | fields |
//! |---|---|---|
//! | `push-register` | users | `jid`, `node`, `secret`, `label` |
//! | `push-list` | users | (none: completes at once with a table) |
//! | `push-unregister` | users | `registrations` (list-multi) |
//! | `push-room` | users | `room`, `nick`, `mode` |
//! | `admin-stats` | admins | (none) |
//! | `admin-user` | admins | `user`, then `remove` (list-multi) |
//! | `admin-rooms` | admins | (none: completes at once with every room's state and health) |

pub mod admin_rooms;
pub mod admin_stats;
pub mod admin_user;
pub mod push_list;
pub mod push_register;
pub mod push_room;
pub mod push_unregister;

use std::sync::{Arc, OnceLock};

use crate::muc::RoomsView;
use crate::presence::query::PresenceReader;
use crate::push::{Push, UserPush};
use crate::store::Store;

use super::Commands;

/// What the commands work on.
pub struct Ctx {
    pub push: Push,
    /// For the sinks' backlogs.
    pub store: Store,
    /// Set once the presence service runs (`admin-stats` reads the online count).
    pub presence: OnceLock<PresenceReader>,
    /// Set once the rooms owner runs (`push-list` shows each room's state).
    pub rooms: OnceLock<RoomsView>,
}

/// Registers every command on `commands`.
pub fn install(commands: &mut Commands, ctx: Arc<Ctx>) {
    commands.add(push_register::PushRegister(ctx.clone()));
    commands.add(push_list::PushList(ctx.clone()));
    commands.add(push_unregister::PushUnregister(ctx.clone()));
    commands.add(push_room::PushRoom(ctx.clone()));
    commands.add(admin_stats::AdminStats(ctx.clone()));
    commands.add(admin_user::AdminUser(ctx.clone()));
    commands.add(admin_rooms::AdminRooms(ctx));
}

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds).
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The registrations table: columns and rows.
pub const REG_COLUMNS: &[(&str, &str)] = &[
    ("label", "Label"),
    ("jid", "App server"),
    ("node", "Node"),
    ("registered", "Registered"),
    ("last-push", "Last push"),
    ("errors", "Errors"),
];

pub fn reg_rows(u: &UserPush) -> Vec<Vec<String>> {
    u.registrations
        .iter()
        .map(|r| {
            vec![
                r.label.clone().unwrap_or_default(),
                r.jid.clone(),
                r.node.clone(),
                time(r.created_ms),
                r.last_push_ms.map(time).unwrap_or_default(),
                r.errors.to_string(),
            ]
        })
        .collect()
}

/// The rooms table: the user's rules, then each registration's own filter rules; `state` is
/// herald's state in the room (filled in by [`with_states`]).
pub const ROOM_COLUMNS: &[(&str, &str)] = &[
    ("room", "Room"),
    ("nick", "Nick"),
    ("mode", "Mode"),
    ("registration", "Only for"),
    ("state", "herald in the room"),
];

/// Fills the `state` column of `rows` ([`room_rows`]) from `rooms`: `joined`, `retrying: why`…
/// A room rule with mode `never` is not watched and shows none.
pub fn with_states(rows: &mut [Vec<String>], rooms: &RoomsView) {
    for row in rows {
        let state = rooms
            .status(&row[0])
            .map(|s| s.describe())
            .unwrap_or_default();
        row[4] = state;
    }
}

pub fn room_rows(u: &UserPush) -> Vec<Vec<String>> {
    let own = u.rooms.iter().map(|r| (r, String::new()));
    let filtered = u
        .registrations
        .iter()
        .flat_map(|reg| reg.filter_rooms().map(move |r| (r, reg.describe())));
    own.chain(filtered)
        .map(|(r, only)| {
            vec![
                r.room.clone(),
                r.nick.clone(),
                r.mode.as_str().to_owned(),
                only,
                String::new(),
            ]
        })
        .collect()
}
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_admin_rooms;
#[cfg(test)]
mod tests_rooms_admin;
