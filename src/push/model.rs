//! What herald keeps per user: push registrations (XEP-0357 app server `jid` + `node`, the
//! publish-options as they came, times, error counter, optional Tigase filter rules) and room
//! rules (room → nick, mode). Pure: the rules here (update or insert, LRU eviction, room rule
//! changes) are unit-tested without a store.

use serde::{Deserialize, Serialize};

/// When a room's messages are pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// Every message.
    Always,
    /// Messages that mention the user (XEP-0372 reference or the nick in the body).
    Mentioned,
    /// None (removes the room from the rules).
    Never,
}

impl RoomMode {
    pub fn parse(s: &str) -> Option<RoomMode> {
        match s {
            "always" => Some(RoomMode::Always),
            "mentioned" => Some(RoomMode::Mentioned),
            "never" => Some(RoomMode::Never),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Always => "always",
            RoomMode::Mentioned => "mentioned",
            RoomMode::Never => "never",
        }
    }
}

/// One room rule: push messages of `room` (bare JID) where the user is `nick`, per `mode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRule {
    pub room: String,
    pub nick: String,
    pub mode: RoomMode,
}

/// The Tigase filters a client sent with `<enable/>`: this registration's own room rules
/// (`tigase:push:filter:groupchat:0`) and muted JIDs (`tigase:push:filter:muted:0`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub rooms: Vec<RoomRule>,
    pub muted: Vec<String>,
}

/// One registration of an app server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The app server (a bare JID).
    pub jid: String,
    pub node: String,
    /// A name the user gave it ("phone").
    pub label: Option<String>,
    /// The publish-options `<x xmlns='jabber:x:data'/>` as it came (FORM_TYPE included),
    /// serialised; sent back with every push. Holds the secret: never logged.
    pub options: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Registered, updated or pushed to: the LRU order.
    pub last_used_ms: i64,
    pub last_push_ms: Option<i64>,
    /// Push errors in a row.
    pub errors: u32,
    pub filter: Option<Filter>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("jid", &self.jid)
            .field("node", &self.node)
            .field("label", &self.label)
            .field("options", &self.options.as_ref().map(|_| "<redacted>"))
            .field("created_ms", &self.created_ms)
            .field("last_used_ms", &self.last_used_ms)
            .field("errors", &self.errors)
            .field("filter", &self.filter)
            .finish()
    }
}

impl Registration {
    /// A new registration made at `now_ms`.
    pub fn new(jid: &str, node: &str, now_ms: i64) -> Registration {
        Registration {
            jid: jid.to_owned(),
            node: node.to_owned(),
            label: None,
            options: None,
            created_ms: now_ms,
            last_used_ms: now_ms,
            last_push_ms: None,
            errors: 0,
            filter: None,
        }
    }

    /// `jid` + `node`: what identifies a registration (XEP-0357: the same pair again updates
    /// it).
    pub fn key(&self) -> String {
        format!("{}<{}", self.jid, self.node)
    }

    /// A short description for notes and lists: `label (jid, node)`.
    pub fn describe(&self) -> String {
        match &self.label {
            Some(l) => format!("{l} ({} node {})", self.jid, self.node),
            None => format!("{} node {}", self.jid, self.node),
        }
    }

    /// Rooms this registration watches through its own filter.
    pub fn filter_rooms(&self) -> impl Iterator<Item = &RoomRule> {
        self.filter.iter().flat_map(|f| f.rooms.iter())
    }
}

/// What happened to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// A new one; `evicted` is the least recently used one it replaced.
    Added { evicted: Option<Registration> },
    /// The same `jid` + `node` was registered: its options, label and filter were replaced.
    Updated,
}

/// One user's push data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPush {
    pub registrations: Vec<Registration>,
    pub rooms: Vec<RoomRule>,
}

impl UserPush {
    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty() && self.rooms.is_empty()
    }

    /// Adds `reg`, or updates the one with the same `jid` + `node` (keeping its creation time
    /// and error counter, as the app server is the same). A new one beyond `max_devices` evicts
    /// the least recently used (the oldest `last_used_ms`; of equals, the first registered).
    pub fn upsert(&mut self, reg: Registration, max_devices: usize) -> Upsert {
        if let Some(old) = self
            .registrations
            .iter_mut()
            .find(|r| r.jid == reg.jid && r.node == reg.node)
        {
            old.label = reg.label;
            old.options = reg.options;
            old.filter = reg.filter;
            old.last_used_ms = reg.last_used_ms.max(old.last_used_ms);
            return Upsert::Updated;
        }
        let evicted = if self.registrations.len() >= max_devices.max(1) {
            self.least_recently_used()
                .map(|i| self.registrations.remove(i))
        } else {
            None
        };
        self.registrations.push(reg);
        Upsert::Added { evicted }
    }

    /// The index of the registration to evict.
    pub fn least_recently_used(&self) -> Option<usize> {
        self.registrations
            .iter()
            .enumerate()
            .min_by_key(|(i, r)| (r.last_used_ms, *i))
            .map(|(i, _)| i)
    }

    /// Removes the registrations whose [`Registration::key`] is in `keys`; returns them.
    pub fn remove_keys(&mut self, keys: &[String]) -> Vec<Registration> {
        let (gone, kept) = std::mem::take(&mut self.registrations)
            .into_iter()
            .partition(|r| keys.contains(&r.key()));
        self.registrations = kept;
        gone
    }

    /// XEP-0357 `<disable/>`: `node` given removes that one, else every one of `jid`.
    pub fn disable(&mut self, jid: &str, node: Option<&str>) -> Vec<Registration> {
        let (gone, kept) = std::mem::take(&mut self.registrations)
            .into_iter()
            .partition(|r| r.jid == jid && node.is_none_or(|n| r.node == n));
        self.registrations = kept;
        gone
    }

    /// Sets the rule of `rule.room` (`never` removes it). Returns the previous rule.
    pub fn set_room(&mut self, rule: RoomRule) -> Option<RoomRule> {
        let old = self
            .rooms
            .iter()
            .position(|r| r.room == rule.room)
            .map(|i| self.rooms.remove(i));
        if rule.mode != RoomMode::Never {
            self.rooms.push(rule);
        }
        old
    }

    /// Every room this user watches (own rules and registration filters, `never` excluded),
    /// each once.
    pub fn watched_rooms(&self) -> Vec<&str> {
        let mut rooms: Vec<&str> = self
            .rooms
            .iter()
            .chain(self.registrations.iter().flat_map(|r| r.filter_rooms()))
            .filter(|r| r.mode != RoomMode::Never)
            .map(|r| r.room.as_str())
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(jid: &str, node: &str, at: i64) -> Registration {
        Registration::new(jid, node, at)
    }

    #[test]
    fn the_same_jid_and_node_updates_and_keeps_the_error_counter() {
        let mut u = UserPush::default();
        let mut first = reg("push.example.net", "n1", 10);
        first.errors = 3;
        first.options = Some("<x/>".into());
        assert_eq!(u.upsert(first, 5), Upsert::Added { evicted: None });
        let mut again = reg("push.example.net", "n1", 20);
        again.options = Some("<y/>".into());
        again.label = Some("phone".into());
        assert_eq!(u.upsert(again, 5), Upsert::Updated);
        assert_eq!(u.registrations.len(), 1);
        let r = &u.registrations[0];
        assert_eq!(
            (r.options.as_deref(), r.label.as_deref(), r.errors),
            (Some("<y/>"), Some("phone"), 3)
        );
        assert_eq!((r.created_ms, r.last_used_ms), (10, 20));
        // Another node of the same app server is another registration.
        assert!(matches!(
            u.upsert(reg("push.example.net", "n2", 30), 5),
            Upsert::Added { .. }
        ));
        assert_eq!(u.registrations.len(), 2);
    }

    #[test]
    fn one_more_than_max_devices_evicts_the_least_recently_used() {
        let mut u = UserPush::default();
        for i in 0..5 {
            u.upsert(reg("p.example", &format!("n{i}"), 100 + i), 5);
        }
        // n0 was used (updated) last: n1 is now the least recently used.
        u.upsert(reg("p.example", "n0", 200), 5);
        let out = u.upsert(reg("p.example", "n5", 300), 5);
        let Upsert::Added {
            evicted: Some(gone),
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(gone.node, "n1");
        let nodes: Vec<_> = u.registrations.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(nodes, ["n0", "n2", "n3", "n4", "n5"]);
    }

    #[test]
    fn of_equal_times_the_first_registered_goes() {
        let mut u = UserPush::default();
        for n in ["a", "b", "c"] {
            u.upsert(reg("p.example", n, 7), 3);
        }
        let out = u.upsert(reg("p.example", "d", 7), 3);
        assert!(matches!(out, Upsert::Added { evicted: Some(ref r) } if r.node == "a"));
    }

    #[test]
    fn disable_without_node_removes_every_registration_of_that_jid() {
        let mut u = UserPush::default();
        for (j, n) in [("a.example", "1"), ("a.example", "2"), ("b.example", "1")] {
            u.upsert(reg(j, n, 1), 5);
        }
        assert_eq!(u.disable("a.example", Some("2")).len(), 1);
        u.upsert(reg("a.example", "2", 1), 5);
        assert_eq!(u.disable("a.example", None).len(), 2);
        assert_eq!(u.registrations.len(), 1);
        assert_eq!(u.registrations[0].jid, "b.example");
        assert!(u.disable("nobody.example", None).is_empty());
    }

    #[test]
    fn room_rules_replace_and_never_removes() {
        let mut u = UserPush::default();
        let rule = |mode| RoomRule {
            room: "r@muc.example".into(),
            nick: "al".into(),
            mode,
        };
        assert_eq!(u.set_room(rule(RoomMode::Always)), None);
        assert_eq!(
            u.set_room(rule(RoomMode::Mentioned)).map(|r| r.mode),
            Some(RoomMode::Always)
        );
        assert_eq!(u.rooms.len(), 1);
        assert_eq!(u.watched_rooms(), ["r@muc.example"]);
        u.set_room(rule(RoomMode::Never));
        assert!(u.rooms.is_empty() && u.is_empty());
    }

    #[test]
    fn watched_rooms_count_filters_once() {
        let mut u = UserPush::default();
        u.set_room(RoomRule {
            room: "a@muc".into(),
            nick: "n".into(),
            mode: RoomMode::Always,
        });
        let mut r = reg("p", "n", 1);
        r.filter = Some(Filter {
            rooms: vec![
                RoomRule {
                    room: "a@muc".into(),
                    nick: "n".into(),
                    mode: RoomMode::Mentioned,
                },
                RoomRule {
                    room: "b@muc".into(),
                    nick: "n".into(),
                    mode: RoomMode::Never,
                },
            ],
            muted: vec![],
        });
        u.upsert(r, 5);
        assert_eq!(u.watched_rooms(), ["a@muc"]);
    }

    #[test]
    fn debug_never_shows_the_options() {
        let mut r = reg("p", "n", 1);
        r.options = Some("<x><field var='secret'><value>hunter2</value></field></x>".into());
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
