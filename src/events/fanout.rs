//! Hands every event to every configured sink: one durable push per sink queue (persist first),
//! then the sink's worker is woken. Called in event order, so each queue is in `seq` order.

use super::PresenceEvent;
use crate::outbox::worker::Lane;
use crate::store::StoreError;

#[derive(Default, Clone)]
pub struct Fanout {
    lanes: Vec<Lane>,
}

impl Fanout {
    pub fn new(lanes: Vec<Lane>) -> Self {
        Fanout { lanes }
    }

    /// Persists several events (in `seq` order) into every sink's queue, one atomic write per
    /// queue.
    ///
    /// Contract on failure: each queue gets all of the events or none of them (sled applies one
    /// queue's write as one batch), but not every queue need fail together: every lane is
    /// tried, the first error is returned, and the queues that did take the events keep them
    /// (their workers may already be delivering them). Calling `publish_many` again with the
    /// same events is safe and is how a caller recovers: a lane skips the events at or below
    /// the highest `seq` it has already persisted ([`Lane::push_many`]), so each queue ends up
    /// with each event exactly once. Newer events may be appended for the retry; none may be
    /// left out (a queue that failed would miss them) and the order must stay.
    pub fn publish_many(&self, events: &[PresenceEvent]) -> Result<(), StoreError> {
        if self.lanes.is_empty() || events.is_empty() {
            return Ok(());
        }
        let rendered: Vec<(u64, String)> = events.iter().map(|e| (e.seq, e.to_json())).collect();
        let mut first_error = None;
        for lane in &self.lanes {
            if let Err(e) = lane.push_many(&rendered) {
                tracing::debug!(sink = lane.name(), error = %e, "cannot persist events into the sink's queue");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Availability, EventArgs, Source};
    use crate::store::Store;

    fn event(seq: u64) -> PresenceEvent {
        PresenceEvent::new(
            seq,
            0,
            Source::Live,
            EventArgs {
                user: format!("u{seq}@example.org/r"),
                presence: Availability::Available,
                show: None,
                status: None,
                priority: 0,
                resources: 1,
            },
        )
    }

    fn queued(store: &Store, sink: &str) -> Vec<u64> {
        store
            .sink_queue(sink)
            .unwrap()
            .peek(100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn a_failed_outbox_write_loses_nothing_and_a_retry_duplicates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100, 1 << 20).unwrap();
        let lanes = ["a", "b", "c"].map(|name| Lane::new(store.sink_queue(name).unwrap()));
        let fanout = Fanout::new(lanes.to_vec());
        let first: Vec<PresenceEvent> = (1..=3).map(event).collect();
        fanout.publish_many(&first).unwrap();

        // The next write fails: that is lane a's; b and c still take the events.
        store.fail_next_queue_writes(1);
        let second: Vec<PresenceEvent> = (4..=6).map(event).collect();
        assert!(fanout.publish_many(&second).is_err());
        assert_eq!(queued(&store, "a"), [1, 2, 3]);
        assert_eq!(queued(&store, "b"), [1, 2, 3, 4, 5, 6]);
        // Meanwhile b's worker delivers some of them (its record is rewritten as the rest).
        store
            .sink_queue("b")
            .unwrap()
            .ack_seqs(&[1, 2, 3, 4])
            .unwrap();

        // The caller retries with what it kept and a newer event behind it; a and b fail this
        // time (the next two writes), c takes only what it misses.
        store.fail_next_queue_writes(2);
        let retry: Vec<PresenceEvent> = (4..=8).map(event).collect();
        assert!(fanout.publish_many(&retry).is_err());
        assert_eq!(queued(&store, "a"), [1, 2, 3]);
        assert_eq!(queued(&store, "b"), [5, 6]);
        assert_eq!(queued(&store, "c"), [1, 2, 3, 4, 5, 6, 7, 8]);

        // Once writes work again, every queue holds every event it has not delivered exactly
        // once, in order: nothing lost, nothing delivered twice.
        let retry: Vec<PresenceEvent> = (4..=9).map(event).collect();
        fanout.publish_many(&retry).unwrap();
        let all: Vec<u64> = (1..=9).collect();
        assert_eq!(queued(&store, "a"), all);
        assert_eq!(queued(&store, "b"), all[4..]);
        assert_eq!(queued(&store, "c"), all);
        // Publishing the same events once more changes nothing.
        fanout.publish_many(&retry).unwrap();
        assert_eq!(queued(&store, "b"), all[4..]);
        assert_eq!(queued(&store, "c"), all);
    }
}
