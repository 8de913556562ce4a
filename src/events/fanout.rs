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

    /// Persists several events (in `seq` order) into every sink's queue, one batch per queue.
    pub fn publish_many(&self, events: &[PresenceEvent]) -> Result<(), StoreError> {
        if self.lanes.is_empty() || events.is_empty() {
            return Ok(());
        }
        let rendered: Vec<(u64, String)> = events.iter().map(|e| (e.seq, e.to_json())).collect();
        for lane in &self.lanes {
            lane.push_many(&rendered)?;
        }
        Ok(())
    }
}
