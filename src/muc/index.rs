//! Which rooms herald must be in: every room with at least one [`Watcher`], and who watches it,
//! kept up to date one user at a time as their records change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::push::watchers::{watchers_of, Watcher};
use crate::push::UserPush;

/// Room → its watchers (one per registration), and each user's share of them.
#[derive(Debug, Default)]
pub struct WatchIndex {
    by_room: BTreeMap<String, Arc<[Watcher]>>,
    /// The rooms each user watches.
    by_user: HashMap<String, BTreeSet<String>>,
}

impl WatchIndex {
    /// The index of every user's watchers.
    pub fn build(users: impl Iterator<Item = (String, UserPush)>) -> WatchIndex {
        let mut rooms: BTreeMap<String, Vec<Watcher>> = BTreeMap::new();
        let mut by_user: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (user, push) in users {
            for (room, w) in watchers_of(&user, &push) {
                by_user
                    .entry(user.clone())
                    .or_default()
                    .insert(room.clone());
                rooms.entry(room).or_default().push(w);
            }
        }
        WatchIndex {
            by_room: rooms.into_iter().map(|(r, w)| (r, w.into())).collect(),
            by_user,
        }
    }

    /// Replaces `user`'s watchers with those of `push`; returns the rooms whose watchers changed.
    pub fn set_user(&mut self, user: &str, push: &UserPush) -> Vec<String> {
        let mut mine: BTreeMap<String, Vec<Watcher>> = BTreeMap::new();
        for (room, w) in watchers_of(user, push) {
            mine.entry(room).or_default().push(w);
        }
        let old = self.by_user.remove(user).unwrap_or_default();
        let affected: BTreeSet<String> = old.iter().chain(mine.keys()).cloned().collect();
        let mut changed = Vec::new();
        for room in affected {
            let before = self.by_room.get(&room).cloned();
            let mut list: Vec<Watcher> = before
                .iter()
                .flat_map(|w| w.iter())
                .filter(|w| w.user != user)
                .cloned()
                .collect();
            list.extend(mine.get(&room).into_iter().flatten().cloned());
            if before.as_deref() == Some(list.as_slice()) {
                continue;
            }
            if list.is_empty() {
                self.by_room.remove(&room);
            } else {
                self.by_room.insert(room.clone(), list.into());
            }
            changed.push(room);
        }
        if !mine.is_empty() {
            self.by_user
                .insert(user.to_owned(), mine.into_keys().collect());
        }
        changed
    }

    /// `room`'s watchers, if anyone watches it.
    pub fn watchers(&self, room: &str) -> Option<&Arc<[Watcher]>> {
        self.by_room.get(room)
    }

    /// Every watched room.
    pub fn rooms(&self) -> impl Iterator<Item = (&String, &Arc<[Watcher]>)> {
        self.by_room.iter()
    }

    pub fn len(&self) -> usize {
        self.by_room.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_room.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{Registration, RoomMode, RoomRule};

    fn user(rooms: &[(&str, RoomMode)]) -> UserPush {
        let mut u = UserPush::default();
        u.upsert(Registration::new("p.example", "phone", 1), 5);
        for (room, mode) in rooms {
            u.set_room(RoomRule {
                room: (*room).into(),
                nick: "al".into(),
                mode: *mode,
            });
        }
        u
    }

    #[test]
    fn rooms_come_and_go_with_their_watchers() {
        let mut idx = WatchIndex::build(
            [
                ("a@x".to_owned(), user(&[("Dev@muc.x", RoomMode::Always)])),
                (
                    "b@x".to_owned(),
                    user(&[("dev@muc.x", RoomMode::Mentioned)]),
                ),
            ]
            .into_iter(),
        );
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.watchers("dev@muc.x").unwrap().len(), 2);
        // a moves to another room: dev keeps b, ops appears.
        let changed = idx.set_user("a@x", &user(&[("ops@muc.x", RoomMode::Always)]));
        assert_eq!(changed, ["dev@muc.x", "ops@muc.x"]);
        assert_eq!(idx.watchers("dev@muc.x").unwrap()[0].user, "b@x");
        // The same again changes nothing.
        assert!(idx
            .set_user("a@x", &user(&[("ops@muc.x", RoomMode::Always)]))
            .is_empty());
        // b stops watching (never): dev is watched by nobody.
        let changed = idx.set_user("b@x", &user(&[("dev@muc.x", RoomMode::Never)]));
        assert_eq!(changed, ["dev@muc.x"]);
        assert!(idx.watchers("dev@muc.x").is_none());
        // Removing a's record entirely.
        idx.set_user("a@x", &UserPush::default());
        assert!(idx.is_empty());
    }
}
