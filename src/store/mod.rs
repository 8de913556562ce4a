//! The only module that names sled: typed trees, key encoding and the schema version.
//!
//! Trees:
//! - `meta`: `schema` (u32 BE) and `seq_ceiling` (u64 BE), see [`SeqAllocator`].
//! - `presence`: full JID → [`ResourceState`] (compact JSON tuple). Written through on every change
//!   the tracker reports, so a restart resumes from the table as it was.
//!
//! Durability: sled buffers writes in memory and flushes its log every `store.flush_interval`
//! (group commit) and on [`Store::flush`] (graceful shutdown). A crash of herald or a power cut
//! can lose the writes of the last interval, never more; what was flushed survives both.

pub mod queue;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::presence::tracker::{ResourceState, StoreOp};

/// Bumped when the on-disk layout changes incompatibly.
pub const SCHEMA_VERSION: u32 = 2;

/// Sequence numbers are reserved on disk in blocks of this size: one synchronous flush per block
/// instead of one per event. A crash skips the rest of the block (a gap, never a reuse); a
/// graceful shutdown gives the unused rest back.
const SEQ_BLOCK: u64 = 65_536;

const KEY_SCHEMA: &[u8] = b"schema";
const KEY_SEQ_CEILING: &[u8] = b"seq_ceiling";

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
}

/// A handle on the store; cheap to clone (sled trees are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    presence: sled::Tree,
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
        let presence = db.open_tree("presence")?;
        match meta.get(KEY_SCHEMA)? {
            None => {
                meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = decode_u32(&v).ok_or_else(|| StoreError::Corrupt {
                    key: "meta/schema".into(),
                    reason: format!("{} bytes", v.len()),
                })?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
        }
        Ok(Store { db, meta, presence })
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

    /// The persisted presence table. A corrupt record is reported and skipped, never fatal:
    /// the next snapshot from the server repairs the table.
    pub fn load_presence(&self) -> Result<Vec<(String, ResourceState)>, StoreError> {
        let mut out = Vec::with_capacity(self.presence.len());
        for item in self.presence.iter() {
            let (k, v) = item?;
            let jid = String::from_utf8_lossy(&k).into_owned();
            match decode_state(&v) {
                Some(state) => out.push((jid, state)),
                None => tracing::warn!(jid = %jid, "store: skipping a corrupt presence record"),
            }
        }
        Ok(out)
    }

    /// Applies table changes in one batch (group commit of a burst of presences).
    pub fn apply_presence(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for op in ops {
            match op {
                StoreOp::Nothing => continue,
                StoreOp::Put(jid, state) => batch.insert(jid.as_bytes(), encode_state(state)),
                StoreOp::Delete(jid) => batch.remove(jid.as_bytes()),
            }
            any = true;
        }
        if any {
            self.presence.apply_batch(batch)?;
        }
        Ok(())
    }

    pub fn put_presence(&self, full_jid: &str, state: &ResourceState) -> Result<(), StoreError> {
        self.presence
            .insert(full_jid.as_bytes(), encode_state(state))?;
        Ok(())
    }

    pub fn delete_presence(&self, full_jid: &str) -> Result<(), StoreError> {
        self.presence.remove(full_jid.as_bytes())?;
        Ok(())
    }

    /// A sequence allocator that resumes above every number handed out before.
    pub fn seq_allocator(&self) -> Result<SeqAllocator, StoreError> {
        let ceiling = match self.meta.get(KEY_SEQ_CEILING)? {
            None => 0,
            Some(v) => decode_u64(&v).ok_or_else(|| StoreError::Corrupt {
                key: "meta/seq_ceiling".into(),
                reason: format!("{} bytes", v.len()),
            })?,
        };
        Ok(SeqAllocator {
            meta: self.meta.clone(),
            next: ceiling + 1,
            ceiling,
        })
    }
}

/// Hands out `seq` numbers: strictly increasing, never reused, also across restarts and crashes.
pub struct SeqAllocator {
    meta: sled::Tree,
    next: u64,
    /// Every number up to and including this one is reserved on disk.
    ceiling: u64,
}

impl SeqAllocator {
    pub fn next_seq(&mut self) -> Result<u64, StoreError> {
        if self.next > self.ceiling {
            let ceiling = self.ceiling.max(self.next - 1) + SEQ_BLOCK;
            self.meta.insert(KEY_SEQ_CEILING, &ceiling.to_be_bytes())?;
            // The reservation must be on disk before any number of the block leaves herald.
            self.meta.flush()?;
            self.ceiling = ceiling;
        }
        let seq = self.next;
        self.next += 1;
        Ok(seq)
    }
}

impl SeqAllocator {
    /// Gives back the unused rest of the block (graceful shutdown), so the next run continues
    /// without a gap.
    pub fn release(&mut self) -> Result<(), StoreError> {
        let used = self.next - 1;
        self.meta.insert(KEY_SEQ_CEILING, &used.to_be_bytes())?;
        self.meta.flush()?;
        self.ceiling = used;
        Ok(())
    }
}

/// On disk: `[show, status, priority, since_ms]` as JSON (texts may need unescaping, so owned).
#[derive(Serialize, Deserialize)]
struct StoredState(Option<String>, Option<String>, i8, i64);

fn encode_state(s: &ResourceState) -> Vec<u8> {
    let stored = (
        s.show.as_deref(),
        s.status.as_deref(),
        s.priority,
        s.since_ms,
    );
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode_state(bytes: &[u8]) -> Option<ResourceState> {
    let StoredState(show, status, priority, since_ms) = serde_json::from_slice(bytes).ok()?;
    Some(ResourceState {
        show: show.map(Into::into),
        status: status.map(Into::into),
        priority,
        since_ms,
    })
}

fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn decode_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(dir, 100, 1 << 20).unwrap()
    }

    #[test]
    fn presence_round_trips_through_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = ResourceState {
            show: Some("away".into()),
            status: Some("brb \"quoted\"".into()),
            priority: -3,
            since_ms: 1234,
        };
        {
            let s = open(dir.path());
            s.put_presence("alice@example.org/phone", &state).unwrap();
            s.put_presence("bob@example.org/pc", &state).unwrap();
            s.delete_presence("bob@example.org/pc").unwrap();
            s.db.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(
            s.load_presence().unwrap(),
            vec![("alice@example.org/phone".to_string(), state)]
        );
    }

    #[test]
    fn seq_is_strictly_increasing_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = 0;
        // Crash-like reopens (no release, no flush of anything but the reservation).
        for _ in 0..3 {
            let s = open(dir.path());
            let mut a = s.seq_allocator().unwrap();
            for _ in 0..(SEQ_BLOCK + 5) {
                let n = a.next_seq().unwrap();
                assert!(n > last, "{n} after {last}");
                last = n;
            }
        }
        // A graceful stop gives the rest of the block back: no gap.
        {
            let s = open(dir.path());
            let mut a = s.seq_allocator().unwrap();
            last = a.next_seq().unwrap();
            a.release().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.seq_allocator().unwrap().next_seq().unwrap(), last + 1);
    }

    #[test]
    fn corrupt_presence_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.presence.insert(b"x@y/z", &b"not json"[..]).unwrap();
        assert!(s.load_presence().unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.meta.insert(KEY_SCHEMA, &99u32.to_be_bytes()).unwrap();
            s.db.flush().unwrap();
        }
        assert!(matches!(
            Store::open(dir.path(), 100, 1 << 20),
            Err(StoreError::Schema { found: 99 })
        ));
    }
}
