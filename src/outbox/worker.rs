//! One delivery worker per sink: the only reader of that sink's queue head.
//!
//! Loop: trim the backlog to `max_backlog` (oldest → dead letters), take up to `batch_max`
//! events, deliver them through the [`Transport`], and act on the [`Verdict`]. While a batch is
//! retried nothing after it is attempted, so delivery is in `seq` order. On shutdown the worker
//! keeps delivering what is queued while deliveries succeed, and stops at the first failure:
//! what is left stays in the store for the next start.
//!
//! A queue record that cannot be decoded is moved, raw, to the sink's dead letters (reason
//! `corrupt queue record: …`, one ERROR naming the sink and the record's key), and delivery goes
//! on with the records after it.

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
use crate::metrics::SinkMetrics;
use crate::store::queue::{describe_key, QueuedEvent, SinkQueue};
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
    /// [`run_pipelined`] only, and only once shutdown has begun: how long the acknowledgements
    /// still in flight are waited for before the worker stops (what they cover stays queued).
    /// While herald runs an acknowledgement is waited for as long as it takes: the transport
    /// fails it when its connection dies (see [`Pipelined`]).
    pub ack_timeout: Duration,
}

/// The producer side of one sink's queue: persist, count, wake.
#[derive(Clone)]
pub struct Lane {
    queue: SinkQueue,
    wake: Arc<Notify>,
    /// Events queued and not yet delivered or dead-lettered, as far as this run knows (see
    /// [`Lane::new`]); the backlog bound reads it.
    backlog: Arc<AtomicUsize>,
    /// The highest `seq` this lane has persisted in this run ([`Lane::push_many`]).
    pushed_up_to: Arc<AtomicU64>,
    metrics: SinkMetrics,
}

impl Lane {
    /// Opens a lane over `queue`, counting what a previous run left in it.
    ///
    /// Counting walks the queue (over a second for a million events), so it runs on its own
    /// thread and the worker starts delivering at once; until it is done the backlog figure is
    /// low. The count only feeds the backlog bound, and the bound re-counts exactly before it
    /// moves anything (see `trim_backlog`).
    pub fn new(queue: SinkQueue) -> Lane {
        let backlog = Arc::new(AtomicUsize::new(0));
        let (counted_queue, counted) = (queue.clone(), backlog.clone());
        std::thread::spawn(move || {
            let n = counted_queue.count();
            counted.fetch_add(n, Ordering::Relaxed);
        });
        Lane {
            queue,
            wake: Arc::new(Notify::new()),
            backlog,
            pushed_up_to: Arc::new(AtomicU64::new(0)),
            metrics: SinkMetrics::default(),
        }
    }

    /// The lane with its sink's counters (queued, delivered, retried, dead-lettered).
    pub fn with_metrics(mut self, metrics: SinkMetrics) -> Lane {
        self.metrics = metrics;
        self
    }

    /// Events queued and not yet delivered or dead-lettered, as far as this run knows (see
    /// [`Lane::new`]).
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The oldest undelivered event, if any.
    pub fn oldest(&self) -> Result<Option<QueuedEvent>, StoreError> {
        Ok(self.queue.peek(1)?.into_iter().next())
    }

    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// Persists several events, in `seq` order, as one atomic write, then wakes the worker. On
    /// error nothing of them is persisted.
    ///
    /// Idempotent by `seq`: events at or below the highest `seq` this lane has already persisted
    /// are skipped, so calling it again with the same events (newer ones may follow them) after
    /// a failure queues each event once. `seq`s come from one
    /// [`SeqAllocator`](crate::store::SeqAllocator), which never hands out a number twice, so a
    /// new run starts above everything a previous run queued.
    pub fn push_many(&self, events: &[(u64, String)]) -> Result<(), StoreError> {
        let done = self.pushed_up_to.load(Ordering::Acquire);
        let new = &events[events.partition_point(|(seq, _)| *seq <= done)..];
        let Some((last, _)) = new.last() else {
            return Ok(());
        };
        self.queue
            .push_many(new.iter().map(|(seq, json)| (*seq, json.as_bytes())))?;
        self.pushed_up_to.fetch_max(*last, Ordering::AcqRel);
        self.backlog.fetch_add(new.len(), Ordering::Relaxed);
        self.metrics.queued.inc_by(new.len() as u64);
        self.wake.notify_one();
        Ok(())
    }
}

/// Delivers the lane's queue through `transport` until `shutdown`.
#[tracing::instrument(name = "sink", skip_all, fields(sink = %lane.name()))]
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
        let events = match read_queue(&lane, &sink, None, policy.batch_max) {
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
            match read_queue(&lane, &sink, None, policy.batch_max) {
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
        attempt = attempt.saturating_add(1);
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
                lane.metrics.dead_lettered.inc_by(batch.events.len() as u64);
                backoff.reset();
                return false;
            }
            Verdict::Retry { after, reason } => {
                if shutdown.is_cancelled() {
                    info!(sink = %sink, backlog = lane.backlog.load(Ordering::Relaxed), "stopping with undelivered events; they stay in the outbox");
                    return true;
                }
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                lane.metrics.retries.inc();
                warn!(sink = %sink, batch = %batch.id, attempt, retry_in = ?delay, reason = %reason, "delivery failed; will retry");
                // `sleep` (unlike `Instant + Duration`) cannot overflow, whatever the delay.
                let wait = tokio::time::sleep(delay);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        _ = shutdown.cancelled() => return true,
                        _ = lane.wake.notified() => {
                            if lane.backlog.load(Ordering::Relaxed) > policy.max_backlog {
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
/// in order.
///
/// An acknowledgement is waited for as long as it takes: a late one is not a lost one, and
/// sending again on a stream that is still up would only double the traffic. Only when an
/// acknowledgement fails (the transport's connection died, see [`Pipelined`]) does the worker
/// drop everything in flight and, after the backoff, send again from the oldest
/// unacknowledged event, in order: on the next connection (at least once: the receiver may see
/// a batch twice). After shutdown it waits at most `policy.ack_timeout` for what is in flight.
#[tracing::instrument(name = "sink", skip_all, fields(sink = %lane.name()))]
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
    // The highest seq sent and not known lost; `None`: start at the head of the queue.
    let mut sent_up_to: Option<u64> = None;
    // Once shutdown has begun: when the worker stops waiting for acknowledgements.
    let mut stop_by: Option<Instant> = None;
    loop {
        if in_flight.is_empty() {
            sent_up_to = None;
            trim_backlog(&lane, &policy, &sink);
        }
        if stop_by.is_none() && shutdown.is_cancelled() {
            let now = Instant::now();
            stop_by = Some(now.checked_add(policy.ack_timeout).unwrap_or(now));
        }
        let room = policy.in_flight.saturating_sub(in_flight_events);
        // Over the backlog bound nothing new is sent: once in flight is empty, the trim above runs.
        let over_backlog = lane.backlog.load(Ordering::Relaxed) > policy.max_backlog;
        if room > 0 && !over_backlog {
            let max = policy.batch_max.min(room);
            let events = match read_queue(&lane, &sink, sent_up_to, max) {
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
                        lane.metrics.dead_lettered.inc_by(batch.events.len() as u64);
                    }
                    Err(SendRefused::Closed) => {
                        // The connection is gone for good: herald is stopping.
                        info!(sink = %sink, backlog = lane.backlog.load(Ordering::Relaxed), "stopping with undelivered events; they stay in the outbox");
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
        let stop_wait = async {
            match stop_by {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let done = tokio::select! {
            done = in_flight.next() => done,
            _ = stop_wait => {
                info!(sink = %sink, unacknowledged = in_flight_events, backlog = lane.backlog.load(Ordering::Relaxed), "stopping before every acknowledgement came back; the events stay in the outbox");
                return;
            }
            _ = lane.wake.notified(), if in_flight_events < policy.in_flight => None,
            _ = shutdown.cancelled(), if !shutdown.is_cancelled() => None,
        };
        let Some((id, seqs, verdict)) = done else {
            continue;
        };
        in_flight_events = in_flight_events.saturating_sub(seqs.len());
        match verdict {
            Ok(()) => {
                delivered(&lane, &sink, &id, &seqs);
                backoff.reset();
            }
            Err(reason) => {
                // Everything after it is sent again too, in order.
                in_flight.clear();
                in_flight_events = 0;
                if shutdown.is_cancelled() {
                    info!(sink = %sink, backlog = lane.backlog.load(Ordering::Relaxed), "stopping with undelivered events; they stay in the outbox");
                    return;
                }
                let delay = backoff.next_delay();
                lane.metrics.retries.inc();
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

/// Up to `max` of the oldest queued events (above `after`, if given). A corrupt record on the
/// way is moved to the dead letters, raw, with one ERROR, and the read goes on past it.
fn read_queue(
    lane: &Lane,
    sink: &str,
    after: Option<u64>,
    max: usize,
) -> Result<Vec<QueuedEvent>, StoreError> {
    loop {
        let read = match after {
            None => lane.queue.peek(max),
            Some(seq) => lane.queue.peek_after(seq, max),
        };
        let err = match read {
            Err(StoreError::CorruptQueueRecord {
                key,
                reason,
                sink: _,
            }) => {
                match lane.queue.quarantine(&key, &reason, now_millis())? {
                    Some(moved) => {
                        error!(sink = %sink, key = %describe_key(&key), dead_letter = moved.dead_seq, bytes = moved.bytes, reason = %reason, "corrupt queue record moved to the dead letters (list them with `herald dead-letters list`); delivery goes on with the next records");
                        settle(lane, moved.events);
                        lane.metrics.dead_lettered.inc_by(moved.events as u64);
                        continue;
                    }
                    // Gone already; nothing else removes records, so do not spin on it.
                    None => StoreError::CorruptQueueRecord {
                        sink: lane.name().to_owned(),
                        key,
                        reason,
                    },
                }
            }
            other => return other,
        };
        return Err(err);
    }
}

/// An acknowledged batch: delete it from the queue and count it.
fn delivered(lane: &Lane, sink: &str, batch: &str, seqs: &[u64]) {
    if let Err(e) = lane.queue.ack_seqs(seqs) {
        // The batch stays queued and will be delivered again: a duplicate, not a loss.
        error!(sink = %sink, error = %e, "cannot delete a delivered batch from the outbox");
    }
    settle(lane, seqs.len());
    lane.metrics.delivered.inc_by(seqs.len() as u64);
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
        .backlog
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_sub(n))
        });
}

/// Bounded disk: when the backlog passes `max_backlog`, the oldest events go to the dead letters.
fn trim_backlog(lane: &Lane, policy: &Policy, sink: &str) {
    if lane.backlog.load(Ordering::Relaxed) <= policy.max_backlog {
        return;
    }
    // The running figure can be off (see `Lane::new`): never dead-letter on its word alone.
    let backlog = lane.queue.count();
    lane.backlog.store(backlog, Ordering::Relaxed);
    if backlog <= policy.max_backlog {
        return;
    }
    let excess = backlog - policy.max_backlog;
    let oldest = match read_queue(lane, sink, None, excess) {
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
            lane.metrics.dead_lettered.inc_by(oldest.len() as u64);
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
#[path = "worker_tests.rs"]
mod tests;
