//! Per-sink queues and dead letters.
//!
//! Trees, for a sink named `NAME`:
//! - `queue/NAME`: one record per group commit (cut at 32 KiB), keyed by its first `seq` (u64 BE,
//!   so iteration is in `seq` order): event count (u32 BE), then per event `seq` (u64 BE) ·
//!   length (u32 BE) · JSON text. One record per burst instead of one per event is what makes the
//!   queue cheap (sled's cost is per record). Events only ever leave from the head, so a partly delivered
//!   record is rewritten as its remainder, keyed by the remainder's first `seq`.
//! - `dead/NAME`: `seq` → [`DeadLetter`] record: `at_ms` (i64 BE) · reason length (u32 BE) ·
//!   reason · the event's JSON text.
//!
//! Moving records between the two trees writes the destination first, then removes the source:
//! a crash in between leaves a copy in both, which means a duplicate delivery later, never a loss.
//!
//! A queue record that cannot be decoded is reported as [`StoreError::CorruptQueueRecord`] by the
//! reads that meet it; [`SinkQueue::quarantine`] moves it, raw, to the dead letters, so delivery
//! goes on with the records after it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch as SledBatch, IVec, Transactional, Tree};

use super::{injected_failure, take_fault, Store, StoreError};

const QUEUE_PREFIX: &str = "queue/";
/// Records are cut at about this size: sled writes anything much larger (over a quarter of its
/// 512 KiB log segment, counting the rest of the page) as a file of its own.
const RECORD_BYTES: usize = 32 * 1024;
const DEAD_PREFIX: &str = "dead/";
/// The record header (event count) and the smallest event (seq, length, empty text).
const HEADER_BYTES: usize = 4;
const EVENT_OVERHEAD: usize = 12;
/// The reason of every dead letter that holds a corrupt queue record (its raw bytes, not an
/// event's JSON): [`SinkQueue::requeue`] leaves such letters where they are.
pub const CORRUPT_RECORD_REASON: &str = "corrupt queue record: ";

/// One queued event: its `seq` and JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub seq: u64,
    pub json: IVec,
}

/// An event a sink gave up on, with the answer that killed it. For a corrupt queue record
/// (`reason` starts with [`CORRUPT_RECORD_REASON`]) `json` holds the record's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: u64,
    pub at_ms: i64,
    pub reason: String,
    pub json: Vec<u8>,
}

/// What [`SinkQueue::quarantine`] moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The dead letter that holds the record: its key when that is a free `seq`, else the next
    /// free one above it.
    pub dead_seq: u64,
    /// The record's size in bytes.
    pub bytes: usize,
    /// How many events its header claims, at most as many as its size can hold (for the backlog
    /// figure; the true number is unknown).
    pub events: usize,
}

/// The queue and dead letters of one sink. Cheap to clone.
#[derive(Clone)]
pub struct SinkQueue {
    name: String,
    queue: Tree,
    dead: Tree,
    /// The store's injected write failures ([`Store::fail_next_queue_writes`]).
    faults: Arc<AtomicUsize>,
}

impl Store {
    /// Opens (or creates) the queue of sink `name`.
    pub fn sink_queue(&self, name: &str) -> Result<SinkQueue, StoreError> {
        Ok(SinkQueue {
            name: name.to_owned(),
            queue: self.db.open_tree(format!("{QUEUE_PREFIX}{name}"))?,
            dead: self.db.open_tree(format!("{DEAD_PREFIX}{name}"))?,
            faults: self.queue_write_faults.clone(),
        })
    }

    /// Names of every sink that has a queue or dead letters in the store.
    pub fn sink_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| {
                let n = String::from_utf8_lossy(n);
                n.strip_prefix(QUEUE_PREFIX)
                    .or_else(|| n.strip_prefix(DEAD_PREFIX))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl SinkQueue {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends an event (not yet flushed: the store's group commit does that).
    pub fn push(&self, seq: u64, json: &[u8]) -> Result<(), StoreError> {
        self.push_many([(seq, json)])
    }

    /// Appends several events, in `seq` order, as records of up to about 32 KiB, all
    /// written in one atomic batch: on error nothing is written.
    pub fn push_many<'a>(
        &self,
        events: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), StoreError> {
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut record = Vec::new();
        let mut first = 0;
        let mut n: u32 = 0;
        let close =
            |records: &mut Vec<(u64, Vec<u8>)>, record: &mut Vec<u8>, first: u64, n: u32| {
                record[..HEADER_BYTES].copy_from_slice(&n.to_be_bytes());
                records.push((first, std::mem::take(record)));
            };
        for (seq, json) in events {
            if n == 0 {
                record.reserve(RECORD_BYTES + 1024);
                record.extend_from_slice(&[0; HEADER_BYTES]);
                first = seq;
            }
            n += 1;
            encode_event(&mut record, seq, json);
            if record.len() >= RECORD_BYTES {
                close(&mut records, &mut record, first, n);
                n = 0;
            }
        }
        if n > 0 {
            close(&mut records, &mut record, first, n);
        }
        if !records.is_empty() && take_fault(&self.faults) {
            return Err(injected_failure());
        }
        // A single record is a plain insert: sled's batches cost much more than one insert.
        if records.len() == 1 {
            let (first, record) = records.swap_remove(0);
            self.queue.insert(first.to_be_bytes(), record)?;
        } else if !records.is_empty() {
            let mut batch = SledBatch::default();
            for (first, record) in records {
                batch.insert(&first.to_be_bytes(), record);
            }
            self.queue.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Up to `max` of the oldest queued events. A corrupt record on the way is an error
    /// ([`StoreError::CorruptQueueRecord`]) until it is [quarantined](SinkQueue::quarantine).
    pub fn peek(&self, max: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        self.collect(self.queue.iter(), 0, max)
    }

    /// Up to `max` of the oldest queued events with a `seq` above `after` (a pipelined sink
    /// reads past what it has sent and not yet seen acknowledged). Corrupt records as in
    /// [`SinkQueue::peek`].
    pub fn peek_after(&self, after: u64, max: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let start = after.saturating_add(1);
        // Records are keyed by their first seq: the one holding `start` is the last at or below it.
        let from = match self.queue.range(..=start.to_be_bytes()).next_back() {
            Some(item) => {
                let (k, _) = item?;
                decode_seq(&k).map_err(|reason| self.corrupt(&k, reason))?
            }
            None => start,
        };
        self.collect(self.queue.range(from.to_be_bytes()..), start, max)
    }

    fn collect(
        &self,
        records: sled::Iter,
        min_seq: u64,
        max: usize,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        for item in records {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let events = decode_seq(&k)
                .and_then(|_| decode_record(&v))
                .map_err(|reason| self.corrupt(&k, reason))?;
            for (seq, json) in events {
                if out.len() >= max {
                    break;
                }
                if seq >= min_seq {
                    out.push(QueuedEvent { seq, json });
                }
            }
        }
        Ok(out)
    }

    fn corrupt(&self, key: &[u8], reason: String) -> StoreError {
        StoreError::CorruptQueueRecord {
            sink: self.name.clone(),
            key: key.to_vec(),
            reason,
        }
    }

    /// Moves the queue record stored under `key` (from a [`StoreError::CorruptQueueRecord`]) to
    /// the dead letters as it is, raw bytes and all, with the reason
    /// [`CORRUPT_RECORD_REASON`]`reason`, in one transaction over both trees. `None`: there is
    /// no record under `key` (any more).
    pub fn quarantine(
        &self,
        key: &[u8],
        reason: &str,
        at_ms: i64,
    ) -> Result<Option<Quarantined>, StoreError> {
        // Where the dead letter goes: the key as a seq (zero-padded or cut to 8 bytes), or the
        // next free seq above it, so no dead letter is overwritten.
        let mut wanted = [0u8; 8];
        let n = key.len().min(8);
        wanted[..n].copy_from_slice(&key[..n]);
        let wanted = u64::from_be_bytes(wanted);
        let result = (&self.queue, &self.dead).transaction(|(queue, dead)| {
            let Some(raw) = queue.get(key)? else {
                return Ok(None);
            };
            let mut dead_seq = wanted;
            while dead.get(dead_seq.to_be_bytes())?.is_some() {
                dead_seq = dead_seq.checked_add(1).ok_or_else(|| {
                    ConflictableTransactionError::Abort(StoreError::Corrupt {
                        key: format!("dead/{}", self.name),
                        reason: "no free dead-letter seq for a corrupt queue record".into(),
                    })
                })?;
            }
            let full_reason = format!(
                "{CORRUPT_RECORD_REASON}{reason} (queue record {}, {} raw bytes kept)",
                describe_key(key),
                raw.len()
            );
            dead.insert(
                &dead_seq.to_be_bytes(),
                encode_dead(at_ms, &full_reason, &raw),
            )?;
            queue.remove(key)?;
            Ok(Some(Quarantined {
                dead_seq,
                bytes: raw.len(),
                events: plausible_count(&raw),
            }))
        });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        })
    }

    /// Deletes acknowledged events.
    pub fn ack(&self, events: &[QueuedEvent]) -> Result<(), StoreError> {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        self.ack_seqs(&seqs)
    }

    /// Deletes acknowledged events given by `seq`. A partly acknowledged record is rewritten as
    /// its remainder, keyed by the remainder's first `seq`, so the record holding a `seq` is keyed
    /// at or below it: normally the nearest such record, but a requeued dead letter can sit in
    /// between, so the search goes on downwards until it finds the `seq`. Corrupt records on the
    /// way are passed over (they hold no event anyone could have delivered).
    pub fn ack_seqs(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut pending: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        let mut batch = SledBatch::default();
        while let Some(seq) = pending.pop_first() {
            for item in self.queue.range(..=seq.to_be_bytes()).rev() {
                let (k, v) = item?;
                let Ok(key) = decode_seq(&k) else { continue };
                let Ok(events) = decode_record(&v) else {
                    continue;
                };
                if !events.iter().any(|(s, _)| *s == seq) {
                    continue;
                }
                let remaining: Vec<&(u64, IVec)> = events
                    .iter()
                    .filter(|(s, _)| *s != seq && !pending.remove(s))
                    .collect();
                batch.remove(&key.to_be_bytes());
                if let Some((first, _)) = remaining.first() {
                    let mut record = (remaining.len() as u32).to_be_bytes().to_vec();
                    for (seq, json) in &remaining {
                        encode_event(&mut record, *seq, json);
                    }
                    batch.insert(&first.to_be_bytes(), record);
                }
                break;
            }
        }
        self.queue.apply_batch(batch)?;
        Ok(())
    }

    /// Moves events to the dead letters with `reason`.
    pub fn dead_letter(
        &self,
        events: &[QueuedEvent],
        reason: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut dead = SledBatch::default();
        for e in events {
            dead.insert(&e.seq.to_be_bytes(), encode_dead(at_ms, reason, &e.json));
        }
        self.dead.apply_batch(dead)?;
        self.ack(events)
    }

    /// Number of queued events. Reads every record header: not for the hot path. A corrupt
    /// header counts for at most as many events as its record's size can hold.
    pub fn count(&self) -> usize {
        self.queue
            .iter()
            .values()
            .filter_map(Result::ok)
            .map(|v| plausible_count(&v))
            .sum()
    }

    /// Every dead letter, oldest first. Corrupt records are reported as errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for item in self.dead.iter() {
            let (k, v) = item?;
            let seq = decode_seq(&k).map_err(|reason| StoreError::Corrupt {
                key: format!("dead/{} {}", self.name, describe_key(&k)),
                reason,
            })?;
            out.push(decode_dead(seq, &v)?);
        }
        Ok(out)
    }

    /// Moves dead letters back into the queue (all of them, or those with the given `seq`s).
    /// They keep their `seq`, so they are delivered before anything queued after them. Dead
    /// letters that hold a corrupt queue record (see [`CORRUPT_RECORD_REASON`]) are not events
    /// and stay where they are: list them to inspect the raw bytes, purge them to be rid of them.
    pub fn requeue(&self, only: Option<&[u64]>) -> Result<usize, StoreError> {
        let letters = self.dead_letters()?;
        let mut n = 0;
        for l in letters {
            if only.is_some_and(|s| !s.contains(&l.seq))
                || l.reason.starts_with(CORRUPT_RECORD_REASON)
            {
                continue;
            }
            // Queue first, then forget the dead letter: a crash in between leaves a duplicate.
            self.insert_in_order(l.seq, &l.json)?;
            self.dead.remove(l.seq.to_be_bytes())?;
            n += 1;
        }
        Ok(n)
    }

    /// Puts one event back where its `seq` belongs: into the record whose span holds it (so
    /// records never overlap and the queue reads in `seq` order), or as a record of its own. A
    /// corrupt record below it is left for the worker to quarantine, unless it sits under the
    /// very key the event needs (then it is an error: the raw bytes must not be overwritten).
    fn insert_in_order(&self, seq: u64, json: &[u8]) -> Result<(), StoreError> {
        if let Some(item) = self.queue.range(..=seq.to_be_bytes()).next_back() {
            let (k, v) = item?;
            match decode_seq(&k).and_then(|key| Ok((key, decode_record(&v)?))) {
                Ok((key, mut events)) => {
                    if events.iter().any(|(s, _)| *s == seq) {
                        return Ok(());
                    }
                    if events.last().is_some_and(|(last, _)| *last > seq) {
                        let at = events.partition_point(|(s, _)| *s < seq);
                        events.insert(at, (seq, IVec::from(json)));
                        let mut record = (events.len() as u32).to_be_bytes().to_vec();
                        for (s, j) in &events {
                            encode_event(&mut record, *s, j);
                        }
                        self.queue.insert(key.to_be_bytes(), record)?;
                        return Ok(());
                    }
                }
                Err(reason) if k.as_ref() == seq.to_be_bytes() => {
                    return Err(self.corrupt(&k, reason));
                }
                Err(_) => {}
            }
        }
        let mut record = 1u32.to_be_bytes().to_vec();
        encode_event(&mut record, seq, json);
        self.queue.insert(seq.to_be_bytes(), record)?;
        Ok(())
    }

    /// Removes dead letters (all, or the given `seq`s). A dead letter whose key is not a `seq`
    /// (only corruption writes one) goes only with all of them.
    pub fn purge_dead(&self, only: Option<&[u64]>) -> Result<usize, StoreError> {
        let mut dead = SledBatch::default();
        let mut n = 0;
        for item in self.dead.iter() {
            let (k, _) = item?;
            let selected = match (only, decode_seq(&k)) {
                (None, _) => true,
                (Some(seqs), Ok(seq)) => seqs.contains(&seq),
                (Some(_), Err(_)) => false,
            };
            if selected {
                dead.remove(k);
                n += 1;
            }
        }
        self.dead.apply_batch(dead)?;
        Ok(n)
    }
}

/// A queue or dead-letter key as it appears in messages: the `seq` when it is one, else hex.
pub(crate) fn describe_key(k: &[u8]) -> String {
    match decode_seq(k) {
        Ok(seq) => seq.to_string(),
        Err(_) => format!("0x{}", hex::encode(k)),
    }
}

fn decode_seq(k: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = k
        .try_into()
        .map_err(|_| format!("key of {} bytes is not a u64", k.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode_event(record: &mut Vec<u8>, seq: u64, json: &[u8]) {
    record.extend_from_slice(&seq.to_be_bytes());
    record.extend_from_slice(&(json.len() as u32).to_be_bytes());
    record.extend_from_slice(json);
}

/// The event count a record's header claims, but never more than its size can hold.
fn plausible_count(v: &[u8]) -> usize {
    let Some(header) = v.get(..HEADER_BYTES) else {
        return 0;
    };
    let claimed = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    claimed.min((v.len() - HEADER_BYTES) / EVENT_OVERHEAD)
}

/// The `(seq, json)` events of a queue record; `Err` says why it is corrupt. Every length is
/// checked against the record's bytes before it is used, the count included: no allocation is
/// larger than the record allows.
fn decode_record(v: &IVec) -> Result<Vec<(u64, IVec)>, String> {
    let header: [u8; HEADER_BYTES] = v
        .get(..HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| format!("record of {} bytes has no header", v.len()))?;
    let n = u32::from_be_bytes(header) as usize;
    let room = (v.len() - HEADER_BYTES) / EVENT_OVERHEAD;
    if n > room {
        return Err(format!(
            "header claims {n} events, the record's {} bytes hold at most {room}",
            v.len()
        ));
    }
    let field = |at: usize, len: usize| at.checked_add(len).and_then(|end| v.get(at..end));
    let mut out = Vec::with_capacity(n);
    let mut at = HEADER_BYTES;
    for i in 0..n {
        let seq: [u8; 8] = field(at, 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("event {i}: truncated seq"))?;
        let len: [u8; 4] = field(at + 8, 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("event {i}: truncated length"))?;
        let start = at + EVENT_OVERHEAD;
        let len = u32::from_be_bytes(len) as usize;
        if field(start, len).is_none() {
            return Err(format!(
                "event {i}: {len} bytes of text, {} left in the record",
                v.len() - start
            ));
        }
        out.push((u64::from_be_bytes(seq), v.subslice(start, len)));
        at = start + len;
    }
    if at != v.len() {
        return Err(format!(
            "{} bytes after the last of {n} events",
            v.len() - at
        ));
    }
    Ok(out)
}

fn encode_dead(at_ms: i64, reason: &str, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + reason.len() + json.len());
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    v.extend_from_slice(reason.as_bytes());
    v.extend_from_slice(json);
    v
}

fn decode_dead(seq: u64, v: &[u8]) -> Result<DeadLetter, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: format!("dead letter {seq}"),
        reason: format!("truncated record of {} bytes", v.len()),
    };
    let at_ms: [u8; 8] = v
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let len: [u8; 4] = v
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let end = 12usize
        .checked_add(u32::from_be_bytes(len) as usize)
        .ok_or_else(corrupt)?;
    let reason = v.get(12..end).ok_or_else(corrupt)?;
    let json = v.get(end..).ok_or_else(corrupt)?;
    Ok(DeadLetter {
        seq,
        at_ms: i64::from_be_bytes(at_ms),
        reason: String::from_utf8_lossy(reason).into_owned(),
        json: json.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 100, 1 << 20).unwrap();
        (dir, s)
    }

    fn seqs(v: &[QueuedEvent]) -> Vec<u64> {
        v.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn queue_is_in_seq_order_and_ack_deletes() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        for seq in [300u64, 2, 1000, 7] {
            q.push(seq, format!("{{\"seq\":{seq}}}").as_bytes())
                .unwrap();
        }
        let head = q.peek(3).unwrap();
        assert_eq!(seqs(&head), [2, 7, 300]);
        q.ack(&head[..2]).unwrap();
        assert_eq!(seqs(&q.peek(10).unwrap()), [300, 1000]);
        assert_eq!(q.count(), 2);
    }

    #[test]
    fn a_burst_is_one_record_and_partial_acks_keep_the_rest() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        let burst: Vec<(u64, Vec<u8>)> = (10..20u64)
            .map(|seq| (seq, format!("{{\"seq\":{seq}}}").into_bytes()))
            .collect();
        q.push_many(burst.iter().map(|(s, j)| (*s, j.as_slice())))
            .unwrap();
        q.push(20, b"{\"seq\":20}").unwrap();
        assert_eq!(q.queue.len(), 2, "one record per push_many");
        assert_eq!(q.count(), 11);
        // A batch smaller than the record: the rest of the record stays, in order.
        let head = q.peek(4).unwrap();
        assert_eq!(seqs(&head), [10, 11, 12, 13]);
        q.ack(&head).unwrap();
        assert_eq!(q.count(), 7);
        assert_eq!(seqs(&q.peek(100).unwrap()), [14, 15, 16, 17, 18, 19, 20]);
        // A batch spanning two records.
        let next = q.peek(7).unwrap();
        q.dead_letter(&next[..6], "gone", 1).unwrap();
        assert_eq!(seqs(&q.peek(100).unwrap()), [20]);
        assert_eq!(q.requeue(Some(&[19])).unwrap(), 1);
        assert_eq!(seqs(&q.peek(100).unwrap()), [19, 20]);
        let last = q.peek(100).unwrap();
        assert_eq!(last[1].json, b"{\"seq\":20}");
        q.ack(&last).unwrap();
        assert_eq!(q.count(), 0);
    }

    #[test]
    fn a_large_burst_is_cut_into_records_that_keep_the_order() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        let json = vec![b'x'; 300];
        q.push_many((1..=1000u64).map(|seq| (seq, json.as_slice())))
            .unwrap();
        let records = q.queue.len();
        assert!((9..=11).contains(&records), "{records} records");
        assert_eq!(q.count(), 1000);
        let all = q.peek(2000).unwrap();
        assert_eq!(seqs(&all), (1..=1000).collect::<Vec<_>>());
        q.ack(&all[..500]).unwrap();
        assert_eq!(seqs(&q.peek_after(700, 1).unwrap()), [701]);
        assert_eq!(q.count(), 500);
    }

    #[test]
    fn reading_past_unacknowledged_events_and_acknowledging_them_in_order() {
        let (_d, s) = store();
        let q = s.sink_queue("xmpp").unwrap();
        let burst: Vec<(u64, Vec<u8>)> = (1..=10u64).map(|seq| (seq, b"{}".to_vec())).collect();
        q.push_many(burst.iter().map(|(s, j)| (*s, j.as_slice())))
            .unwrap();
        q.push(11, b"{}").unwrap();
        // Three batches in flight; the first two split the first record.
        let a = q.peek(4).unwrap();
        let b = q.peek_after(4, 4).unwrap();
        let c = q.peek_after(8, 4).unwrap();
        assert_eq!(seqs(&b), [5, 6, 7, 8]);
        assert_eq!(seqs(&c), [9, 10, 11]);
        assert!(q.peek_after(11, 4).unwrap().is_empty());
        q.ack(&a).unwrap();
        // The first record is now the remainder keyed 5: b's events are still found.
        q.ack(&b).unwrap();
        assert_eq!(seqs(&q.peek(100).unwrap()), [9, 10, 11]);
        q.ack(&c).unwrap();
        assert_eq!(q.count(), 0);
        // Acknowledging again (a duplicate answer) changes nothing.
        q.ack(&c).unwrap();
        assert_eq!(q.count(), 0);
    }

    #[test]
    fn a_requeued_dead_letter_goes_back_in_seq_order() {
        let (_d, s) = store();
        let q = s.sink_queue("xmpp").unwrap();
        let burst: Vec<(u64, Vec<u8>)> = (1..=10u64).map(|seq| (seq, b"{}".to_vec())).collect();
        q.push_many(burst.iter().map(|(s, j)| (*s, j.as_slice())))
            .unwrap();
        // 5..8 dead-lettered out of the middle of the record (a pipelined sink does that), then
        // 5 and 7 requeued: they go back into the record that spans them.
        let mid = q.peek_after(4, 4).unwrap();
        q.dead_letter(&mid, "test", 0).unwrap();
        assert_eq!(q.requeue(Some(&[7, 5])).unwrap(), 2);
        assert_eq!(seqs(&q.peek(100).unwrap()), [1, 2, 3, 4, 5, 7, 9, 10]);
        assert_eq!(seqs(&q.peek_after(5, 100).unwrap()), [7, 9, 10]);
        // Past the end of every record, and again (nothing doubles).
        q.dead_letter(&q.peek_after(9, 1).unwrap(), "test", 0)
            .unwrap();
        assert_eq!(q.requeue(None).unwrap(), 3);
        assert_eq!(seqs(&q.peek(100).unwrap()), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let all = q.peek(100).unwrap();
        q.ack(&all[4..5]).unwrap();
        assert_eq!(seqs(&q.peek(100).unwrap()), [1, 2, 3, 4, 6, 7, 8, 9, 10]);
        q.ack(&q.peek(100).unwrap()).unwrap();
        assert_eq!(q.count(), 0);
        assert!(q.dead_letters().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        q.queue
            .insert(5u64.to_be_bytes(), &[0, 0, 0, 9, 1][..])
            .unwrap();
        assert!(matches!(
            q.peek(10),
            Err(StoreError::CorruptQueueRecord { .. })
        ));
    }

    #[test]
    fn sinks_are_independent() {
        let (_d, s) = store();
        let a = s.sink_queue("a").unwrap();
        let b = s.sink_queue("b").unwrap();
        a.push(1, b"{}").unwrap();
        assert_eq!(b.count(), 0);
        assert_eq!(s.sink_names(), ["a", "b"]);
    }

    #[test]
    fn dead_letters_keep_the_reason_and_can_be_requeued() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        for seq in 1..=4u64 {
            q.push(seq, format!("{{\"seq\":{seq}}}").as_bytes())
                .unwrap();
        }
        let first_two = q.peek(2).unwrap();
        q.dead_letter(&first_two, "HTTP 400 Bad Request: no", 99)
            .unwrap();
        assert_eq!(seqs(&q.peek(10).unwrap()), [3, 4]);
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].reason, "HTTP 400 Bad Request: no");
        assert_eq!(dead[0].at_ms, 99);
        assert_eq!(dead[1].json, b"{\"seq\":2}");
        assert_eq!(q.requeue(Some(&[2])).unwrap(), 1);
        assert_eq!(seqs(&q.peek(10).unwrap()), [2, 3, 4]);
        assert_eq!(q.requeue(None).unwrap(), 1);
        assert_eq!(seqs(&q.peek(10).unwrap()), [1, 2, 3, 4]);
        assert!(q.dead_letters().unwrap().is_empty());
    }

    #[test]
    fn purge_removes_dead_letters() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        q.push(1, b"{}").unwrap();
        q.push(2, b"{}").unwrap();
        q.dead_letter(&q.peek(2).unwrap(), "gone", 0).unwrap();
        assert_eq!(q.purge_dead(Some(&[1])).unwrap(), 1);
        assert_eq!(q.dead_letters().unwrap().len(), 1);
        assert_eq!(q.purge_dead(None).unwrap(), 1);
    }

    /// A valid record of three events, then every way of breaking it.
    fn broken_records() -> Vec<Vec<u8>> {
        let mut valid = 3u32.to_be_bytes().to_vec();
        for seq in 1..=3u64 {
            encode_event(&mut valid, seq, b"{\"a\":1}");
        }
        let mut broken: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
        let mut huge_count = valid.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        broken.push(huge_count);
        let mut huge_len = valid.clone();
        huge_len[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        broken.push(huge_len);
        let mut trailing = valid.clone();
        trailing.push(0);
        broken.push(trailing);
        broken.push(vec![0xFF; 64]);
        broken
    }

    #[test]
    fn truncated_and_garbage_records_are_errors_naming_the_record_never_panics() {
        for (i, bad) in broken_records().into_iter().enumerate() {
            let (_d, s) = store();
            let q = s.sink_queue("hook").unwrap();
            q.push(1, b"{}").unwrap();
            q.queue.insert(5u64.to_be_bytes(), bad.clone()).unwrap();
            q.push(9, b"{}").unwrap();
            for result in [q.peek(10), q.peek_after(1, 10)] {
                match result {
                    Err(StoreError::CorruptQueueRecord { sink, key, .. }) => {
                        assert_eq!(sink, "hook");
                        assert_eq!(key, 5u64.to_be_bytes(), "case {i}");
                    }
                    other => panic!("case {i} ({bad:?}): {other:?}"),
                }
            }
            // Reads that can go on without it do: the count stays within what the bytes hold,
            // acknowledging around it works.
            assert!(q.count() <= 2 + bad.len() / EVENT_OVERHEAD, "case {i}");
            q.ack_seqs(&[9]).unwrap();
            assert_eq!(
                q.queue.len(),
                2,
                "case {i}: 9 acknowledged past the corrupt record"
            );
        }
    }

    #[test]
    fn a_quarantined_record_becomes_a_dead_letter_with_its_raw_bytes() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        q.push(1, b"{\"seq\":1}").unwrap();
        q.queue
            .insert(5u64.to_be_bytes(), &[0, 0, 0, 9, 1][..])
            .unwrap();
        // A key that is not a seq at all.
        q.queue.insert(&b"xyz"[..], &b"zzz"[..]).unwrap();
        q.push(9, b"{\"seq\":9}").unwrap();
        // A dead letter already at 5: the record goes to the next free seq, nothing overwritten.
        q.dead
            .insert(5u64.to_be_bytes(), encode_dead(1, "earlier", b"{}"))
            .unwrap();
        let mut seen = Vec::new();
        let events = loop {
            match q.peek(10) {
                Ok(events) => break events,
                Err(StoreError::CorruptQueueRecord { key, reason, .. }) => {
                    let moved = q.quarantine(&key, &reason, 7).unwrap().unwrap();
                    assert!(
                        q.quarantine(&key, &reason, 7).unwrap().is_none(),
                        "moved once"
                    );
                    seen.push((key, moved));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(seqs(&events), [1, 9]);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].1.dead_seq, 6);
        assert_eq!(seen[0].1.bytes, 5);
        assert_eq!(seen[0].1.events, 0);
        let dead = q.dead_letters().unwrap();
        let record = dead.iter().find(|l| l.seq == 6).unwrap();
        assert_eq!(record.json, [0, 0, 0, 9, 1]);
        assert_eq!(record.at_ms, 7);
        assert!(
            record
                .reason
                .starts_with("corrupt queue record: header claims 9 events"),
            "{}",
            record.reason
        );
        assert!(
            record.reason.contains("queue record 5, 5 raw bytes kept"),
            "{}",
            record.reason
        );
        let odd = dead.iter().find(|l| l.json == b"zzz").unwrap();
        assert!(
            odd.reason.contains("queue record 0x78797a"),
            "{}",
            odd.reason
        );
        // Requeueing puts back the event, never the raw records.
        assert_eq!(q.requeue(None).unwrap(), 1);
        assert_eq!(seqs(&q.peek(10).unwrap()), [1, 5, 9]);
        assert_eq!(q.dead_letters().unwrap().len(), 2);
        assert_eq!(q.purge_dead(None).unwrap(), 2);
    }

    #[test]
    fn truncated_dead_letters_are_errors_not_panics() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        let valid = encode_dead(3, "why", b"{}");
        let mut huge_reason = valid.clone();
        huge_reason[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        for bad in (0..11).map(|n| valid[..n].to_vec()).chain([huge_reason]) {
            q.dead.insert(1u64.to_be_bytes(), bad.clone()).unwrap();
            assert!(
                matches!(q.dead_letters(), Err(StoreError::Corrupt { .. })),
                "{bad:?}"
            );
        }
        q.dead.insert(&b"k"[..], valid).unwrap();
        assert!(q.dead_letters().is_err());
        assert_eq!(q.purge_dead(Some(&[1])).unwrap(), 1);
        assert_eq!(q.purge_dead(None).unwrap(), 1);
    }

    #[test]
    fn a_requeued_event_never_overwrites_a_corrupt_record_under_its_key() {
        let (_d, s) = store();
        let q = s.sink_queue("hook").unwrap();
        q.queue.insert(5u64.to_be_bytes(), &b"bad"[..]).unwrap();
        q.dead
            .insert(5u64.to_be_bytes(), encode_dead(1, "x", b"{}"))
            .unwrap();
        q.dead
            .insert(7u64.to_be_bytes(), encode_dead(1, "x", b"{}"))
            .unwrap();
        assert!(matches!(
            q.requeue(Some(&[5])),
            Err(StoreError::CorruptQueueRecord { .. })
        ));
        assert_eq!(q.queue.get(5u64.to_be_bytes()).unwrap().unwrap(), b"bad");
        // Above it, the event goes into a record of its own.
        assert_eq!(q.requeue(Some(&[7])).unwrap(), 1);
        assert_eq!(seqs(&q.peek_after(6, 10).unwrap()), [7]);
    }
}
