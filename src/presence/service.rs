//! The presence service: the one task that owns the [`Tracker`] and the [`Privileges`] table.
//!
//! It consumes [`ConnectionEvent`]s in stream order, applies them to the tracker, appends every
//! change to the store's presence journal (so a restart neither loses transitions nor re-announces
//! resources that stayed online), numbers the resulting events and hands them to the fan-out.
//! At each login it opens a snapshot; the connection's `SnapshotDone` closes it, and resources the
//! snapshot did not confirm are reported offline (`source: "resync"`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::privileges::{missing_presence_help, Privileges};
use super::tracker::{Outcome, StoreOp, Tracker};
use crate::config::{PresenceSettings, SnapshotMode};
use crate::events::fanout::Fanout;
use crate::events::{now_millis, PresenceEvent};
use crate::store::{PresenceJournal, SeqAllocator, Store, StoreError};
use crate::xmpp::connection::ConnectionEvent;

pub struct PresenceService {
    tracker: Tracker,
    privileges: Privileges,
    store: Store,
    journal: PresenceJournal,
    seq: SeqAllocator,
    fanout: Fanout,
    component_jid: String,
    epoch: u64,
    snapshot: SnapshotMode,
    snapshot_timeout: Duration,
    /// When the open snapshot is closed even if the server's answer never comes.
    snapshot_deadline: Option<Instant>,
    /// A `<delay/>` presence arrived since the last login: the server does send snapshots.
    saw_snapshot: bool,
    /// What the server's software implies for `snapshot = "auto"` (from its disco#info).
    server_snapshot: SnapshotMode,
    /// Numbered events not yet persisted (see [`PresenceService::commit`]).
    pending_events: Vec<PresenceEvent>,
    /// Table changes not yet persisted.
    pending_ops: Vec<StoreOp>,
}

/// Most events and table changes persisted in one group commit.
const COMMIT_MAX: usize = 1024;

impl PresenceService {
    /// Restores the table persisted by the previous run.
    pub fn new(
        store: Store,
        settings: &PresenceSettings,
        fanout: Fanout,
        component_jid: &str,
    ) -> Result<Self, StoreError> {
        let mut journal = store.presence_journal()?;
        let table = journal.load()?;
        info!(
            resources = table.len(),
            "presence table restored from the store"
        );
        Ok(PresenceService {
            tracker: Tracker::restore(settings.changes, table),
            privileges: Privileges::default(),
            seq: store.seq_allocator()?,
            journal,
            store,
            fanout,
            component_jid: component_jid.to_owned(),
            epoch: 0,
            snapshot: settings.snapshot,
            snapshot_timeout: settings.snapshot_timeout,
            snapshot_deadline: None,
            saw_snapshot: false,
            server_snapshot: SnapshotMode::Auto,
            pending_events: Vec::new(),
            pending_ops: Vec::new(),
        })
    }

    /// Runs until the connection drops its sender (shutdown), then flushes the store.
    ///
    /// Group commit: after each event it takes whatever else is already queued (up to
    /// [`COMMIT_MAX`]), then persists the resulting events and table changes in one batch per
    /// tree before waking the sinks. A quiet stream commits after every event.
    pub async fn run(mut self, mut events: mpsc::Receiver<Vec<ConnectionEvent>>) {
        loop {
            let deadline = self.snapshot_deadline;
            let event = tokio::select! {
                e = events.recv() => e,
                _ = sleep_until_opt(deadline) => {
                    warn!(timeout = ?self.snapshot_timeout, "the server did not confirm the end of its presence snapshot in time; closing it");
                    self.finish_snapshot().await;
                    self.commit();
                    continue;
                }
            };
            let Some(burst) = event else { break };
            self.handle_all(burst).await;
            while self.pending_events.len() + self.pending_ops.len() < COMMIT_MAX {
                match events.try_recv() {
                    Ok(burst) => self.handle_all(burst).await,
                    Err(_) => break,
                }
            }
            self.commit();
        }
        self.commit();
        if let Err(e) = self.seq.release() {
            error!(error = %e, "saving the event sequence at shutdown failed");
        }
        if let Err(e) = self.store.flush().await {
            error!(error = %e, "flushing the store at shutdown failed");
        }
    }

    /// Persists the pending events into the outbox (and wakes the sinks), then the pending table
    /// changes. In that order, a crash in between can only repeat an event (the next snapshot
    /// re-derives it), never lose one.
    pub fn commit(&mut self) {
        if !self.pending_events.is_empty() {
            if let Err(e) = self.fanout.publish_many(&self.pending_events) {
                error!(events = self.pending_events.len(), first_seq = self.pending_events[0].seq, error = %e, "cannot persist events into the outbox");
            }
            self.pending_events.clear();
        }
        if !self.pending_ops.is_empty() {
            if let Err(e) = self.journal.append(&self.pending_ops) {
                error!(error = %e, "cannot persist presence changes; the whole table is written again at the next commit");
            }
            self.pending_ops.clear();
            if self.journal.wants_compaction(self.tracker.len()) {
                if let Err(e) = self.journal.compact(self.tracker.iter()) {
                    error!(error = %e, "cannot compact the presence journal; it keeps growing until the next try");
                }
            }
        }
    }

    async fn handle_all(&mut self, burst: Vec<ConnectionEvent>) {
        for event in burst {
            self.handle(event).await;
        }
    }

    pub async fn handle(&mut self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Up { epoch } => {
                self.epoch = epoch;
                // Privileges belong to a connection: the server advertises them again.
                self.privileges.clear();
                self.saw_snapshot = false;
                self.server_snapshot = SnapshotMode::Auto;
                if self.snapshot != SnapshotMode::Never {
                    self.tracker.begin_snapshot();
                    self.snapshot_deadline = Some(Instant::now() + self.snapshot_timeout);
                }
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
                    // Without presence herald is blind: silence proves nothing about anyone.
                    self.tracker.abandon_snapshot();
                    self.snapshot_deadline = None;
                }
                self.privileges.update(adv);
            }
            ConnectionEvent::Presence {
                from,
                update,
                delayed,
            } => {
                // Only the server forwards presences, and only for its own users: a remote
                // user's directed presence to herald is not a user of this server.
                if !self.privileges.has_presence(domain_of(&from)) {
                    debug!(from = %from, "ignoring a presence from a domain without presence privileges");
                    return;
                }
                self.saw_snapshot |= delayed;
                if let Some(outcome) = self.tracker.apply(&from, update, delayed, now_millis()) {
                    self.settle(outcome).await;
                }
            }
            ConnectionEvent::SnapshotDone { epoch } => {
                if epoch == self.epoch {
                    self.finish_snapshot().await;
                }
            }
            ConnectionEvent::ServerSoftware { domain, name } => {
                let kind = SnapshotMode::for_server(&name);
                info!(server = %domain, software = %name, snapshot = ?kind, "server identified");
                self.server_snapshot = kind;
            }
            ConnectionEvent::Down => {}
        }
    }

    /// Closes the open snapshot: resources it did not confirm went offline while herald was
    /// away, unless the server evidently sends no snapshots (see [`SnapshotMode`]).
    async fn finish_snapshot(&mut self) {
        self.snapshot_deadline = None;
        if !self.tracker.in_snapshot() {
            return;
        }
        let mode = match self.snapshot {
            SnapshotMode::Auto => self.server_snapshot,
            configured => configured,
        };
        if mode == SnapshotMode::Never || (mode == SnapshotMode::Auto && !self.saw_snapshot) {
            self.tracker.abandon_snapshot();
            info!(
                online = self.tracker.len(),
                "the server sent no presence snapshot; keeping the presence table as it is"
            );
            return;
        }
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

    /// Numbers an outcome's event and stages it, with its table change, for the next commit.
    async fn settle(&mut self, outcome: Outcome) {
        if let Some((source, args)) = outcome.event {
            match self.seq.next_seq() {
                Ok(seq) => {
                    self.pending_events
                        .push(PresenceEvent::new(seq, now_millis(), source, args))
                }
                Err(e) => {
                    // Without a reserved seq the promise "never reused" could break: say so loudly.
                    error!(error = %e, user = %args.user, "cannot reserve an event sequence number; event not emitted");
                }
            }
        }
        if outcome.store != StoreOp::Nothing {
            self.pending_ops.push(outcome.store);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `user@domain/resource` → `domain`.
fn domain_of(jid: &str) -> &str {
    let bare = jid.split('/').next().unwrap_or(jid);
    bare.rsplit('@').next().unwrap_or(bare)
}

#[cfg(test)]
mod tests {
    #[test]
    fn domain_of_full_and_bare_jids() {
        assert_eq!(super::domain_of("alice@example.org/phone"), "example.org");
        assert_eq!(super::domain_of("alice@example.org"), "example.org");
        assert_eq!(super::domain_of("example.org/x"), "example.org");
    }
}
