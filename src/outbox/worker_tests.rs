//! Unit tests of [`super`].

use super::*;
use std::sync::Mutex;
use tokio::sync::{oneshot, watch};

fn ev(seqs: &[u64]) -> Vec<QueuedEvent> {
    seqs.iter()
        .map(|&seq| QueuedEvent {
            seq,
            json: (&b"{}"[..]).into(),
        })
        .collect()
}

#[test]
fn batch_ids_name_the_exact_contents() {
    assert_eq!(batch_id(&ev(&[1, 2, 3])), batch_id(&ev(&[1, 2, 3])));
    assert_ne!(batch_id(&ev(&[1, 3])), batch_id(&ev(&[1, 2, 3])));
    assert_ne!(batch_id(&ev(&[1, 3, 5])), batch_id(&ev(&[1, 2, 5])));
    assert!(batch_id(&ev(&[7, 9])).starts_with("7-9-"));
}

fn policy(batch_max: usize, in_flight: usize) -> Policy {
    Policy {
        batch_max,
        batch_delay: Duration::ZERO,
        max_backlog: 1_000,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(10),
        in_flight,
        ack_timeout: Duration::from_millis(50),
    }
}

fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    seqs.map(|seq| (seq, format!("{{\"seq\":{seq}}}")))
        .collect()
}

/// Opens the store in `dir`; sled's flusher thread may hold a store dropped a moment ago
/// for a few milliseconds, so a failed open is retried briefly.
fn open(dir: &std::path::Path) -> crate::store::Store {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match crate::store::Store::open(dir, 100, 1 << 20) {
            Ok(s) => return s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A store whose queue of sink `x` holds garbage under key `garbage_key`, written with
/// sled itself as bit rot or a torn write would leave it.
fn store_with_garbage(
    dir: &std::path::Path,
    garbage_key: u64,
    garbage: &[u8],
) -> crate::store::Store {
    {
        let db = sled::open(dir).unwrap();
        db.open_tree("queue/x")
            .unwrap()
            .insert(garbage_key.to_be_bytes(), garbage)
            .unwrap();
        db.flush().unwrap();
    }
    open(dir)
}

/// Waits until the worker has deleted every queued event (the queue has no signal of its
/// own to await), within a generous bound.
async fn drained(lane: &Lane) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lane.queue.count() > 0 {
        assert!(Instant::now() < deadline, "queue never drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A pipelined transport whose acknowledgements the test gives (or fails) one by one, or,
/// once `auto_ack` is set, at once. Counts every batch sent.
struct Scripted {
    sent: Mutex<Vec<Vec<u64>>>,
    acks: Mutex<std::collections::VecDeque<oneshot::Sender<Result<(), String>>>>,
    auto_ack: std::sync::atomic::AtomicBool,
    sent_count: watch::Sender<usize>,
}

impl Scripted {
    fn new(auto_ack: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            sent: Mutex::new(Vec::new()),
            acks: Mutex::new(Default::default()),
            auto_ack: auto_ack.into(),
            sent_count: watch::channel(0).0,
        })
    }

    /// Answers the oldest acknowledgement still held.
    fn answer(&self, result: Result<(), String>) {
        let ack = self
            .acks
            .lock()
            .unwrap()
            .pop_front()
            .expect("an ack is held");
        let _ = ack.send(result);
    }

    async fn wait_sent(&self, n: usize) {
        let mut rx = self.sent_count.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|sent| *sent >= n))
            .await
            .expect("batches sent in time")
            .unwrap();
    }

    fn sent(&self) -> Vec<Vec<u64>> {
        self.sent.lock().unwrap().clone()
    }
}

impl Pipelined for Arc<Scripted> {
    fn describe(&self) -> String {
        "scripted".into()
    }

    async fn send(&self, batch: &Batch) -> Result<PendingAck, SendRefused> {
        let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
        self.sent.lock().unwrap().push(seqs);
        self.sent_count.send_modify(|n| *n += 1);
        if self.auto_ack.load(Ordering::SeqCst) {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let (tx, rx) = oneshot::channel();
        self.acks.lock().unwrap().push_back(tx);
        Ok(Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err("ack dropped".into()))
        }))
    }
}

#[tokio::test]
async fn late_acknowledgements_are_waited_for_and_only_a_failed_one_sends_again_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let lane = Lane::new(store.sink_queue("x").unwrap());
    lane.push_many(&events(1..=10)).unwrap();
    let transport = Scripted::new(false);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(run_pipelined(
        lane.clone(),
        transport.clone(),
        policy(3, 9),
        stop.clone(),
    ));
    // Three batches fill the window of 9; once [1, 2, 3] is acknowledged [10] follows.
    transport.wait_sent(3).await;
    transport.answer(Ok(()));
    transport.wait_sent(4).await;
    // The rest of the acknowledgements are late: many times the shutdown wait (50ms) and
    // the backoff (10ms) pass, and nothing is sent again on the live connection.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(transport.sent().len(), 4, "{:?}", transport.sent());
    // The connection dies: the oldest pending acknowledgement fails (the later ones with
    // it). Everything unacknowledged goes out again, in order, acknowledged at once.
    transport.auto_ack.store(true, Ordering::SeqCst);
    transport.answer(Err("the connection to the server was lost".into()));
    transport.wait_sent(7).await;
    drained(&lane).await;
    stop.cancel();
    worker.await.unwrap();
    let sent = transport.sent();
    assert_eq!(
        sent,
        vec![
            vec![1, 2, 3],
            vec![4, 5, 6],
            vec![7, 8, 9],
            vec![10],
            vec![4, 5, 6],
            vec![7, 8, 9],
            vec![10],
        ]
    );
    let total: usize = sent.iter().map(Vec::len).sum();
    assert_eq!(total, 17, "1..=3 once, 4..=10 twice");
}

#[tokio::test]
async fn after_shutdown_late_acknowledgements_are_waited_for_at_most_ack_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let lane = Lane::new(store.sink_queue("x").unwrap());
    lane.push_many(&events(1..=4)).unwrap();
    let transport = Scripted::new(false);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(run_pipelined(
        lane.clone(),
        transport.clone(),
        policy(2, 10),
        stop.clone(),
    ));
    transport.wait_sent(2).await;
    transport.answer(Ok(()));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops without the last acknowledgement")
        .unwrap();
    assert_eq!(transport.sent(), vec![vec![1, 2], vec![3, 4]]);
    let left: Vec<u64> = lane.queue.peek(10).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(left, [3, 4], "unacknowledged events stay queued");
}

/// Delivers every batch at once and records it.
#[derive(Clone, Default)]
struct Recording {
    delivered: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl Transport for Recording {
    fn describe(&self) -> String {
        "recording".into()
    }

    async fn deliver(&self, batch: &Batch) -> Verdict {
        let seqs = batch.events.iter().map(|e| e.seq).collect();
        self.delivered.lock().unwrap().push(seqs);
        Verdict::Delivered
    }
}

const GARBAGE: &[u8] = b"\x00\x00\x00\x07not a queue record";

fn assert_one_corrupt_dead_letter(lane: &Lane) {
    let dead = lane.queue.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].seq, 4);
    assert_eq!(dead[0].json, GARBAGE, "the raw bytes are kept");
    assert!(
        dead[0].reason.starts_with("corrupt queue record: "),
        "{}",
        dead[0].reason
    );
}

#[tokio::test]
async fn a_corrupt_queue_record_is_dead_lettered_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_garbage(dir.path(), 4, GARBAGE);
    let lane = Lane::new(store.sink_queue("x").unwrap());
    lane.push_many(&events(1..=3)).unwrap();
    lane.push_many(&events(5..=7)).unwrap();
    let transport = Recording::default();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(run(
        lane.clone(),
        transport.clone(),
        policy(2, 2),
        stop.clone(),
    ));
    drained(&lane).await;
    lane.push_many(&events(8..=8)).unwrap();
    drained(&lane).await;
    stop.cancel();
    worker.await.unwrap();
    let delivered: Vec<u64> = transport.delivered.lock().unwrap().concat();
    assert_eq!(delivered, [1, 2, 3, 5, 6, 7, 8]);
    assert_one_corrupt_dead_letter(&lane);
}

#[tokio::test]
async fn a_corrupt_queue_record_is_dead_lettered_and_pipelined_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_garbage(dir.path(), 4, GARBAGE);
    let lane = Lane::new(store.sink_queue("x").unwrap());
    lane.push_many(&events(1..=3)).unwrap();
    lane.push_many(&events(5..=7)).unwrap();
    let transport = Scripted::new(true);
    let stop = CancellationToken::new();
    // Batches of 2 read past [1, 2] in flight and meet the corrupt record reading on.
    let worker = tokio::spawn(run_pipelined(
        lane.clone(),
        transport.clone(),
        policy(2, 10),
        stop.clone(),
    ));
    drained(&lane).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(transport.sent().concat(), [1, 2, 3, 5, 6, 7]);
    assert_one_corrupt_dead_letter(&lane);
}

#[tokio::test]
async fn a_lane_pushed_again_after_a_failure_queues_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let lane = Lane::new(store.sink_queue("x").unwrap());
    store.fail_next_queue_writes(1);
    assert!(lane.push_many(&events(1..=3)).is_err());
    assert_eq!(lane.queue.count(), 0);
    lane.push_many(&events(1..=3)).unwrap();
    // The worker delivers two of them; then the same events again, with newer ones behind
    // (the caller's retry after another lane failed): only the newer ones are added.
    lane.queue.ack_seqs(&[1, 2]).unwrap();
    lane.push_many(&events(1..=5)).unwrap();
    let queued: Vec<u64> = lane.queue.peek(10).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(queued, [3, 4, 5]);
}
