//! Unit tests of [`super`].

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
