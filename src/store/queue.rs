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
#[path = "queue_tests.rs"]
mod tests;
