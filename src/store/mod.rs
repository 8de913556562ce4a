//! The only module that names sled: typed trees, key encoding and the schema version.
//!
//! Trees:
//! - `meta`: `schema` (u32 BE) and `seq_ceiling` (u64 BE), see [`SeqAllocator`] (`seq`).
//! - `presence_journal`: the presence table as a journal of table changes, see
//!   [`PresenceJournal`] (`journal`). Every change the tracker reports is appended, one record
//!   per group commit, so a restart resumes from the table as it was.
//! - `queue/NAME` and `dead/NAME`: each sink's queue and dead letters, see [`queue`].
//! - `push_users`: each user's push registrations and room rules, see [`PushStore`] (`push`).
//!   Schema 4 added it; a schema 3 store is upgraded by creating it empty.
//! - `push_outbox`: group-chat pushes decided and not yet answered, see [`PushOutbox`]
//!   (`push_outbox`). Created empty when first opened (a store without it reads as one with
//!   nothing pending, so the schema version stays).
//!
//! Durability: sled buffers writes in memory and flushes its log every `store.flush_interval`
//! (group commit) and on [`Store::flush`] (graceful shutdown). A crash of herald or a power cut
//! can lose the writes of the last interval, never more; what was flushed survives both.
//!
//! Corrupt data on disk never panics and never makes herald allocate by a length it read: every
//! length and count is checked against the bytes actually there. A corrupt record is an error
//! naming it ([`StoreError::Corrupt`], [`StoreError::CorruptQueueRecord`]); the readers that can
//! go on without it do (the journal skips it, a sink's worker moves it to its dead letters).

mod journal;
mod push;
mod push_outbox;
pub mod queue;
mod seq;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use journal::PresenceJournal;
pub use push::{PushStats, PushStore, RoomIndex};
pub use push_outbox::PushOutbox;
pub use seq::SeqAllocator;

/// Bumped when the on-disk layout changes incompatibly.
pub const SCHEMA_VERSION: u32 = 4;

const KEY_SCHEMA: &[u8] = b"schema";
/// Schema 2 kept one record per online resource in this tree; schema 3 keeps a journal.
const TREE_PRESENCE_V2: &str = "presence";
const TREE_PRESENCE_JOURNAL: &str = "presence_journal";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "store schema version {found} is not supported (this herald understands {SCHEMA_VERSION})"
    )]
    Schema { found: u32 },
    #[error("store record {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// A record of a sink's queue cannot be decoded. `key` is the record's key as stored: give
    /// it to [`queue::SinkQueue::quarantine`] to move the record out of the way.
    #[error("queue record {} of sink {sink} is corrupt: {reason}", queue::describe_key(.key))]
    CorruptQueueRecord {
        sink: String,
        key: Vec<u8>,
        reason: String,
    },
}

/// A handle on the store; cheap to clone (sled trees are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    journal: sled::Tree,
    /// How many sink-queue appends are still to fail ([`Store::fail_next_queue_writes`]).
    queue_write_faults: Arc<AtomicUsize>,
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(
        path: &Path,
        flush_interval_ms: u64,
        cache_bytes: u64,
    ) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(flush_interval_ms.max(1)))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let meta = db.open_tree("meta")?;
        let journal = db.open_tree(TREE_PRESENCE_JOURNAL)?;
        let store = Store {
            db,
            meta,
            journal,
            queue_write_faults: Arc::new(AtomicUsize::new(0)),
        };
        match store.meta.get(KEY_SCHEMA)? {
            None => {
                store
                    .meta
                    .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = decode_u32(&v).ok_or_else(|| StoreError::Corrupt {
                    key: "meta/schema".into(),
                    reason: format!("{} bytes", v.len()),
                })?;
                match found {
                    SCHEMA_VERSION => {
                        // Left by an upgrade interrupted after it was complete.
                        store.db.drop_tree(TREE_PRESENCE_V2)?;
                    }
                    2 => store.migrate_from_v2()?,
                    3 => store.migrate_from_v3()?,
                    _ => return Err(StoreError::Schema { found }),
                }
            }
        }
        Ok(store)
    }

    /// Schema 2 → 3: the per-resource presence records become the journal's first snapshot.
    /// The queues kept their layout.
    fn migrate_from_v2(&self) -> Result<(), StoreError> {
        let old = self.db.open_tree(TREE_PRESENCE_V2)?;
        let mut table = Vec::new();
        for item in old.iter() {
            let (k, v) = item?;
            let jid = String::from_utf8_lossy(&k).into_owned();
            match journal::decode_state_v2(&v) {
                Some(state) => table.push((jid, state)),
                None => tracing::warn!(jid = %jid, "store: skipping a corrupt presence record"),
            }
        }
        let mut journal = self.presence_journal()?;
        journal.compact(
            table
                .iter()
                .map(|(jid, state)| (jid.clone(), state.clone())),
        )?;
        self.db.drop_tree(TREE_PRESENCE_V2)?;
        self.meta
            .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        self.db.flush()?;
        tracing::info!(
            resources = table.len(),
            "store upgraded from schema 2 to {SCHEMA_VERSION}"
        );
        Ok(())
    }

    /// Schema 3 → 4: the registration tree is new (created empty when first opened); nothing
    /// else changed.
    fn migrate_from_v3(&self) -> Result<(), StoreError> {
        self.meta
            .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        self.db.flush()?;
        tracing::info!("store upgraded from schema 3 to {SCHEMA_VERSION}");
        Ok(())
    }

    /// Forces everything written so far to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Forces everything written so far to disk, blocking (for command-line tools).
    pub fn db_flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Fault injection for tests: the next `n` appends to any sink queue of this store
    /// ([`queue::SinkQueue::push_many`], the path of `Lane::push_many` and
    /// `Fanout::publish_many`) fail with an I/O error and write nothing. `0` ends it. Costs one
    /// atomic load per append otherwise.
    #[doc(hidden)]
    pub fn fail_next_queue_writes(&self, n: usize) {
        self.queue_write_faults.store(n, Ordering::SeqCst);
    }
}

/// Takes one injected fault, if any is left.
fn take_fault(faults: &AtomicUsize) -> bool {
    faults.load(Ordering::Relaxed) > 0
        && faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
}

fn injected_failure() -> StoreError {
    StoreError::Sled(sled::Error::Io(std::io::Error::other(
        "injected queue write failure",
    )))
}

fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn decode_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// Opens the store; a store dropped a moment ago in this process may still be held by sled's
/// flusher thread for a few milliseconds, so a failed open is retried briefly.
#[cfg(test)]
fn open_for_test(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, 100, 1 << 20) {
            Ok(s) => return s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open_for_test(dir.path());
            s.meta.insert(KEY_SCHEMA, &99u32.to_be_bytes()).unwrap();
            s.db.flush().unwrap();
        }
        let reopened = (0..500)
            .map(|_| {
                let r = Store::open(dir.path(), 100, 1 << 20);
                if matches!(r, Err(StoreError::Open { .. })) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r
            })
            .find(|r| !matches!(r, Err(StoreError::Open { .. })));
        assert!(matches!(
            reopened,
            Some(Err(StoreError::Schema { found: 99 }))
        ));
    }

    #[test]
    fn a_schema_record_of_the_wrong_size_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open_for_test(dir.path());
            s.meta.insert(KEY_SCHEMA, &[0, 3][..]).unwrap();
            s.db.flush().unwrap();
        }
        let reopened = (0..500)
            .map(|_| {
                let r = Store::open(dir.path(), 100, 1 << 20);
                if matches!(r, Err(StoreError::Open { .. })) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r
            })
            .find(|r| !matches!(r, Err(StoreError::Open { .. })));
        assert!(
            matches!(&reopened, Some(Err(StoreError::Corrupt { key, .. })) if key == "meta/schema"),
            "{:?}",
            reopened.map(|r| r.map(|_| ()))
        );
    }

    #[test]
    fn a_schema_3_store_is_upgraded_and_keeps_its_queues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open_for_test(dir.path());
            s.sink_queue("hook").unwrap().push(7, b"{}").unwrap();
            s.meta.insert(KEY_SCHEMA, &3u32.to_be_bytes()).unwrap();
            s.db.flush().unwrap();
        }
        let s = open_for_test(dir.path());
        let schema = s.meta.get(KEY_SCHEMA).unwrap().unwrap();
        assert_eq!(decode_u32(&schema), Some(SCHEMA_VERSION));
        assert_eq!(s.sink_queue("hook").unwrap().count(), 1);
        assert!(s.push_store().unwrap().users().next().is_none());
    }

    #[test]
    fn injected_queue_write_failures_fail_exactly_that_many_appends() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_for_test(dir.path());
        let q = s.sink_queue("hook").unwrap();
        s.fail_next_queue_writes(2);
        assert!(q.push(1, b"{}").is_err());
        assert!(q.push_many([(2, &b"{}"[..]), (3, &b"{}"[..])]).is_err());
        assert_eq!(q.count(), 0, "a failed append writes nothing");
        q.push(4, b"{}").unwrap();
        assert_eq!(q.count(), 1);
    }
}
