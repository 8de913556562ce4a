//! The presence journal: the presence table as records of table changes.

use serde::{Deserialize, Serialize};

use super::{decode_u64, Store, StoreError};
use crate::presence::tracker::{ResourceState, StoreOp};

impl Store {
    /// The presence journal (one writer: the presence service). A key that is not a u64 (only
    /// corruption writes one) is passed over here and removed by the next compaction, which
    /// [`PresenceJournal::wants_compaction`] then asks for.
    pub fn presence_journal(&self) -> Result<PresenceJournal, StoreError> {
        let mut stale = false;
        let mut last = None;
        for key in self.journal.iter().keys().rev() {
            match decode_u64(&key?) {
                Some(k) => {
                    last = Some(k);
                    break;
                }
                None => stale = true,
            }
        }
        let next_key = match last {
            None => 0,
            Some(k) => k.checked_add(1).unwrap_or_else(|| {
                // No key is left above it: appends fail until a compaction rewrites the keys.
                stale = true;
                u64::MAX
            }),
        };
        Ok(PresenceJournal {
            tree: self.journal.clone(),
            next_key,
            ops_since_compaction: 0,
            stale,
        })
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
    /// one atomic batch. When it fails nothing is written, and the journal asks for a compaction
    /// ([`PresenceJournal::wants_compaction`]): only that writes the missed changes.
    pub fn append(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let result = self.try_append(ops);
        if result.is_err() {
            self.stale = true;
        }
        result
    }

    fn try_append(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
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
        let end = u64::try_from(records.len())
            .ok()
            .and_then(|len| self.next_key.checked_add(len))
            .ok_or_else(|| StoreError::Corrupt {
                key: "presence_journal".into(),
                reason: "no record key is left; the next compaction renumbers the journal".into(),
            })?;
        // A single record is a plain insert: sled's batches cost much more than one insert.
        if records.len() == 1 {
            self.tree
                .insert(self.next_key.to_be_bytes(), records.swap_remove(0))?;
        } else if !records.is_empty() {
            let mut batch = sled::Batch::default();
            for (key, record) in (self.next_key..end).zip(records) {
                batch.insert(&key.to_be_bytes(), record);
            }
            self.tree.apply_batch(batch)?;
        }
        self.next_key = end;
        self.ops_since_compaction += n;
        Ok(())
    }

    /// Whether the journal has grown enough, against a table of `table_len` resources, for
    /// [`PresenceJournal::compact`] to be worth it.
    pub fn wants_compaction(&self, table_len: usize) -> bool {
        self.stale
            || self.ops_since_compaction
                > COMPACT_MIN_OPS.max(COMPACT_FACTOR.saturating_mul(table_len))
    }

    /// Replaces the whole journal with `table` (every online resource), atomically. The new
    /// records are numbered from 0 again (in one batch a removal and an insert of the same key
    /// leave the insert), so the keys never run out.
    pub fn compact(
        &mut self,
        table: impl Iterator<Item = (String, ResourceState)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            batch.remove(key?);
        }
        let mut record = Vec::with_capacity(RECORD_BYTES + 1024);
        let mut next_key = 0u64;
        let mut put = |record: &mut Vec<u8>, next_key: &mut u64| {
            batch.insert(&next_key.to_be_bytes(), std::mem::take(record));
            *next_key += 1;
        };
        let mut written = 0;
        for (jid, state) in table {
            encode_put(&mut record, &jid, &state);
            written += 1;
            if record.len() >= RECORD_BYTES {
                put(&mut record, &mut next_key);
            }
        }
        if !record.is_empty() {
            put(&mut record, &mut next_key);
        }
        if let Err(e) = self.tree.apply_batch(batch) {
            // Nothing was applied; try again once as many changes have come in (or at the next
            // commit if the journal misses changes).
            self.ops_since_compaction = 0;
            return Err(e.into());
        }
        self.next_key = next_key;
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

pub(super) fn decode_state_v2(bytes: &[u8]) -> Option<ResourceState> {
    let StoredState(show, status, priority, since_ms) = serde_json::from_slice(bytes).ok()?;
    Some(ResourceState {
        show: show.map(Into::into),
        status: status.map(Into::into),
        priority,
        since_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{open_for_test as open, KEY_SCHEMA, TREE_PRESENCE_V2};
    use super::*;

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
    fn truncated_and_garbage_records_are_skipped_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut j = s.presence_journal().unwrap();
        let kept = state(Some("away"), Some("x"), 1, 2);
        j.append(&[StoreOp::Put("a@x/1".into(), kept.clone())])
            .unwrap();
        let mut valid = Vec::new();
        encode_put(
            &mut valid,
            "b@x/2",
            &state(Some("dnd"), Some("busy"), -1, 9),
        );
        // Every truncation of a valid record, and texts whose length runs past the record.
        let mut garbage: Vec<Vec<u8>> = (1..valid.len()).map(|n| valid[..n].to_vec()).collect();
        garbage.push(vec![b'P', 0xFF, 0xFE, b'a']);
        garbage.push(vec![b'D', 0xFF, 0xFF]);
        garbage.push(vec![b'P', 0, 1, 0xC3, 0xFF, 0xFF, 0xFF, 0xFF]);
        garbage.push(vec![b'Z'; 100]);
        for (i, g) in garbage.iter().enumerate() {
            s.journal
                .insert((1_000 + i as u64).to_be_bytes(), g.as_slice())
                .unwrap();
        }
        let table = s.presence_journal().unwrap().load().unwrap();
        assert_eq!(table, vec![("a@x/1".to_string(), kept)]);
    }

    #[test]
    fn a_key_that_is_not_a_u64_does_not_stop_the_journal_and_compaction_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut j = s.presence_journal().unwrap();
        j.append(&[StoreOp::Put("a@x/1".into(), state(None, None, 0, 1))])
            .unwrap();
        s.journal.insert(&[0xFF; 3][..], &b"garbage"[..]).unwrap();
        let mut j = s.presence_journal().unwrap();
        assert!(j.wants_compaction(1), "a bad key asks for a compaction");
        let table = j.load().unwrap();
        assert_eq!(table.len(), 1);
        j.compact(table.into_iter()).unwrap();
        assert!(s.journal.iter().keys().all(|k| k.unwrap().len() == 8));
        j.append(&[StoreOp::Put("b@x/2".into(), state(None, None, 0, 2))])
            .unwrap();
        assert_eq!(s.presence_journal().unwrap().load().unwrap().len(), 2);
    }

    #[test]
    fn a_last_key_of_u64_max_is_never_overwritten_and_compaction_renumbers() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut record = Vec::new();
        encode_put(&mut record, "a@x/1", &state(None, None, 0, 1));
        s.journal.insert(u64::MAX.to_be_bytes(), record).unwrap();
        let mut j = s.presence_journal().unwrap();
        assert!(j.wants_compaction(0));
        let update = [StoreOp::Put("b@x/2".into(), state(None, None, 0, 2))];
        assert!(j.append(&update).is_err(), "no key is left after u64::MAX");
        let table = j.load().unwrap();
        assert_eq!(table.len(), 1, "the record at u64::MAX is intact");
        j.compact(
            table
                .into_iter()
                .chain([("b@x/2".to_string(), state(None, None, 0, 2))]),
        )
        .unwrap();
        assert!(!j.wants_compaction(2));
        j.append(&[StoreOp::Delete("a@x/1".into())]).unwrap();
        assert_eq!(
            s.presence_journal().unwrap().load().unwrap(),
            vec![("b@x/2".to_string(), state(None, None, 0, 2))]
        );
        assert_eq!(s.journal.last().unwrap().unwrap().0, 1u64.to_be_bytes());
    }
}
