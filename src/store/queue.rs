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

use sled::{Batch as SledBatch, IVec, Tree};

use super::{Store, StoreError};

const QUEUE_PREFIX: &str = "queue/";
/// Records are cut at about this size: sled writes anything much larger (over a quarter of its
/// 512 KiB log segment, counting the rest of the page) as a file of its own.
const RECORD_BYTES: usize = 32 * 1024;
const DEAD_PREFIX: &str = "dead/";

/// One queued event: its `seq` and JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub seq: u64,
    pub json: IVec,
}

/// An event a sink gave up on, with the answer that killed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: u64,
    pub at_ms: i64,
    pub reason: String,
    pub json: Vec<u8>,
}

/// The queue and dead letters of one sink. Cheap to clone.
#[derive(Clone)]
pub struct SinkQueue {
    name: String,
    queue: Tree,
    dead: Tree,
}

impl Store {
    /// Opens (or creates) the queue of sink `name`.
    pub fn sink_queue(&self, name: &str) -> Result<SinkQueue, StoreError> {
        Ok(SinkQueue {
            name: name.to_owned(),
            queue: self.db.open_tree(format!("{QUEUE_PREFIX}{name}"))?,
            dead: self.db.open_tree(format!("{DEAD_PREFIX}{name}"))?,
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

    /// Appends several events, in `seq` order, as records of up to about [`RECORD_BYTES`], all
    /// written in one atomic batch.
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
                record[..4].copy_from_slice(&n.to_be_bytes());
                records.push((first, std::mem::take(record)));
            };
        for (seq, json) in events {
            if n == 0 {
                record.reserve(RECORD_BYTES + 1024);
                record.extend_from_slice(&[0; 4]);
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

    /// Up to `max` of the oldest queued events.
    pub fn peek(&self, max: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        self.collect(self.queue.iter(), 0, max)
    }

    /// Up to `max` of the oldest queued events with a `seq` above `after` (a pipelined sink
    /// reads past what it has sent and not yet seen acknowledged).
    pub fn peek_after(&self, after: u64, max: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let start = after.saturating_add(1);
        // Records are keyed by their first seq: the one holding `start` is the last at or below it.
        let from = match self.queue.range(..=start.to_be_bytes()).next_back() {
            Some(item) => decode_seq(&item?.0)?,
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
            let record = decode_seq(&k)?;
            for (seq, json) in decode_record(record, &v)? {
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

    /// Deletes acknowledged events.
    pub fn ack(&self, events: &[QueuedEvent]) -> Result<(), StoreError> {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        self.ack_seqs(&seqs)
    }

    /// Deletes acknowledged events given by `seq`. A partly acknowledged record is rewritten as
    /// its remainder, keyed by the remainder's first `seq`, so the record holding a `seq` is keyed
    /// at or below it: normally the nearest such record, but a requeued dead letter can sit in
    /// between, so the search goes on downwards until it finds the `seq`.
    pub fn ack_seqs(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut pending: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        let mut batch = SledBatch::default();
        while let Some(seq) = pending.pop_first() {
            for item in self.queue.range(..=seq.to_be_bytes()).rev() {
                let (k, v) = item?;
                let key = decode_seq(&k)?;
                let events = decode_record(key, &v)?;
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

    /// Number of queued events. Reads every record header: not for the hot path.
    pub fn count(&self) -> usize {
        self.queue
            .iter()
            .values()
            .filter_map(Result::ok)
            .filter_map(|v| {
                v.get(..4)
                    .and_then(|h| h.try_into().ok())
                    .map(u32::from_be_bytes)
            })
            .map(|n| n as usize)
            .sum()
    }

    /// Every dead letter, oldest first. Corrupt records are reported as errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for item in self.dead.iter() {
            let (k, v) = item?;
            let seq = decode_seq(&k)?;
            out.push(decode_dead(seq, &v)?);
        }
        Ok(out)
    }

    /// Moves dead letters back into the queue (all of them, or those with the given `seq`s).
    /// They keep their `seq`, so they are delivered before anything queued after them.
    pub fn requeue(&self, only: Option<&[u64]>) -> Result<usize, StoreError> {
        let letters = self.dead_letters()?;
        let mut n = 0;
        for l in letters {
            if only.is_some_and(|s| !s.contains(&l.seq)) {
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
    /// records never overlap and the queue reads in `seq` order), or as a record of its own.
    fn insert_in_order(&self, seq: u64, json: &[u8]) -> Result<(), StoreError> {
        if let Some(item) = self.queue.range(..=seq.to_be_bytes()).next_back() {
            let (k, v) = item?;
            let key = decode_seq(&k)?;
            let mut events = decode_record(key, &v)?;
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
        let mut record = 1u32.to_be_bytes().to_vec();
        encode_event(&mut record, seq, json);
        self.queue.insert(seq.to_be_bytes(), record)?;
        Ok(())
    }

    /// Removes dead letters (all, or the given `seq`s).
    pub fn purge_dead(&self, only: Option<&[u64]>) -> Result<usize, StoreError> {
        let mut dead = SledBatch::default();
        let mut n = 0;
        for item in self.dead.iter() {
            let (k, _) = item?;
            let seq = decode_seq(&k)?;
            if only.is_none_or(|s| s.contains(&seq)) {
                dead.remove(k);
                n += 1;
            }
        }
        self.dead.apply_batch(dead)?;
        Ok(n)
    }
}

fn decode_seq(k: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = k.try_into().map_err(|_| StoreError::Corrupt {
        key: format!("{k:?}"),
        reason: "queue key is not a u64".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode_event(record: &mut Vec<u8>, seq: u64, json: &[u8]) {
    record.extend_from_slice(&seq.to_be_bytes());
    record.extend_from_slice(&(json.len() as u32).to_be_bytes());
    record.extend_from_slice(json);
}

/// The `(seq, json)` events of the queue record keyed `key`.
fn decode_record(key: u64, v: &IVec) -> Result<Vec<(u64, IVec)>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: format!("queue record {key}"),
        reason: reason.to_owned(),
    };
    let header: [u8; 4] = v
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| corrupt("no header"))?;
    let n = u32::from_be_bytes(header) as usize;
    let mut out = Vec::with_capacity(n);
    let mut at = 4;
    for _ in 0..n {
        let seq: [u8; 8] = v
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("truncated seq"))?;
        let len: [u8; 4] = v
            .get(at + 8..at + 12)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("truncated length"))?;
        let start = at + 12;
        let end = start + u32::from_be_bytes(len) as usize;
        if end > v.len() {
            return Err(corrupt("truncated event"));
        }
        out.push((u64::from_be_bytes(seq), v.subslice(start, end - start)));
        at = end;
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
        reason: "truncated record".into(),
    };
    let at_ms = i64::from_be_bytes(
        v.get(..8)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let len = u32::from_be_bytes(
        v.get(8..12)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ) as usize;
    let reason = v.get(12..12 + len).ok_or_else(corrupt)?;
    Ok(DeadLetter {
        seq,
        at_ms,
        reason: String::from_utf8_lossy(reason).into_owned(),
        json: v[12 + len..].to_vec(),
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
        assert!(matches!(q.peek(10), Err(StoreError::Corrupt { .. })));
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
}
