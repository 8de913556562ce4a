//! Who watches which room: one [`Watcher`] per (registration, room). A user's own room rules
//! (`push-room`) apply to each of the user's registrations; a registration's Tigase filter
//! (`<enable/>` with `tigase:push:filter:groupchat:0`) applies to that registration alone and,
//! for a room it names, replaces the user's rule.

use super::model::{RoomMode, UserPush};

/// One registration watching one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// The user (bare JID, lowercase).
    pub user: String,
    /// The registration ([`super::Registration::key`]).
    pub reg_key: String,
    /// The user's nick in the room.
    pub nick: String,
    /// `always` or `mentioned` (never `never`).
    pub mode: RoomMode,
    /// JIDs whose messages this registration does not push (Tigase `muted` filter): a room or
    /// a user's bare JID, lowercase.
    pub muted: Vec<String>,
}

/// Every (room, watcher) of `user`, rooms lowercase. A user without registrations watches
/// nothing (there is nowhere to push).
pub fn watchers_of(user: &str, push: &UserPush) -> Vec<(String, Watcher)> {
    let mut out = Vec::new();
    for reg in &push.registrations {
        let muted: Vec<String> = reg
            .filter
            .iter()
            .flat_map(|f| f.muted.iter())
            .map(|j| j.to_lowercase())
            .collect();
        let own: Vec<_> = reg.filter_rooms().collect();
        let rules = own.iter().copied().chain(
            push.rooms
                .iter()
                .filter(|r| !own.iter().any(|o| o.room.eq_ignore_ascii_case(&r.room))),
        );
        for rule in rules {
            if rule.mode == RoomMode::Never {
                continue;
            }
            out.push((
                rule.room.to_lowercase(),
                Watcher {
                    user: user.to_owned(),
                    reg_key: reg.key(),
                    nick: rule.nick.clone(),
                    mode: rule.mode,
                    muted: muted.clone(),
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::model::{Filter, Registration, RoomRule};

    fn rule(room: &str, nick: &str, mode: RoomMode) -> RoomRule {
        RoomRule {
            room: room.into(),
            nick: nick.into(),
            mode,
        }
    }

    #[test]
    fn user_rules_apply_to_every_registration_and_filters_to_their_own() {
        let mut u = UserPush::default();
        u.set_room(rule("a@muc.example", "al", RoomMode::Always));
        u.set_room(rule("b@muc.example", "al", RoomMode::Mentioned));
        u.upsert(Registration::new("p.example", "phone", 1), 5);
        let mut tablet = Registration::new("p.example", "tablet", 1);
        tablet.filter = Some(Filter {
            rooms: vec![
                rule("B@muc.example", "alice", RoomMode::Always),
                rule("a@muc.example", "al", RoomMode::Never),
            ],
            muted: vec!["Spam@muc.example".into()],
        });
        u.upsert(tablet, 5);
        let got = watchers_of("al@example.org", &u);
        let seen: Vec<_> = got
            .iter()
            .map(|(room, w)| (room.as_str(), w.reg_key.as_str(), w.nick.as_str(), w.mode))
            .collect();
        assert_eq!(
            seen,
            [
                ("a@muc.example", "p.example<phone", "al", RoomMode::Always),
                (
                    "b@muc.example",
                    "p.example<phone",
                    "al",
                    RoomMode::Mentioned
                ),
                (
                    "b@muc.example",
                    "p.example<tablet",
                    "alice",
                    RoomMode::Always
                ),
            ]
        );
        assert_eq!(got[2].1.muted, ["spam@muc.example"]);
        assert!(got[0].1.muted.is_empty());
    }

    #[test]
    fn rooms_without_a_registration_are_watched_by_nobody() {
        let mut u = UserPush::default();
        u.set_room(rule("a@muc.example", "al", RoomMode::Always));
        assert!(watchers_of("al@example.org", &u).is_empty());
    }
}
