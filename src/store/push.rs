//! `push_users`: one record per user (bare JID) holding that user's push registrations and room
//! rules ([`UserPush`]), encoded as a version byte (`1`) and JSON.
//!
//! One record per user makes every change atomic: a command either writes the whole new record
//! or nothing. Changes are serialised by a lock (read, change, write), then flushed: a caller
//! that got `Ok` from [`PushStore::update`] knows the change is on disk, so an answer sent after
//! it survives a `kill -9`. An in-memory index counts the users watching each room, for the
//! `max_rooms` limit and the statistics; it is rebuilt from the records when the store opens.
//!
//! Flushes are group commits: one at a time (sled's `flush_async` can stall when called
//! concurrently), each covering every write made before it started, so writers that arrive
//! while one runs share the next instead of queueing one fsync each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{take_fault, Store, StoreError};
use crate::push::UserPush;

const TREE_PUSH: &str = "push_users";
const RECORD_VERSION: u8 = 1;
/// Change notifications a slow subscriber may fall behind by before it is told it lagged.
pub const CHANGES_CAPACITY: usize = 1024;

/// Rooms watched by anyone, and by how many users.
#[derive(Debug, Default, Clone)]
pub struct RoomIndex {
    counts: HashMap<String, usize>,
}

impl RoomIndex {
    /// Distinct rooms watched.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn contains(&self, room: &str) -> bool {
        self.counts.contains_key(room)
    }

    fn add(&mut self, user: &UserPush) {
        for room in user.watched_rooms() {
            *self.counts.entry(room.to_owned()).or_default() += 1;
        }
    }

    fn remove(&mut self, user: &UserPush) {
        for room in user.watched_rooms() {
            if let Some(n) = self.counts.get_mut(room) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(room);
                }
            }
        }
    }
}

/// Totals for `admin-stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    pub users: usize,
    pub registrations: usize,
    pub rooms: usize,
}

/// The registration store; cheap to clone.
#[derive(Clone)]
pub struct PushStore {
    store: Store,
    tree: sled::Tree,
    index: Arc<Mutex<RoomIndex>>,
    write_faults: Arc<AtomicUsize>,
    /// Writes made so far (numbered from 1).
    written: Arc<AtomicU64>,
    /// The highest write number known to be on disk; held while a flush runs.
    flushed: Arc<tokio::sync::Mutex<u64>>,
    /// The user of each change, once it is on disk ([`PushStore::subscribe`]).
    changes: tokio::sync::broadcast::Sender<String>,
}

impl Store {
    /// The registration store. Corrupt records are skipped (with a WARN) by the index; reading
    /// or changing one is an error naming it.
    pub fn push_store(&self) -> Result<PushStore, StoreError> {
        let tree = self.db.open_tree(TREE_PUSH)?;
        let mut index = RoomIndex::default();
        for item in tree.iter() {
            let (k, v) = item?;
            match decode(&k, &v) {
                Ok(user) => index.add(&user),
                Err(e) => tracing::warn!(error = %e, "store: skipping a corrupt push record"),
            }
        }
        Ok(PushStore {
            store: self.clone(),
            tree,
            index: Arc::new(Mutex::new(index)),
            write_faults: Arc::new(AtomicUsize::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            flushed: Arc::new(tokio::sync::Mutex::new(0)),
            changes: tokio::sync::broadcast::channel(CHANGES_CAPACITY).0,
        })
    }
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: format!("{TREE_PUSH}/{}", String::from_utf8_lossy(key)),
        reason: reason.into(),
    }
}

fn decode(key: &[u8], v: &[u8]) -> Result<UserPush, StoreError> {
    match v.split_first() {
        Some((&RECORD_VERSION, json)) => {
            serde_json::from_slice(json).map_err(|e| corrupt(key, e.to_string()))
        }
        Some((version, _)) => Err(corrupt(key, format!("unknown record version {version}"))),
        None => Err(corrupt(key, "empty record")),
    }
}

fn encode(user: &UserPush) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, user)
        .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))?;
    Ok(out)
}

impl PushStore {
    /// `user`'s data (empty when there is none).
    pub fn get(&self, user: &str) -> Result<UserPush, StoreError> {
        match self.tree.get(user.as_bytes())? {
            None => Ok(UserPush::default()),
            Some(v) => decode(user.as_bytes(), &v),
        }
    }

    /// Changes `user`'s record with `change`, which sees a copy of it and the room index (as it
    /// is before the change). If `change` refuses (`Err`), nothing is written; otherwise the
    /// new record (or its removal, when empty) is written and flushed before this returns.
    pub async fn update<T, E>(
        &self,
        user: &str,
        change: impl FnOnce(&mut UserPush, &RoomIndex) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        let (outcome, mine, changed) = {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.get(user)?;
            let mut new = old.clone();
            match change(&mut new, &index) {
                Err(e) => return Ok(Err(e)),
                // Nothing to write; an earlier write it may have read still has to be durable.
                Ok(t) if new == old => (Ok(t), self.written.load(Ordering::SeqCst), false),
                Ok(t) => {
                    if take_fault(&self.write_faults) {
                        return Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                            "injected push write failure",
                        ))));
                    }
                    if new.is_empty() {
                        self.tree.remove(user.as_bytes())?;
                    } else {
                        self.tree.insert(user.as_bytes(), encode(&new)?)?;
                    }
                    index.remove(&old);
                    index.add(&new);
                    (Ok(t), self.written.fetch_add(1, Ordering::SeqCst) + 1, true)
                }
            }
        };
        self.flush_up_to(mine).await?;
        if changed {
            // Nobody listening is fine.
            let _ = self.changes.send(user.to_owned());
        }
        Ok(outcome)
    }

    /// The bare JID of every user whose record changed, sent once the change is on disk (a
    /// refused or empty change sends nothing). A subscriber that falls more than
    /// [`CHANGES_CAPACITY`] behind gets `Lagged` and should re-read [`PushStore::users`].
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Returns once write number `mine` is on disk, flushing if no flush covered it yet.
    async fn flush_up_to(&self, mine: u64) -> Result<(), StoreError> {
        let mut flushed = self.flushed.lock().await;
        if *flushed >= mine {
            return Ok(());
        }
        let target = self.written.load(Ordering::SeqCst);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.db_flush())
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))??;
        *flushed = target;
        Ok(())
    }

    /// Every user with data, in JID byte order (corrupt records are skipped with a WARN).
    pub fn users(&self) -> impl Iterator<Item = (String, UserPush)> + '_ {
        self.tree.iter().filter_map(|item| {
            let (k, v) = item
                .map_err(|e| tracing::warn!(error = %e, "store: cannot read push records"))
                .ok()?;
            match decode(&k, &v) {
                Ok(user) => Some((String::from_utf8_lossy(&k).into_owned(), user)),
                Err(e) => {
                    tracing::warn!(error = %e, "store: skipping a corrupt push record");
                    None
                }
            }
        })
    }

    /// Totals over every user.
    pub fn stats(&self) -> PushStats {
        let mut stats = PushStats::default();
        for (_, user) in self.users() {
            if !user.registrations.is_empty() {
                stats.users += 1;
            }
            stats.registrations += user.registrations.len();
        }
        stats.rooms = self.index.lock().unwrap_or_else(|p| p.into_inner()).len();
        stats
    }

    /// Fault injection for tests: the next `n` writes of [`PushStore::update`] fail with an I/O
    /// error and write nothing.
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: usize) {
        self.write_faults.store(n, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::super::open_for_test as open;
    use super::*;
    use crate::push::{Registration, RoomMode, RoomRule};

    fn room(r: &str) -> RoomRule {
        RoomRule {
            room: r.into(),
            nick: "n".into(),
            mode: RoomMode::Always,
        }
    }

    #[tokio::test]
    async fn changes_persist_and_refusals_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            let p = s.push_store().unwrap();
            let r: Result<(), ()> = p
                .update("a@x", |u, _| {
                    u.upsert(Registration::new("app.example", "n1", 5), 5);
                    u.set_room(room("r1@muc.x"));
                    Ok(())
                })
                .await
                .unwrap();
            r.unwrap();
            let refused: Result<(), &str> = p
                .update("a@x", |u, _| {
                    u.registrations.clear();
                    Err("no")
                })
                .await
                .unwrap();
            assert_eq!(refused, Err("no"));
            assert_eq!(p.get("a@x").unwrap().registrations.len(), 1);
        }
        let s = open(dir.path());
        let p = s.push_store().unwrap();
        let u = p.get("a@x").unwrap();
        assert_eq!(u.registrations[0].node, "n1");
        assert_eq!(
            p.stats(),
            PushStats {
                users: 1,
                registrations: 1,
                rooms: 1
            }
        );
        assert!(p.get("b@x").unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_room_index_counts_users_and_forgets_empty_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let p = s.push_store().unwrap();
        for user in ["a@x", "b@x"] {
            p.update(user, |u, _| Ok::<_, ()>(u.set_room(room("r@m"))))
                .await
                .unwrap()
                .unwrap();
        }
        let seen = p
            .update("a@x", |u, idx| {
                let before = (idx.len(), idx.contains("r@m"));
                u.rooms.clear();
                Ok::<_, ()>(before)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, (1, true));
        assert_eq!(p.stats().rooms, 1, "b still watches it");
        p.update("b@x", |u, _| {
            u.rooms.clear();
            Ok::<_, ()>(())
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(p.stats().rooms, 0);
        assert_eq!(p.users().count(), 0, "empty records are removed");
    }

    #[tokio::test]
    async fn subscribers_hear_of_each_written_change_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let p = s.push_store().unwrap();
        let mut changes = p.subscribe();
        p.update("a@x", |u, _| Ok::<_, ()>(u.set_room(room("r@m"))))
            .await
            .unwrap()
            .unwrap();
        // The same rule again writes nothing; a refusal neither.
        p.update("a@x", |u, _| Ok::<_, ()>(u.set_room(room("r@m"))))
            .await
            .unwrap()
            .unwrap();
        let _ = p.update("a@x", |_, _| Err::<(), _>("no")).await.unwrap();
        p.update("b@x", |u, _| Ok::<_, ()>(u.set_room(room("r@m"))))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changes.try_recv().unwrap(), "a@x");
        assert_eq!(changes.try_recv().unwrap(), "b@x");
        assert!(changes.try_recv().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_complete_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let p = s.push_store().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..32 {
            let p = p.clone();
            tasks.spawn(async move {
                for i in 0..8 {
                    let node = format!("n{i}");
                    p.update(&format!("u{w}@x"), |u, _| {
                        Ok::<_, ()>(u.upsert(Registration::new("app.example", &node, i), 8))
                    })
                    .await
                    .unwrap()
                    .unwrap();
                }
            });
        }
        let all = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        })
        .await;
        assert!(all.is_ok(), "concurrent writers stalled");
        assert_eq!(p.stats().registrations, 32 * 8);
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing_and_corrupt_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let p = s.push_store().unwrap();
        p.fail_next_writes(1);
        let r = p
            .update("a@x", |u, _| Ok::<_, ()>(u.set_room(room("r@m"))))
            .await;
        assert!(r.is_err());
        assert!(p.get("a@x").unwrap().is_empty());
        assert_eq!(p.stats().rooms, 0);
        p.tree.insert("c@x", &b"\x01{not json"[..]).unwrap();
        p.tree.insert("d@x", &b"\x09{}"[..]).unwrap();
        assert!(
            matches!(p.get("c@x"), Err(StoreError::Corrupt { key, .. }) if key == "push_users/c@x")
        );
        assert!(p.get("d@x").is_err());
        assert_eq!(p.users().count(), 0);
        // A fresh open skips them too.
        assert_eq!(s.push_store().unwrap().stats().rooms, 0);
    }
}
