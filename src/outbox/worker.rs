//! One delivery worker per sink: the only reader of that sink's queue head.
//!
//! Loop: trim the backlog to `max_backlog` (oldest → dead letters), take up to `batch_max`
//! events, deliver them through the [`Transport`], and act on the [`Verdict`]. While a batch is
//! retried nothing after it is attempted, so delivery is in `seq` order. On shutdown the worker
//! keeps delivering what is queued while deliveries succeed, and stops at the first failure:
//! what is left stays in the store for the next start.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use futures::stream::{FuturesOrdered, StreamExt};

use super::{Batch, PendingAck, Pipelined, SendRefused, Transport, Verdict};
use crate::backoff::Backoff;
use crate::events::now_millis;
use crate::store::queue::{QueuedEvent, SinkQueue};
use crate::store::StoreError;

/// How a worker batches and retries.
#[derive(Debug, Clone)]
pub struct Policy {
    pub batch_max: usize,
    /// When fewer than `batch_max` events are queued, wait this long for more.
    pub batch_delay: Duration,
    pub max_backlog: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Most events sent and not yet acknowledged ([`run_pipelined`] only).
    pub in_flight: usize,
    /// How long the oldest unacknowledged batch may wait for its acknowledgement, counted from
    /// when it became the oldest ([`run_pipelined`] only).
    pub ack_timeout: Duration,
}

/// Counters of one sink, readable while it runs.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub backlog: AtomicUsize,
    pub delivered: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// The producer side of one sink's queue: persist, count, wake.
#[derive(Clone)]
pub struct Lane {
    queue: SinkQueue,
    wake: Arc<Notify>,
    stats: Arc<SinkStats>,
}

impl Lane {
    /// Opens a lane over `queue`, counting what a previous run left in it.
    ///
    /// Counting walks the queue (over a second for a million events), so it runs on its own
    /// thread and the worker starts delivering at once; until it is done the backlog figure is
    /// low. The count only feeds statistics and the backlog bound, and the bound re-counts
    /// exactly before it moves anything (see `trim_backlog`).
    pub fn new(queue: SinkQueue) -> Lane {
        let stats = Arc::new(SinkStats::default());
        let (counted_queue, counted_stats) = (queue.clone(), stats.clone());
        std::thread::spawn(move || {
            let n = counted_queue.count();
            counted_stats.backlog.fetch_add(n, Ordering::Relaxed);
        });
        Lane {
            queue,
            wake: Arc::new(Notify::new()),
            stats,
        }
    }

    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// Persists several events (one batch), then wakes the worker.
    pub fn push_many(&self, events: &[(u64, String)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.queue
            .push_many(events.iter().map(|(seq, json)| (*seq, json.as_bytes())))?;
        self.stats
            .backlog
            .fetch_add(events.len(), Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }
}

/// Delivers the lane's queue through `transport` until `shutdown`.
pub async fn run<T: Transport>(
    lane: Lane,
    transport: T,
    policy: Policy,
    shutdown: CancellationToken,
) {
    let sink = transport.describe();
    let mut backoff = Backoff::new(policy.retry_min, policy.retry_max);
    info!(sink = %sink, "delivery worker started");
    loop {
        trim_backlog(&lane, &policy, &sink);
        let events = match lane.queue.peek(policy.batch_max) {
            Ok(e) => e,
            Err(e) => {
                error!(sink = %sink, error = %e, "cannot read the outbox; retrying in 1s");
                if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        if events.is_empty() {
            if wait_for_events(&lane, &shutdown).await {
                return;
            }
            continue;
        }
        let events = if events.len() < policy.batch_max
            && !policy.batch_delay.is_zero()
            && !shutdown.is_cancelled()
        {
            // Let the batch fill a little, then take whatever is there.
            sleep_or_shutdown(policy.batch_delay, &shutdown).await;
            match lane.queue.peek(policy.batch_max) {
                Ok(fuller) if !fuller.is_empty() => fuller,
                _ => events,
            }
        } else {
            events
        };
        if deliver_until_settled(
            &lane,
            &transport,
            &policy,
            &sink,
            &mut backoff,
            &shutdown,
            events,
        )
        .await
        {
            return;
        }
    }
}

/// Delivers one batch until it is acknowledged, dead-lettered, or abandoned because the backlog
/// trim took it. Returns true when the worker must stop.
async fn deliver_until_settled<T: Transport>(
    lane: &Lane,
    transport: &T,
    policy: &Policy,
    sink: &str,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
    events: Vec<QueuedEvent>,
) -> bool {
    // The id names the batch's exact contents (seq range and a hash of the seq list): the same
    // batch keeps it across retries and restarts, a different batch never gets it.
    let id = batch_id(&events);
    let batch = Batch { id, events };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let verdict = transport.deliver(&batch).await;
        match verdict {
            Verdict::Delivered => {
                let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
                delivered(lane, sink, &batch.id, &seqs);
                backoff.reset();
                return false;
            }
            Verdict::DeadLetter { reason } => {
                error!(sink = %sink, batch = %batch.id, first_seq = batch.first_seq(), last_seq = batch.last_seq(), events = batch.events.len(), reason = %reason, "endpoint refused the batch; moved to dead letters (list them with `herald dead-letters list`)");
                if let Err(e) = lane.queue.dead_letter(&batch.events, &reason, now_millis()) {
                    error!(sink = %sink, error = %e, "cannot move a batch to the dead letters; it stays queued");
                    return sleep_or_shutdown(Duration::from_secs(1), shutdown).await;
                }
                settle(lane, batch.events.len());
                lane.stats
                    .dead_lettered
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                backoff.reset();
                return false;
            }
            Verdict::Retry { after, reason } => {
                lane.stats.retries.fetch_add(1, Ordering::Relaxed);
                if shutdown.is_cancelled() {
                    info!(sink = %sink, backlog = lane.stats.backlog.load(Ordering::Relaxed), "stopping with undelivered events; they stay in the outbox");
                    return true;
                }
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                warn!(sink = %sink, batch = %batch.id, attempt, retry_in = ?delay, reason = %reason, "delivery failed; will retry");
                let deadline = Instant::now() + delay;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = shutdown.cancelled() => return true,
                        _ = lane.wake.notified() => {
                            if lane.stats.backlog.load(Ordering::Relaxed) > policy.max_backlog {
                                // The trim will take the oldest events, maybe this batch.
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Delivers the lane's queue through a [`Pipelined`] transport until `shutdown`: batches go out
/// back to back, up to `policy.in_flight` events ahead of the acknowledgements, which come back
/// in order. A failed acknowledgement drops everything in flight and starts again at the head of
/// the queue after the backoff (at least once: the receiver may see a batch twice).
pub async fn run_pipelined<T: Pipelined>(
    lane: Lane,
    transport: T,
    policy: Policy,
    shutdown: CancellationToken,
) {
    let sink = transport.describe();
    let mut backoff = Backoff::new(policy.retry_min, policy.retry_max);
    info!(sink = %sink, "delivery worker started");
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut in_flight_events = 0usize;
    // When the oldest batch in flight became the oldest: its acknowledgement is due by then +
    // `ack_timeout`. Later batches wait behind it, so their own clocks start only then.
    let mut head_since = Instant::now();
    // The highest seq sent and not known lost; `None`: start at the head of the queue.
    let mut sent_up_to: Option<u64> = None;
    loop {
        if in_flight.is_empty() {
            sent_up_to = None;
            trim_backlog(&lane, &policy, &sink);
        }
        let room = policy.in_flight.saturating_sub(in_flight_events);
        // Over the backlog bound nothing new is sent: once in flight is empty, the trim above runs.
        let over_backlog = lane.stats.backlog.load(Ordering::Relaxed) > policy.max_backlog;
        if room > 0 && !over_backlog {
            let max = policy.batch_max.min(room);
            let peeked = match sent_up_to {
                None => lane.queue.peek(max),
                Some(seq) => lane.queue.peek_after(seq, max),
            };
            let events = match peeked {
                Ok(e) => e,
                Err(e) => {
                    error!(sink = %sink, error = %e, "cannot read the outbox; retrying in 1s");
                    if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            if !events.is_empty() {
                let batch = Batch {
                    id: batch_id(&events),
                    events,
                };
                sent_up_to = Some(batch.last_seq());
                match transport.send(&batch).await {
                    Ok(ack) => {
                        if in_flight.is_empty() {
                            head_since = Instant::now();
                        }
                        in_flight_events += batch.events.len();
                        let seqs = batch.events.iter().map(|e| e.seq).collect();
                        in_flight.push_back(in_flight_batch(batch.id, seqs, ack));
                    }
                    Err(SendRefused::DeadLetter(reason)) => {
                        error!(sink = %sink, batch = %batch.id, first_seq = batch.first_seq(), last_seq = batch.last_seq(), events = batch.events.len(), reason = %reason, "batch cannot be delivered; moved to dead letters (list them with `herald dead-letters list`)");
                        if let Err(e) = lane.queue.dead_letter(&batch.events, &reason, now_millis())
                        {
                            error!(sink = %sink, error = %e, "cannot move a batch to the dead letters; it stays queued");
                            if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                                return;
                            }
                            in_flight.clear();
                            in_flight_events = 0;
                            continue;
                        }
                        settle(&lane, batch.events.len());
                        lane.stats
                            .dead_lettered
                            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    }
                    Err(SendRefused::Closed) => {
                        // The connection is gone for good: herald is stopping.
                        info!(sink = %sink, backlog = lane.stats.backlog.load(Ordering::Relaxed), "stopping with undelivered events; they stay in the outbox");
                        return;
                    }
                }
                continue;
            }
        }
        if in_flight.is_empty() {
            if wait_for_events(&lane, &shutdown).await {
                return;
            }
            continue;
        }
        let ack_due = head_since + policy.ack_timeout;
        let done = tokio::select! {
            done = in_flight.next() => done,
            _ = tokio::time::sleep_until(ack_due) => Some((
                "(oldest in flight)".to_owned(),
                Vec::new(),
                Err(format!("no acknowledgement within {:?}", policy.ack_timeout)),
            )),
            _ = lane.wake.notified(), if in_flight_events < policy.in_flight => None,
            _ = shutdown.cancelled(), if !shutdown.is_cancelled() => None,
        };
        let Some((id, seqs, verdict)) = done else {
            continue;
        };
        in_flight_events = in_flight_events.saturating_sub(seqs.len());
        match verdict {
            Ok(()) => {
                head_since = Instant::now();
                delivered(&lane, &sink, &id, &seqs);
                backoff.reset();
            }
            Err(reason) => {
                lane.stats.retries.fetch_add(1, Ordering::Relaxed);
                // Everything after it is sent again too, in order.
                in_flight.clear();
                in_flight_events = 0;
                if shutdown.is_cancelled() {
                    info!(sink = %sink, backlog = lane.stats.backlog.load(Ordering::Relaxed), "stopping with undelivered events; they stay in the outbox");
                    return;
                }
                let delay = backoff.next_delay();
                warn!(sink = %sink, batch = %id, retry_in = ?delay, reason = %reason, "delivery not acknowledged; will send again from the oldest undelivered event");
                if sleep_or_shutdown(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// A batch sent through a pipelined transport: resolves to its id, its events' seqs and the
/// acknowledgement (`Err`: the reason it failed).
type InFlight = Pin<Box<dyn Future<Output = (String, Vec<u64>, Result<(), String>)> + Send>>;

fn in_flight_batch(id: String, seqs: Vec<u64>, ack: PendingAck) -> InFlight {
    Box::pin(async move { (id, seqs, ack.await) })
}

/// An acknowledged batch: delete it from the queue and count it.
fn delivered(lane: &Lane, sink: &str, batch: &str, seqs: &[u64]) {
    if let Err(e) = lane.queue.ack_seqs(seqs) {
        // The batch stays queued and will be delivered again: a duplicate, not a loss.
        error!(sink = %sink, error = %e, "cannot delete a delivered batch from the outbox");
    }
    settle(lane, seqs.len());
    lane.stats
        .delivered
        .fetch_add(seqs.len() as u64, Ordering::Relaxed);
    lane.stats.batches.fetch_add(1, Ordering::Relaxed);
    debug!(sink = %sink, batch = %batch, events = seqs.len(), "delivered");
}

/// With nothing to send: returns true if the worker must stop (shutdown and nothing queued),
/// else waits for new events or the shutdown signal. On shutdown the caller looks once more:
/// the last events may have arrived with the signal.
async fn wait_for_events(lane: &Lane, shutdown: &CancellationToken) -> bool {
    if shutdown.is_cancelled() {
        return true;
    }
    tokio::select! {
        _ = lane.wake.notified() => {}
        _ = shutdown.cancelled() => {}
    }
    false
}

fn settle(lane: &Lane, n: usize) {
    let _ = lane
        .stats
        .backlog
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_sub(n))
        });
}

/// Bounded disk: when the backlog passes `max_backlog`, the oldest events go to the dead letters.
fn trim_backlog(lane: &Lane, policy: &Policy, sink: &str) {
    if lane.stats.backlog.load(Ordering::Relaxed) <= policy.max_backlog {
        return;
    }
    // The running figure can be off (see `Lane::new`): never dead-letter on its word alone.
    let backlog = lane.queue.count();
    lane.stats.backlog.store(backlog, Ordering::Relaxed);
    if backlog <= policy.max_backlog {
        return;
    }
    let excess = backlog - policy.max_backlog;
    let oldest = match lane.queue.peek(excess) {
        Ok(e) => e,
        Err(e) => {
            error!(sink = %sink, error = %e, "cannot read the outbox to trim the backlog");
            return;
        }
    };
    let reason = format!("backlog exceeded max_backlog ({})", policy.max_backlog);
    match lane.queue.dead_letter(&oldest, &reason, now_millis()) {
        Ok(()) => {
            error!(sink = %sink, events = oldest.len(), first_seq = oldest.first().map(|e| e.seq), last_seq = oldest.last().map(|e| e.seq), max_backlog = policy.max_backlog, "backlog over max_backlog: oldest events moved to dead letters");
            settle(lane, oldest.len());
            lane.stats
                .dead_lettered
                .fetch_add(oldest.len() as u64, Ordering::Relaxed);
        }
        Err(e) => error!(sink = %sink, error = %e, "cannot move events to the dead letters"),
    }
}

/// Sleeps; returns true if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// `FIRST-LAST-HASH`, with an FNV-1a hash of every `seq` in the batch.
fn batch_id(events: &[QueuedEvent]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for e in events {
        for b in e.seq.to_be_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let first = events.first().map(|e| e.seq).unwrap_or(0);
    let last = events.last().map(|e| e.seq).unwrap_or(0);
    format!("{first}-{last}-{:08x}", hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A pipelined transport whose acknowledgements the test controls: the first attempt of the
    /// batch starting at `lose_first` is never acknowledged; everything else is at once.
    struct Scripted {
        sent: std::sync::Mutex<Vec<Vec<u64>>>,
        lose_first: u64,
        lost: std::sync::atomic::AtomicBool,
    }

    impl Pipelined for std::sync::Arc<Scripted> {
        fn describe(&self) -> String {
            "scripted".into()
        }

        async fn send(&self, batch: &Batch) -> Result<PendingAck, SendRefused> {
            let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
            self.sent.lock().unwrap().push(seqs);
            if batch.first_seq() == self.lose_first && !self.lost.swap(true, Ordering::SeqCst) {
                return Ok(Box::pin(std::future::pending()));
            }
            Ok(Box::pin(async { Ok(()) }))
        }
    }

    #[tokio::test]
    async fn a_lost_acknowledgement_times_out_and_everything_after_it_is_sent_again_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 100, 1 << 20).unwrap();
        let lane = Lane::new(store.sink_queue("x").unwrap());
        let events: Vec<(u64, String)> = (1..=10).map(|seq| (seq, "{}".to_owned())).collect();
        lane.push_many(&events).unwrap();
        let transport = std::sync::Arc::new(Scripted {
            sent: std::sync::Mutex::new(Vec::new()),
            lose_first: 4,
            lost: std::sync::atomic::AtomicBool::new(false),
        });
        let policy = Policy {
            batch_max: 3,
            batch_delay: Duration::ZERO,
            max_backlog: 1_000,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(10),
            in_flight: 9,
            ack_timeout: Duration::from_millis(200),
        };
        let stop = CancellationToken::new();
        let worker = tokio::spawn(run_pipelined(
            lane.clone(),
            transport.clone(),
            policy,
            stop.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while lane.queue.count() > 0 {
            assert!(Instant::now() < deadline, "queue never drained");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        worker.await.unwrap();
        let sent = transport.sent.lock().unwrap().clone();
        // Three batches in flight (the window is 9); once [1, 2, 3] is acknowledged [10] follows.
        // [4, 5, 6] is never acknowledged, so after the timeout everything from the oldest
        // unacknowledged event goes out again, in order.
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
        assert_eq!(lane.stats.retries.load(Ordering::Relaxed), 1);
    }
}
