//! The only module that names sled: typed trees, key encoding and the schema version.
//!
//! Trees:
//! - `meta`: `schema` (u32 BE) and `seq_ceiling` (u64 BE), see [`SeqAllocator`].
//! - `presence_journal`: the presence table as a journal of table changes, see
//!   [`PresenceJournal`]. Every change the tracker reports is appended, one record per group
//!   commit, so a restart resumes from the table as it was.
//!
//! Durability: sled buffers writes in memory and flushes its log every `store.flush_interval`
//! (group commit) and on [`Store::flush`] (graceful shutdown). A crash of herald or a power cut
//! can lose the writes of the last interval, never more; what was flushed survives both.

pub mod queue;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::presence::tracker::{ResourceState, StoreOp};

/// Bumped when the on-disk layout changes incompatibly.
pub const SCHEMA_VERSION: u32 = 3;

/// Sequence numbers are reserved on disk in blocks of this size: one synchronous flush per block
/// instead of one per event. A crash skips the rest of the block (a gap, never a reuse); a
/// graceful shutdown gives the unused rest back.
const SEQ_BLOCK: u64 = 65_536;

const KEY_SCHEMA: &[u8] = b"schema";
/// Schema 2 kept one record per online resource in this tree; schema 3 keeps a journal.
const TREE_PRESENCE_V2: &str = "presence";
const TREE_PRESENCE_JOURNAL: &str = "presence_journal";
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
    journal: sled::Tree,
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
        let store = Store { db, meta, journal };
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
        let mut table = Vec::with_capacity(old.len());
        for item in old.iter() {
            let (k, v) = item?;
            let jid = String::from_utf8_lossy(&k).into_owned();
            match decode_state_v2(&v) {
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
        tracing::info!(resources = table.len(), "store upgraded from schema 2 to 3");
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

    /// The presence journal (one writer: the presence service).
    pub fn presence_journal(&self) -> Result<PresenceJournal, StoreError> {
        let next_key = match self.journal.last()? {
            Some((k, _)) => decode_u64(&k)
                .ok_or_else(|| StoreError::Corrupt {
                    key: "presence_journal".into(),
                    reason: format!("key of {} bytes", k.len()),
                })?
                .saturating_add(1),
            None => 0,
        };
        Ok(PresenceJournal {
            tree: self.journal.clone(),
            next_key,
            ops_since_compaction: 0,
            stale: false,
        })
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
    /// The last number handed out (by this run, or by the previous one if this run has handed
    /// out none yet); 0 before the first.
    pub fn last_issued(&self) -> u64 {
        self.next.saturating_sub(1)
    }

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

/// The presence table, persisted as a journal: records keyed by a counter (u64 BE), each the
/// table changes of one group commit, in order. Replaying every record in key order rebuilds
/// the table. When the journal holds many more changes than the table has resources, it is
/// compacted: the whole table is written as a few records of puts, and every older record is
/// removed, in one atomic batch.
///
/// One record per group commit instead of one per resource keeps the cost per change low (sled's
/// cost is per record) and keeps sled's memory small: no index entry per online resource.
///
/// A change is encoded as `P` · JID · show · status · priority (i8) · since_ms (i64 BE), or `D` ·
/// JID; texts are a u16 BE length then UTF-8, and an absent show or status has length `0xFFFF`.
pub struct PresenceJournal {
    tree: sled::Tree,
    next_key: u64,
    ops_since_compaction: usize,
    /// An append failed: the journal misses changes, and only a compaction writes them.
    stale: bool,
}

/// A compaction is due when the journal holds more changes than this many…
const COMPACT_MIN_OPS: usize = 50_000;
/// …and more than this many times the table's size.
const COMPACT_FACTOR: usize = 2;
/// Records are cut at about this size (sled writes much larger pages as files of their own).
const RECORD_BYTES: usize = 32 * 1024;
const ABSENT: u16 = u16::MAX;

impl PresenceJournal {
    /// Replays the journal: the table as it was persisted. A corrupt record is reported and
    /// skipped, never fatal: the next snapshot from the server repairs the table.
    pub fn load(&mut self) -> Result<Vec<(String, ResourceState)>, StoreError> {
        let mut table: std::collections::HashMap<String, ResourceState> =
            std::collections::HashMap::new();
        let mut ops = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            let mut changes = Vec::new();
            if decode_ops(&v, &mut changes).is_none() {
                tracing::warn!(record = ?decode_u64(&k), "store: skipping a corrupt presence journal record");
                continue;
            }
            ops += changes.len();
            for op in changes {
                match op {
                    StoreOp::Put(jid, state) => {
                        table.insert(jid, state);
                    }
                    StoreOp::Delete(jid) => {
                        table.remove(&jid);
                    }
                    StoreOp::Nothing => {}
                }
            }
        }
        self.ops_since_compaction = ops;
        Ok(table.into_iter().collect())
    }

    /// Appends one group commit's table changes, as records of up to about 32 KiB written in
    /// one atomic batch.
    pub fn append(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut records = Vec::new();
        let mut record = Vec::new();
        let mut n = 0;
        for op in ops {
            if encode_op(&mut record, op) {
                n += 1;
            }
            if record.len() >= RECORD_BYTES {
                records.push(std::mem::take(&mut record));
            }
        }
        if !record.is_empty() {
            records.push(record);
        }
        // A single record is a plain insert: sled's batches cost much more than one insert.
        if records.len() == 1 {
            self.tree
                .insert(self.next_key.to_be_bytes(), records.swap_remove(0))?;
            self.next_key += 1;
        } else if !records.is_empty() {
            let mut batch = sled::Batch::default();
            let mut key = self.next_key;
            for record in records {
                batch.insert(&key.to_be_bytes(), record);
                key += 1;
            }
            self.tree.apply_batch(batch)?;
            self.next_key = key;
        }
        self.ops_since_compaction += n;
        Ok(())
    }

    /// Whether the journal has grown enough, against a table of `table_len` resources, for
    /// [`PresenceJournal::compact`] to be worth it.
    pub fn wants_compaction(&self, table_len: usize) -> bool {
        self.stale || self.ops_since_compaction > COMPACT_MIN_OPS.max(COMPACT_FACTOR * table_len)
    }

    /// Replaces the whole journal with `table` (every online resource), atomically.
    pub fn compact(
        &mut self,
        table: impl Iterator<Item = (String, ResourceState)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            batch.remove(key?);
        }
        let mut record = Vec::with_capacity(RECORD_BYTES + 1024);
        let mut put = |record: &mut Vec<u8>, next_key: &mut u64| {
            batch.insert(&next_key.to_be_bytes(), std::mem::take(record));
            *next_key += 1;
        };
        let mut written = 0;
        for (jid, state) in table {
            encode_put(&mut record, &jid, &state);
            written += 1;
            if record.len() >= RECORD_BYTES {
                put(&mut record, &mut self.next_key);
            }
        }
        if !record.is_empty() {
            put(&mut record, &mut self.next_key);
        }
        if let Err(e) = self.tree.apply_batch(batch) {
            // Nothing was applied; try again once as many changes have come in (or at the next
            // commit if the journal misses changes).
            self.ops_since_compaction = 0;
            return Err(e.into());
        }
        self.ops_since_compaction = written;
        self.stale = false;
        Ok(())
    }
}

/// Appends `op`; false for [`StoreOp::Nothing`].
fn encode_op(out: &mut Vec<u8>, op: &StoreOp) -> bool {
    match op {
        StoreOp::Nothing => false,
        StoreOp::Put(jid, state) => {
            encode_put(out, jid, state);
            true
        }
        StoreOp::Delete(jid) => {
            out.push(b'D');
            encode_text(out, Some(jid));
            true
        }
    }
}

fn encode_put(out: &mut Vec<u8>, jid: &str, state: &ResourceState) {
    out.push(b'P');
    encode_text(out, Some(jid));
    encode_text(out, state.show.as_deref());
    encode_text(out, state.status.as_deref());
    out.push(state.priority as u8);
    out.extend_from_slice(&state.since_ms.to_be_bytes());
}

/// Texts longer than 65 534 bytes are cut at a character boundary (no JID or status is that long
/// in practice; servers limit stanza sizes well below).
fn encode_text(out: &mut Vec<u8>, text: Option<&str>) {
    let Some(text) = text else {
        out.extend_from_slice(&ABSENT.to_be_bytes());
        return;
    };
    let mut end = text.len().min(usize::from(ABSENT - 1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// Decodes a whole record into `out`; `None` if it is corrupt.
fn decode_ops(mut bytes: &[u8], out: &mut Vec<StoreOp>) -> Option<()> {
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let jid = decode_text(&mut bytes)??;
        match tag {
            b'D' => out.push(StoreOp::Delete(jid)),
            b'P' => {
                let show = decode_text(&mut bytes)?.map(Into::into);
                let status = decode_text(&mut bytes)?.map(Into::into);
                let (&priority, rest) = bytes.split_first()?;
                let since: [u8; 8] = rest.get(..8)?.try_into().ok()?;
                bytes = &rest[8..];
                out.push(StoreOp::Put(
                    jid,
                    ResourceState {
                        show,
                        status,
                        priority: priority as i8,
                        since_ms: i64::from_be_bytes(since),
                    },
                ));
            }
            _ => return None,
        }
    }
    Some(())
}

/// `Some(None)`: an absent text; `None`: corrupt.
fn decode_text(bytes: &mut &[u8]) -> Option<Option<String>> {
    let len: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
    let len = u16::from_be_bytes(len);
    *bytes = &bytes[2..];
    if len == ABSENT {
        return Some(None);
    }
    let text = bytes.get(..usize::from(len))?;
    let text = std::str::from_utf8(text).ok()?.to_owned();
    *bytes = &bytes[usize::from(len)..];
    Some(Some(text))
}

/// Schema 2's presence record: `[show, status, priority, since_ms]` as JSON.
#[derive(Serialize, Deserialize)]
struct StoredState(Option<String>, Option<String>, i8, i64);

fn decode_state_v2(bytes: &[u8]) -> Option<ResourceState> {
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

    /// Opens the store; a store dropped a moment ago in this process may still be held by
    /// sled's flusher thread for a few milliseconds, so a failed open is retried briefly.
    fn open(dir: &Path) -> Store {
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

    fn state(
        show: Option<&str>,
        status: Option<&str>,
        priority: i8,
        since_ms: i64,
    ) -> ResourceState {
        ResourceState {
            show: show.map(Into::into),
            status: status.map(Into::into),
            priority,
            since_ms,
        }
    }

    fn sorted(mut v: Vec<(String, ResourceState)>) -> Vec<(String, ResourceState)> {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn presence_round_trips_through_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let away = state(Some("away"), Some("brb \"quoted\" \u{1F3AE}"), -3, 1234);
        let plain = state(None, None, 0, -1);
        {
            let s = open(dir.path());
            let mut j = s.presence_journal().unwrap();
            j.append(&[
                StoreOp::Put("alice@example.org/phone".into(), away.clone()),
                StoreOp::Put("bob@example.org/pc".into(), away.clone()),
                StoreOp::Nothing,
            ])
            .unwrap();
            j.append(&[StoreOp::Delete("bob@example.org/pc".into())])
                .unwrap();
            j.append(&[StoreOp::Put("carol@example.org".into(), plain.clone())])
                .unwrap();
            s.db.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(
            sorted(s.presence_journal().unwrap().load().unwrap()),
            vec![
                ("alice@example.org/phone".to_string(), away),
                ("carol@example.org".to_string(), plain),
            ]
        );
    }

    #[test]
    fn compaction_keeps_the_table_and_shrinks_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut j = s.presence_journal().unwrap();
        // 3 000 resources come and go many times; 1 000 stay.
        for round in 0..40 {
            let ops: Vec<StoreOp> = (0..3_000)
                .map(|i| {
                    let jid = format!("u{i}@example.org/r");
                    if round % 2 == 1 && i >= 1_000 {
                        StoreOp::Delete(jid)
                    } else {
                        StoreOp::Put(jid, state(None, Some("s"), 0, round))
                    }
                })
                .collect();
            j.append(&ops).unwrap();
        }
        let before = s.journal.len();
        let table = j.load().unwrap();
        assert_eq!(table.len(), 1_000);
        assert!(j.wants_compaction(table.len()));
        j.compact(table.iter().cloned()).unwrap();
        assert!(!j.wants_compaction(table.len()));
        assert!(
            s.journal.len() < before,
            "{} records after, {before} before",
            s.journal.len()
        );
        // Appends after a compaction come after it.
        j.append(&[StoreOp::Delete("u0@example.org/r".into())])
            .unwrap();
        drop(j);
        let reopened = s.presence_journal().unwrap().load().unwrap();
        let mut expected = table.clone();
        expected.retain(|(jid, _)| jid != "u0@example.org/r");
        assert_eq!(sorted(reopened), sorted(expected));
    }

    #[test]
    fn a_schema_2_store_is_upgraded_with_its_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(KEY_SCHEMA, &2u32.to_be_bytes())
                .unwrap();
            let old = db.open_tree(TREE_PRESENCE_V2).unwrap();
            old.insert("a@x/1", &br#"["dnd","busy",5,77]"#[..]).unwrap();
            old.insert("b@x/2", &br#"[null,null,0,78]"#[..]).unwrap();
            old.insert("c@x/3", &b"garbage"[..]).unwrap();
            db.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(
            sorted(s.presence_journal().unwrap().load().unwrap()),
            vec![
                ("a@x/1".to_string(), state(Some("dnd"), Some("busy"), 5, 77)),
                ("b@x/2".to_string(), state(None, None, 0, 78)),
            ]
        );
        assert!(!s
            .db
            .tree_names()
            .iter()
            .any(|n| &n[..] == TREE_PRESENCE_V2.as_bytes()));
        drop(s);
        // And it stays upgraded.
        let s = open(dir.path());
        assert_eq!(s.presence_journal().unwrap().load().unwrap().len(), 2);
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
        let mut j = s.presence_journal().unwrap();
        j.append(&[StoreOp::Put("a@x/1".into(), state(None, None, 0, 1))])
            .unwrap();
        s.journal
            .insert(5u64.to_be_bytes(), &b"Pnot a record"[..])
            .unwrap();
        let table = s.presence_journal().unwrap().load().unwrap();
        assert_eq!(table, vec![("a@x/1".to_string(), state(None, None, 0, 1))]);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
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
}
