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

    /// Persists `event` into every sink's queue. An error means the store refused the write:
    /// the event may be missing from some queues.
    pub fn publish(&self, event: &PresenceEvent) -> Result<(), StoreError> {
        if self.lanes.is_empty() {
            return Ok(());
        }
        let json = event.to_json();
        for lane in &self.lanes {
            lane.push(event.seq, json.as_bytes())?;
        }
        Ok(())
    }

    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }
}
