//! What herald knows of a joined room: its occupants, as the room's presences showed them, and
//! the message the rooms owner hands on with a snapshot of them.

use std::collections::HashMap;
use std::sync::Arc;

use minidom::Element;

use crate::push::watchers::Watcher;

/// An occupant's role (XEP-0045 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Moderator,
    Participant,
    Visitor,
    None,
}

impl Role {
    /// `role` attribute → role; anything unknown is [`Role::None`].
    pub fn parse(s: Option<&str>) -> Role {
        match s {
            Some("moderator") => Role::Moderator,
            Some("participant") => Role::Participant,
            Some("visitor") => Role::Visitor,
            _ => Role::None,
        }
    }
}

/// One occupant of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    pub nick: String,
    /// The occupant's bare JID, lowercase, when the room shows it (non-anonymous rooms, or
    /// herald a moderator).
    pub real_jid: Option<String>,
    pub role: Role,
}

/// A room's occupants, by nick. Cheap to share: the rooms owner keeps one `Arc` per room and
/// changes it copy-on-write, so a message carries the occupants as they were when it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupants {
    by_nick: HashMap<String, Occupant>,
}

impl Occupants {
    pub fn get(&self, nick: &str) -> Option<&Occupant> {
        self.by_nick.get(nick)
    }

    /// Whether `nick` is an occupant.
    pub fn has_nick(&self, nick: &str) -> bool {
        self.by_nick.contains_key(nick)
    }

    /// An occupant whose real JID is `bare` (lowercase), if the room shows real JIDs.
    pub fn by_real_jid(&self, bare: &str) -> Option<&Occupant> {
        self.by_nick
            .values()
            .find(|o| o.real_jid.as_deref() == Some(bare))
    }

    /// Adds or replaces the occupant of `occupant.nick`.
    pub fn insert(&mut self, occupant: Occupant) {
        self.by_nick.insert(occupant.nick.clone(), occupant);
    }

    pub fn remove(&mut self, nick: &str) -> Option<Occupant> {
        self.by_nick.remove(nick)
    }

    pub fn len(&self) -> usize {
        self.by_nick.len()
    }

    /// Forgets every occupant (herald left the room, or rejoins it).
    pub fn clear(&mut self) {
        self.by_nick.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.by_nick.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Occupant> {
        self.by_nick.values()
    }
}

/// A groupchat message from a joined room, as the rooms owner hands it to the push owner.
#[derive(Debug, Clone)]
pub struct RoomMessage {
    /// The room's bare JID (lowercase).
    pub room: String,
    /// herald's nick in that room when the message arrived.
    pub own_nick: String,
    /// The message as it came (`from` = `room@service/nick` of the sender).
    pub element: Element,
    /// The occupants when the message arrived.
    pub occupants: Arc<Occupants>,
    /// Everyone watching the room, one entry per registration.
    pub watchers: Arc<[Watcher]>,
    /// When herald read it (milliseconds since the Unix epoch).
    pub at_ms: i64,
}
