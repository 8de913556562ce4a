//! The presence service: the one task that owns the [`Tracker`] and the [`Privileges`] table.
//!
//! It consumes [`ConnectionEvent`]s in stream order, applies them to the tracker, writes every
//! change through to the store (so a restart neither loses transitions nor re-announces
//! resources that stayed online), numbers the resulting events and hands them to the fan-out.
//! At each login it opens a snapshot; the connection's `SnapshotDone` closes it, and resources the
//! snapshot did not confirm are reported offline (`source: "resync"`).

use tokio::sync::mpsc;
use tracing::{error, info};

use super::privileges::{missing_presence_help, Privileges};
use super::tracker::{Outcome, StoreOp, Tracker};
use crate::config::Changes;
use crate::events::fanout::Fanout;
use crate::events::{now_millis, PresenceEvent};
use crate::store::{SeqAllocator, Store, StoreError};
use crate::xmpp::connection::ConnectionEvent;

pub struct PresenceService {
    tracker: Tracker,
    privileges: Privileges,
    store: Store,
    seq: SeqAllocator,
    fanout: Fanout,
    component_jid: String,
    epoch: u64,
}

impl PresenceService {
    /// Restores the table persisted by the previous run.
    pub fn new(
        store: Store,
        changes: Changes,
        fanout: Fanout,
        component_jid: &str,
    ) -> Result<Self, StoreError> {
        let table = store.load_presence()?;
        info!(
            resources = table.len(),
            "presence table restored from the store"
        );
        Ok(PresenceService {
            tracker: Tracker::restore(changes, table),
            privileges: Privileges::default(),
            seq: store.seq_allocator()?,
            store,
            fanout,
            component_jid: component_jid.to_owned(),
            epoch: 0,
        })
    }

    /// Runs until the connection drops its sender (shutdown), then flushes the store.
    pub async fn run(mut self, mut events: mpsc::Receiver<ConnectionEvent>) {
        while let Some(event) = events.recv().await {
            self.handle(event).await;
        }
        if let Err(e) = self.seq.release() {
            error!(error = %e, "saving the event sequence at shutdown failed");
        }
        if let Err(e) = self.store.flush().await {
            error!(error = %e, "flushing the store at shutdown failed");
        }
    }

    pub async fn handle(&mut self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Up { epoch } => {
                self.epoch = epoch;
                // Privileges belong to a connection: the server advertises them again.
                self.privileges.clear();
                self.tracker.begin_snapshot();
            }
            ConnectionEvent::Privileges(adv) => {
                if self.privileges.get(&adv.server) != Some(&adv) {
                    info!(server = %adv.server, ns = adv.ns.as_str(), presence = ?adv.presence, "privileges advertised");
                }
                if !matches!(
                    adv.presence,
                    crate::xep::privilege::PresencePerm::ManagedEntity
                ) {
                    error!(
                        "{}",
                        missing_presence_help(&adv.server, &self.component_jid)
                    );
                }
                self.privileges.update(adv);
            }
            ConnectionEvent::Presence {
                from,
                update,
                delayed,
            } => {
                if let Some(outcome) = self.tracker.apply(&from, update, delayed, now_millis()) {
                    self.settle(outcome).await;
                }
            }
            ConnectionEvent::SnapshotDone { epoch } => {
                if epoch == self.epoch && self.tracker.in_snapshot() {
                    let outcomes = self.tracker.end_snapshot(now_millis());
                    info!(
                        online = self.tracker.len(),
                        gone_while_away = outcomes.len(),
                        "presence snapshot complete"
                    );
                    for o in outcomes {
                        self.settle(o).await;
                    }
                }
            }
            ConnectionEvent::Down => {}
        }
    }

    /// Publishes an outcome's event into the outbox, then persists the table change. In that
    /// order, a crash in between can only repeat an event (the next snapshot re-derives it),
    /// never lose one.
    async fn settle(&mut self, outcome: Outcome) {
        if let Some((source, args)) = outcome.event {
            match self.seq.next_seq() {
                Ok(seq) => {
                    let event = PresenceEvent::new(seq, now_millis(), source, args);
                    if let Err(e) = self.fanout.publish(&event) {
                        error!(seq, user = %event.args.user, error = %e, "cannot persist an event into the outbox");
                    }
                }
                Err(e) => {
                    // Without a reserved seq the promise "never reused" could break: say so loudly.
                    error!(error = %e, user = %args.user, "cannot reserve an event sequence number; event not emitted");
                }
            }
        }
        let stored = match &outcome.store {
            StoreOp::Nothing => Ok(()),
            StoreOp::Put(jid, state) => self.store.put_presence(jid, state),
            StoreOp::Delete(jid) => self.store.delete_presence(jid),
        };
        if let Err(e) = stored {
            error!(error = %e, "cannot persist a presence change; the table on disk is stale until the next snapshot");
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}
