//! The live presence table: which resources (full JIDs) are online, with their show, status and
//! priority. Pure and synchronous; the presence task owns it, persists what it reports and emits
//! the events.
//!
//! # Design note
//!
//! **Events.** One event is one change of one resource. `args.user` is the full JID, `show` and
//! `status` are `None` when absent, and `resources` counts the online resources of the bare JID
//! *after* the change. Rules, for a forwarded presence:
//!
//! | presence | resource known? | result |
//! |---|---|---|
//! | available | no | insert, `Put`, event |
//! | available, same show/status/priority | yes | nothing at all (`None`): a duplicate |
//! | available, other show/status/priority | yes | update, `Put`; event only with [`Changes::All`] |
//! | unavailable | yes | remove, `Delete`, event |
//! | unavailable | no | nothing at all (`None`) |
//!
//! Every state change is reported as a [`StoreOp`], even when no event is emitted, so the
//! persisted table always equals this one and [`Tracker::restore`] resumes exactly.
//!
//! **Sources.** A presence without `<delay/>` is [`Source::Live`]. With `<delay/>` it belongs to
//! the snapshot a server sends after each (re)connect (Prosody does, `reference/servers.md` §4):
//! an unknown resource is [`Source::Snapshot`], a known one whose state differs changed while
//! herald was away and is [`Source::Resync`], a known identical one is a silent confirmation.
//!
//! **Snapshots.** [`Tracker::begin_snapshot`] marks every known resource unconfirmed; every
//! presence that names a resource afterwards (delayed or live) confirms it, and a live unavailable
//! removes it as usual. [`Tracker::end_snapshot`] removes the resources still unconfirmed: they
//! went offline while herald was away, reported as unavailable with [`Source::Resync`]. Only end
//! a snapshot for a server that sends one: ejabberd 23.01 sends none, and ending an empty
//! snapshot would declare every user offline; [`Tracker::abandon_snapshot`] closes it instead,
//! removing nothing.
//!
//! **`since_ms`** is when herald saw the resource become available; a show/status/priority change
//! keeps it. It takes no part in duplicate detection.
//!
//! **JIDs** are used as the server sends them (servers send them normalised). The bare JID is the
//! text before the first `/`, the resource the rest; a JID without `/` is a bare JID with an
//! empty resource, and comes back out of [`Tracker::iter`] without a `/`.
//!
//! **Cost.** [`Tracker::apply`] is on the hot path (bursts of over 100 000 presences/s): it looks
//! the bare JID up by `&str` and allocates only what it stores or returns. Memory: one map entry
//! per bare JID holding its resources (usually 1 to 3; the first inline, no allocation), each a
//! 32-byte record with one allocation for its texts (resource, status, a non-standard show); no
//! full JID is stored. About 110 bytes per online resource with typical JIDs.

use std::collections::HashMap;
use std::fmt;

use smallvec::SmallVec;

pub use crate::config::Changes;
use crate::events::{Availability, EventArgs, Source};

/// The state of one online resource, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    pub show: Option<Box<str>>,
    pub status: Option<Box<str>>,
    pub priority: i8,
    /// When herald saw the resource become available (milliseconds since the Unix epoch).
    pub since_ms: i64,
}

/// A forwarded presence, reduced to what the table keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Available {
        show: Option<String>,
        status: Option<String>,
        priority: i8,
    },
    Unavailable,
}

/// What the owner must do after a change: persist, and maybe emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub store: StoreOp,
    pub event: Option<(Source, EventArgs)>,
}

/// The write that keeps the persisted table equal to this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    Nothing,
    /// Full JID → its new state.
    Put(String, ResourceState),
    /// Full JID gone offline.
    Delete(String),
}

/// One resource of a bare JID, compact: every text in one allocation.
struct Entry {
    /// `resource` NUL `status` NUL `show` (the show only when it is not one of RFC 6121's four;
    /// none of these texts can contain NUL, which XML forbids).
    text: Box<str>,
    since_ms: i64,
    show: ShowCode,
    priority: i8,
    has_status: bool,
    /// Known before the current snapshot began and not seen since.
    unconfirmed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ShowCode {
    None,
    Away,
    Chat,
    Dnd,
    Xa,
    /// Another text, kept in [`Entry::text`].
    Other,
}

const SHOWS: [(ShowCode, &str); 4] = [
    (ShowCode::Away, "away"),
    (ShowCode::Chat, "chat"),
    (ShowCode::Dnd, "dnd"),
    (ShowCode::Xa, "xa"),
];

impl Entry {
    fn new(
        resource: &str,
        show: Option<&str>,
        status: Option<&str>,
        priority: i8,
        since_ms: i64,
    ) -> Entry {
        let mut entry = Entry {
            text: Box::from(""),
            since_ms,
            show: ShowCode::None,
            priority,
            has_status: false,
            unconfirmed: false,
        };
        entry.set(resource, show, status, priority);
        entry
    }

    fn from_state(resource: &str, state: &ResourceState) -> Entry {
        Entry::new(
            resource,
            state.show.as_deref(),
            state.status.as_deref(),
            state.priority,
            state.since_ms,
        )
    }

    /// Replaces show, status and priority (`since_ms` stays).
    fn set(&mut self, resource: &str, show: Option<&str>, status: Option<&str>, priority: i8) {
        let code = match show {
            None => ShowCode::None,
            Some(text) => SHOWS
                .iter()
                .find(|(_, name)| *name == text)
                .map_or(ShowCode::Other, |(code, _)| *code),
        };
        let other = if code == ShowCode::Other {
            show.unwrap_or("")
        } else {
            ""
        };
        let status_text = status.unwrap_or("");
        let mut text = String::with_capacity(resource.len() + status_text.len() + other.len() + 2);
        text.push_str(resource);
        if status.is_some() || code == ShowCode::Other {
            text.push('\0');
            text.push_str(status_text);
        }
        if code == ShowCode::Other {
            text.push('\0');
            text.push_str(other);
        }
        self.text = text.into_boxed_str();
        self.show = code;
        self.priority = priority;
        self.has_status = status.is_some();
    }

    fn parts(&self) -> (&str, &str, &str) {
        let mut it = self.text.splitn(3, '\0');
        let resource = it.next().unwrap_or("");
        let status = it.next().unwrap_or("");
        let other = it.next().unwrap_or("");
        (resource, status, other)
    }

    fn resource(&self) -> &str {
        self.parts().0
    }

    fn status(&self) -> Option<&str> {
        self.has_status.then(|| self.parts().1)
    }

    fn show(&self) -> Option<&str> {
        match self.show {
            ShowCode::None => None,
            ShowCode::Other => Some(self.parts().2),
            code => SHOWS
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, name)| *name),
        }
    }

    fn same_presence(&self, show: Option<&str>, status: Option<&str>, priority: i8) -> bool {
        self.priority == priority && self.show() == show && self.status() == status
    }

    fn state(&self) -> ResourceState {
        ResourceState {
            show: self.show().map(Box::from),
            status: self.status().map(Box::from),
            priority: self.priority,
            since_ms: self.since_ms,
        }
    }
}

/// The resources of one bare JID; the first is stored inline.
type Resources = SmallVec<[Entry; 1]>;

/// The live presence table. See the module documentation for the rules.
pub struct Tracker {
    changes: Changes,
    /// Bare JID → its online resources, never empty.
    users: HashMap<Box<str>, Resources>,
    /// Number of resources over all bare JIDs.
    len: usize,
    in_snapshot: bool,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The table itself can hold 100 000 resources: never print it.
        f.debug_struct("Tracker")
            .field("changes", &self.changes)
            .field("resources", &self.len)
            .field("bare_jids", &self.users.len())
            .field("in_snapshot", &self.in_snapshot)
            .finish()
    }
}

impl Tracker {
    /// An empty table.
    pub fn new(changes: Changes) -> Self {
        Tracker {
            changes,
            users: HashMap::new(),
            len: 0,
            in_snapshot: false,
        }
    }

    /// Rebuilds the table from the persisted one (full JID, state); emits nothing. A full JID
    /// given twice keeps its last state.
    pub fn restore(
        changes: Changes,
        entries: impl IntoIterator<Item = (String, ResourceState)>,
    ) -> Self {
        let mut tracker = Tracker::new(changes);
        for (full_jid, state) in entries {
            let (bare, resource) = split_jid(&full_jid);
            match tracker.find_mut(bare, resource) {
                Some(entry) => *entry = Entry::from_state(resource, &state),
                None => tracker.insert(bare, Entry::from_state(resource, &state)),
            }
        }
        tracker
    }

    /// Applies a forwarded presence. `delayed`: it carried `<delay/>` (part of a server snapshot).
    /// `None` when nothing changed at all (a duplicate, or unavailable for an unknown resource).
    pub fn apply(
        &mut self,
        full_jid: &str,
        update: Update,
        delayed: bool,
        now_ms: i64,
    ) -> Option<Outcome> {
        let (bare, resource) = split_jid(full_jid);
        match update {
            Update::Available {
                show,
                status,
                priority,
            } => self.available(
                full_jid, bare, resource, show, status, priority, delayed, now_ms,
            ),
            Update::Unavailable => {
                let source = if delayed {
                    Source::Resync
                } else {
                    Source::Live
                };
                self.remove(full_jid, source)
            }
        }
    }

    /// Removes a resource; `None` if it was not online.
    fn remove(&mut self, full_jid: &str, source: Source) -> Option<Outcome> {
        let (bare, resource) = split_jid(full_jid);
        let entries = self.users.get_mut(bare)?;
        let index = entries.iter().position(|e| e.resource() == resource)?;
        entries.swap_remove(index);
        let resources = count(entries.len());
        if entries.is_empty() {
            self.users.remove(bare);
        } else {
            shrink_if_loose(entries);
        }
        self.len -= 1;
        Some(Outcome {
            store: StoreOp::Delete(full_jid.to_owned()),
            event: Some((source, unavailable_args(full_jid.to_owned(), resources))),
        })
    }

    /// A liveness check found the resource gone: removes it with an unavailable
    /// [`Source::Liveness`] event; `None` if it was not online.
    pub fn vanish(&mut self, full_jid: &str) -> Option<Outcome> {
        self.remove(full_jid, Source::Liveness)
    }

    /// A (re)connect happened: the server may now send its snapshot. Every resource known now
    /// must be confirmed by a presence before [`Tracker::end_snapshot`]. Calling it again during a
    /// snapshot starts over.
    pub fn begin_snapshot(&mut self) {
        self.in_snapshot = true;
        for entry in self.users.values_mut().flat_map(|e| e.iter_mut()) {
            entry.unconfirmed = true;
        }
    }

    /// The snapshot is over: every resource known at [`Tracker::begin_snapshot`] and not seen
    /// since went offline while herald was away. Returns a `Delete` and an unavailable
    /// [`Source::Resync`] event for each, sorted by full JID, each with the `resources` count
    /// after its own removal. Empty when no snapshot is in progress.
    pub fn end_snapshot(&mut self, _now_ms: i64) -> Vec<Outcome> {
        if !self.in_snapshot {
            return Vec::new();
        }
        self.in_snapshot = false;
        let mut outcomes = Vec::new();
        let mut removed = 0;
        self.users.retain(|bare, entries| {
            if !entries.iter().any(|e| e.unconfirmed) {
                return true;
            }
            let mut gone = Vec::new();
            let mut i = 0;
            while i < entries.len() {
                if entries[i].unconfirmed {
                    gone.push(entries.swap_remove(i).text);
                } else {
                    i += 1;
                }
            }
            // Same order as the final sort by full JID, so each count follows the one before.
            gone.sort_unstable();
            let mut remaining = entries.len() + gone.len();
            for text in gone {
                remaining -= 1;
                let resource = text.split('\0').next().unwrap_or("");
                let full_jid = join_jid(bare, resource);
                outcomes.push(Outcome {
                    store: StoreOp::Delete(full_jid.clone()),
                    event: Some((Source::Resync, unavailable_args(full_jid, count(remaining)))),
                });
                removed += 1;
            }
            shrink_if_loose(entries);
            !entries.is_empty()
        });
        self.len -= removed;
        outcomes.sort_by(|a, b| store_key(a).cmp(store_key(b)));
        outcomes
    }

    /// Closes the snapshot without removing anything: for a server that turned out to send
    /// none (ejabberd), where a missing resource says nothing about it.
    pub fn abandon_snapshot(&mut self) {
        self.in_snapshot = false;
        for entry in self.users.values_mut().flat_map(|e| e.iter_mut()) {
            entry.unconfirmed = false;
        }
    }

    /// Whether a snapshot is in progress.
    pub fn in_snapshot(&self) -> bool {
        self.in_snapshot
    }

    /// Online resources of a bare JID.
    pub fn resources_of(&self, bare_jid: &str) -> u32 {
        self.users
            .get(bare_jid)
            .map_or(0, |entries| count(entries.len()))
    }

    /// The state of an online resource.
    #[cfg(test)]
    fn get(&self, full_jid: &str) -> Option<ResourceState> {
        let (bare, resource) = split_jid(full_jid);
        self.users
            .get(bare)?
            .iter()
            .find(|e| e.resource() == resource)
            .map(Entry::state)
    }

    /// The online resources of a bare JID as (full JID, state), in no particular order.
    pub fn user(&self, bare_jid: &str) -> Vec<(String, ResourceState)> {
        self.users.get(bare_jid).map_or_else(Vec::new, |entries| {
            entries
                .iter()
                .map(|e| (join_jid(bare_jid, e.resource()), e.state()))
                .collect()
        })
    }

    /// Number of online resources.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every online resource as (full JID, state), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (String, ResourceState)> + '_ {
        self.users.iter().flat_map(|(bare, entries)| {
            entries
                .iter()
                .map(move |e| (join_jid(bare, e.resource()), e.state()))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn available(
        &mut self,
        full_jid: &str,
        bare: &str,
        resource: &str,
        show: Option<String>,
        status: Option<String>,
        priority: i8,
        delayed: bool,
        now_ms: i64,
    ) -> Option<Outcome> {
        let changes = self.changes;
        if let Some(entries) = self.users.get_mut(bare) {
            let resources = count(entries.len());
            if let Some(entry) = entries.iter_mut().find(|e| e.resource() == resource) {
                entry.unconfirmed = false;
                if entry.same_presence(show.as_deref(), status.as_deref(), priority) {
                    return None;
                }
                entry.set(resource, show.as_deref(), status.as_deref(), priority);
                let store = StoreOp::Put(full_jid.to_owned(), entry.state());
                let event = (changes == Changes::All).then(|| {
                    let source = if delayed {
                        Source::Resync
                    } else {
                        Source::Live
                    };
                    let args =
                        available_args(full_jid.to_owned(), show, status, priority, resources);
                    (source, args)
                });
                return Some(Outcome { store, event });
            }
        }
        let entry = Entry::new(
            resource,
            show.as_deref(),
            status.as_deref(),
            priority,
            now_ms,
        );
        let store = StoreOp::Put(full_jid.to_owned(), entry.state());
        self.insert(bare, entry);
        let source = if delayed {
            Source::Snapshot
        } else {
            Source::Live
        };
        let args = available_args(
            full_jid.to_owned(),
            show,
            status,
            priority,
            self.resources_of(bare),
        );
        Some(Outcome {
            store,
            event: Some((source, args)),
        })
    }

    fn find_mut(&mut self, bare: &str, resource: &str) -> Option<&mut Entry> {
        self.users
            .get_mut(bare)?
            .iter_mut()
            .find(|e| e.resource() == resource)
    }

    /// Adds a resource that is not in the table (confirmed: it was just seen).
    fn insert(&mut self, bare: &str, entry: Entry) {
        match self.users.get_mut(bare) {
            Some(entries) => {
                // Grow one at a time: most users have one to three resources.
                entries.reserve_exact(1);
                entries.push(entry);
            }
            None => {
                let mut entries = Resources::new();
                entries.push(entry);
                self.users.insert(Box::from(bare), entries);
            }
        }
        self.len += 1;
    }
}

/// `(bare, resource)`: split at the first `/`; no `/` means an empty resource.
fn split_jid(full_jid: &str) -> (&str, &str) {
    full_jid.split_once('/').unwrap_or((full_jid, ""))
}

/// The inverse of [`split_jid`].
fn join_jid(bare: &str, resource: &str) -> String {
    if resource.is_empty() {
        return bare.to_owned();
    }
    let mut full = String::with_capacity(bare.len() + 1 + resource.len());
    full.push_str(bare);
    full.push('/');
    full.push_str(resource);
    full
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn shrink_if_loose(entries: &mut Resources) {
    if entries.capacity() > 2 * entries.len() {
        entries.shrink_to_fit();
    }
}

fn store_key(outcome: &Outcome) -> &str {
    match &outcome.store {
        StoreOp::Put(jid, _) | StoreOp::Delete(jid) => jid,
        StoreOp::Nothing => "",
    }
}

fn available_args(
    user: String,
    show: Option<String>,
    status: Option<String>,
    priority: i8,
    resources: u32,
) -> EventArgs {
    EventArgs {
        user,
        presence: Availability::Available,
        show,
        status,
        priority,
        resources,
    }
}

fn unavailable_args(user: String, resources: u32) -> EventArgs {
    EventArgs {
        user,
        presence: Availability::Unavailable,
        show: None,
        status: None,
        priority: 0,
        resources,
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
