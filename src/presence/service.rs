//! The presence service: the one owner of the [`Tracker`] and the [`Privileges`] table.
//!
//! It consumes what the connection routes to it ([`PresenceInbound`]) in stream order, applies
//! it to the tracker, numbers the resulting events, and persists them in one group commit: the
//! events into every sink's outbox queue, then the table changes into the store's presence
//! journal (so a restart neither loses transitions nor re-announces resources that stayed
//! online). It answers [`PresenceReader`] queries between commits.
//!
//! **Trust.** Only the domains in `component.server_domains` may advertise privileges, and only
//! their users' presences count, and only while that domain granted presence permission; the
//! rest is ignored with a WARN (the first time per connection and domain) naming the key to set.
//!
//! **Snapshots.** At each login it opens a snapshot. A domain's advertisement starts that
//! domain's probe ([`super::probe`]); once every probe of the connection is answered, the
//! snapshot is complete and resources it did not confirm are reported offline
//! (`source: "resync"`). `presence.snapshot_timeout` closes it if the answers never come.
//!
//! **Durability.** A commit whose outbox write fails keeps its events and table changes and is
//! retried (ERROR each time, backing off up to 5 s); meanwhile nothing new is read, so the
//! connection's reading pauses too. The table never records a change whose event is not in the
//! outbox.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::ejabberd_api::{self, ApiAnswer, ApiFuture};
use super::forwarded::{interpret, Ignored, TextLimits};
use super::liveness::{Gone, LivenessLink};
use super::liveness_side::LivenessSide;
use super::privileges::{missing_presence_help, Privileges};
use super::probe::{ProbeAnswer, ProbeFuture, Probes};
use super::query::{PresenceReader, PresenceStats, Query, Readiness, ResourceView, TableView};
use super::tracker::{Outcome, ResourceState, StoreOp, Tracker};
use crate::config::{EjabberdApiSettings, PresenceSettings, SnapshotMode};
use crate::events::fanout::Fanout;
use crate::events::{now_millis, PresenceEvent};
use crate::metrics::PresenceMetrics;
use crate::store::{PresenceJournal, SeqAllocator, Store, StoreError};
use crate::xep::privilege::{Advertisement, PresencePerm, PrivilegeError};
use crate::xmpp::inbound::PresenceStanza;
use crate::xmpp::routes::PresenceInbound;
use crate::xmpp::XmppHandle;

/// Most events and table changes persisted in one group commit.
const COMMIT_MAX: usize = 1024;
/// Longest pause between two attempts of a commit whose outbox write failed.
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the service needs besides the store.
pub struct PresenceContext {
    pub settings: PresenceSettings,
    /// `component.server_domains`, lowercase.
    pub server_domains: Vec<String>,
    pub fanout: Fanout,
    pub handle: XmppHandle,
    pub metrics: PresenceMetrics,
    /// The liveness check loop's channels ([`super::liveness::run`]); `None` when
    /// `presence.liveness = "off"`.
    pub liveness: Option<LivenessLink>,
}

pub struct PresenceService {
    tracker: Tracker,
    privileges: Privileges,
    store: Store,
    journal: PresenceJournal,
    seq: SeqAllocator,
    fanout: Fanout,
    handle: XmppHandle,
    server_domains: Vec<String>,
    limits: TextLimits,
    epoch: u64,
    snapshot: SnapshotMode,
    snapshot_timeout: Duration,
    /// When the open snapshot is closed even if the server's answers never come.
    snapshot_deadline: Option<Instant>,
    /// When herald says the server sent no advertisement (reset at each login).
    advert_deadline: Option<Instant>,
    /// A `<delay/>` presence arrived since the last login: the server does send snapshots.
    saw_snapshot: bool,
    /// What the server's software implies for `snapshot = "auto"` (from its disco#info).
    server_snapshot: SnapshotMode,
    probes: Probes,
    /// Domains already warned about on this connection.
    warned: HashSet<String>,
    stats: PresenceStats,
    /// The seq of the last event committed (or of the previous run's last one).
    committed_seq: u64,
    /// Numbered events not yet persisted (see [`PresenceService::commit`]).
    pending_events: Vec<PresenceEvent>,
    /// Table changes not yet persisted.
    pending_ops: Vec<StoreOp>,
    queries: mpsc::Receiver<Query>,
    metrics: PresenceMetrics,
    readiness: watch::Sender<Readiness>,
    liveness: Option<LivenessSide>,
    /// Verdicts of the liveness loop (taken by [`PresenceService::run`]).
    gone: Option<mpsc::Receiver<Gone>>,
    /// `[presence.ejabberd_api]`, its client, and the runtime its requests run on.
    api: Option<(EjabberdApiSettings, reqwest::Client, tokio::runtime::Handle)>,
    /// The API read to start (taken by [`PresenceService::run`]).
    api_request: Option<ApiFuture>,
    /// An API read of this connection is under way: the snapshot waits for it.
    api_pending: bool,
    /// The API answered on this connection: its sessions are a snapshot.
    api_snapshot: bool,
    /// Every probe of this connection confirmed the end of the server's snapshot.
    probes_done: bool,
}

impl PresenceService {
    /// Restores the table persisted by the previous run; returns the service and its read handle.
    pub fn new(store: Store, ctx: PresenceContext) -> Result<(Self, PresenceReader), StoreError> {
        let mut journal = store.presence_journal()?;
        let table = journal.load()?;
        info!(
            resources = table.len(),
            "presence table restored from the store"
        );
        let seq = store.seq_allocator()?;
        let (reader, queries, readiness) = PresenceReader::new();
        let tracker = Tracker::restore(ctx.settings.changes, table);
        let (liveness, gone) = match ctx.liveness {
            Some(link) => (
                Some(LivenessSide::new(
                    link.changes,
                    ctx.settings.liveness,
                    tracker.iter().map(|(jid, _)| jid),
                )),
                Some(link.gone),
            ),
            None => (None, None),
        };
        // Created on the main runtime, whose I/O driver the API's requests need.
        let api = match (
            ctx.settings.ejabberd_api.clone(),
            tokio::runtime::Handle::try_current(),
        ) {
            (Some(api), Ok(runtime)) => Some((api, ejabberd_api::client(), runtime)),
            (Some(_), Err(_)) => {
                error!("presence.ejabberd_api is set but the presence service was created outside a runtime; the admin API is not read");
                None
            }
            (None, _) => None,
        };
        let service = PresenceService {
            tracker,
            liveness,
            gone,
            api,
            api_request: None,
            api_pending: false,
            api_snapshot: false,
            probes_done: false,
            privileges: Privileges::default(),
            committed_seq: seq.last_issued(),
            seq,
            journal,
            store,
            fanout: ctx.fanout,
            handle: ctx.handle,
            server_domains: ctx.server_domains,
            limits: TextLimits {
                max_status_bytes: ctx.settings.max_status_bytes,
            },
            epoch: 0,
            snapshot: ctx.settings.snapshot,
            snapshot_timeout: ctx.settings.snapshot_timeout,
            snapshot_deadline: None,
            advert_deadline: None,
            saw_snapshot: false,
            server_snapshot: SnapshotMode::Auto,
            probes: Probes::default(),
            warned: HashSet::new(),
            stats: PresenceStats::default(),
            pending_events: Vec::new(),
            pending_ops: Vec::new(),
            queries,
            metrics: ctx.metrics,
            readiness,
        };
        Ok((service, reader))
    }

    /// Runs until the connection drops its sender (shutdown), then flushes the store.
    ///
    /// Group commit: after each burst it takes whatever else is already queued (up to
    /// [`COMMIT_MAX`]), then persists the resulting events and table changes before waking the
    /// sinks. A probe answer is acted on only after everything already queued is applied: the
    /// connection queues what it read before an answer ahead of resolving it.
    #[tracing::instrument(name = "presence", skip_all)]
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Vec<PresenceInbound>>) {
        let mut answers: FuturesUnordered<ProbeFuture> = FuturesUnordered::new();
        let mut api_answers: FuturesUnordered<ApiFuture> = FuturesUnordered::new();
        let mut gone = self.gone.take();
        let mut queries_open = true;
        loop {
            if let Some(request) = self.api_request.take() {
                api_answers.push(request);
            }
            let snapshot_deadline = self.snapshot_deadline;
            let advert_deadline = self.advert_deadline;
            tokio::select! {
                burst = inbound.recv() => {
                    let Some(burst) = burst else { break };
                    self.handle_all(burst, &mut answers).await;
                    while self.pending_events.len() + self.pending_ops.len() < COMMIT_MAX {
                        match inbound.try_recv() {
                            Ok(burst) => self.handle_all(burst, &mut answers).await,
                            Err(_) => break,
                        }
                    }
                }
                Some(answer) = answers.next(), if !answers.is_empty() => {
                    // The connection queued everything it read before this answer first: take
                    // all of it before acting on the answer.
                    while let Ok(burst) = inbound.try_recv() {
                        self.handle_all(burst, &mut answers).await;
                    }
                    self.on_probe_answer(answer);
                }
                Some(answer) = api_answers.next(), if !api_answers.is_empty() => {
                    self.on_api_answer(answer);
                }
                verdict = recv_opt(&mut gone) => match verdict {
                    Some(verdict) => self.on_gone(verdict),
                    None => gone = None,
                },
                query = self.queries.recv(), if queries_open => match query {
                    Some(q) => self.answer(q),
                    None => queries_open = false,
                },
                _ = sleep_until_opt(snapshot_deadline) => {
                    warn!(timeout = ?self.snapshot_timeout, "the server did not confirm the end of its presence snapshot in time; closing it");
                    self.api_pending = false;
                    self.finish_snapshot();
                    if let Some(l) = &mut self.liveness {
                        l.decide();
                    }
                }
                _ = sleep_until_opt(advert_deadline) => {
                    self.advert_deadline = None;
                    error!(jid = %self.handle.jid(), "the server sent no XEP-0356 privilege advertisement: herald sees no presence. Grant the component presence permission (see the README, 'Server configuration')");
                }
            }
            self.commit_until_done().await;
        }
        if let Err(e) = self.commit() {
            error!(events = self.pending_events.len(), changes = self.pending_ops.len(), error = %e, "cannot persist the last events at shutdown; they are lost");
        }
        if let Err(e) = self.seq.release() {
            error!(error = %e, "saving the event sequence at shutdown failed");
        }
        if let Err(e) = self.store.flush().await {
            error!(error = %e, "flushing the store at shutdown failed");
        }
    }

    /// Commits, retrying a failed outbox write with backoff until it succeeds.
    async fn commit_until_done(&mut self) {
        let mut delay = Duration::from_millis(100);
        while let Err(e) = self.commit() {
            error!(events = self.pending_events.len(), first_seq = self.pending_events.first().map(|e| e.seq), retry_in = ?delay, error = %e, "cannot persist events into the outbox; retrying (nothing new is read meanwhile)");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(COMMIT_RETRY_MAX);
        }
    }

    /// Persists the pending events into the outbox (and wakes the sinks), then the pending table
    /// changes. In that order, a crash in between can only repeat an event (the next snapshot
    /// re-derives it), never lose one. When the outbox write fails, both stay pending.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.pending_events.is_empty() {
            self.fanout.publish_many(&self.pending_events)?;
            for e in &self.pending_events {
                self.metrics.emitted(e.source, 1);
            }
            if let Some(last) = self.pending_events.last() {
                self.committed_seq = last.seq;
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
        Ok(())
    }

    async fn handle_all(
        &mut self,
        burst: Vec<PresenceInbound>,
        answers: &mut FuturesUnordered<ProbeFuture>,
    ) {
        for item in burst {
            match item {
                PresenceInbound::Up { epoch } => self.on_up(epoch),
                PresenceInbound::Privileges(adv) => {
                    if let Some(probe) = self.on_privileges(adv).await {
                        answers.push(probe);
                    }
                }
                PresenceInbound::Presence(p) => self.on_presence(&p),
                PresenceInbound::Down => {}
            }
        }
    }

    fn on_up(&mut self, epoch: u64) {
        self.epoch = epoch;
        // Privileges belong to a connection: the server advertises them again.
        self.privileges.clear();
        self.probes.reset(epoch);
        self.warned.clear();
        self.saw_snapshot = false;
        self.server_snapshot = SnapshotMode::Auto;
        self.api_pending = false;
        self.api_snapshot = false;
        self.probes_done = false;
        if let Some(l) = &mut self.liveness {
            l.connected();
        }
        self.advert_deadline = Some(Instant::now() + self.snapshot_timeout);
        if self.snapshot != SnapshotMode::Never {
            self.tracker.begin_snapshot();
            self.snapshot_deadline = Some(Instant::now() + self.snapshot_timeout);
        }
        self.publish_readiness();
    }

    /// Tells the read handle's [`Readiness`] watchers what this connection has reached.
    fn publish_readiness(&self) {
        let mut privileges: Vec<_> = self
            .server_domains
            .iter()
            .filter_map(|d| self.privileges.get(d).cloned())
            .collect();
        privileges.sort_by(|a, b| a.server.cmp(&b.server));
        self.readiness.send_replace(Readiness {
            epoch: self.epoch,
            privileges,
            snapshot_done: self.snapshot_deadline.is_none(),
        });
    }

    async fn on_privileges(
        &mut self,
        adv: Result<Advertisement, PrivilegeError>,
    ) -> Option<ProbeFuture> {
        let adv = match adv {
            Ok(adv) => adv,
            Err(e) => {
                error!(error = %e, "the server's privilege advertisement could not be parsed");
                return None;
            }
        };
        let domain = adv.server.to_lowercase();
        if !self.trusted(&domain) {
            self.stats.foreign += 1;
            warn!(from = %adv.server, server_domains = ?self.server_domains, "ignoring a privilege advertisement from a domain outside component.server_domains; if it is your server's domain, add it to component.server_domains");
            return None;
        }
        self.advert_deadline = None;
        for what in &adv.ignored {
            warn!(server = %domain, ignored = %what, "a privilege herald does not understand was ignored; the rest of the advertisement is used");
        }
        if self.privileges.get(&domain) != Some(&adv) {
            info!(server = %domain, ns = adv.ns.as_str(), presence = ?adv.presence, "privileges advertised");
        }
        if !matches!(adv.presence, PresencePerm::ManagedEntity) {
            error!("{}", missing_presence_help(&domain, self.handle.jid()));
            // Without presence herald is blind: silence proves nothing about anyone.
            self.tracker.abandon_snapshot();
            self.snapshot_deadline = None;
            self.privileges.update(Advertisement {
                server: domain,
                ..adv
            });
            self.publish_readiness();
            return None;
        }
        self.privileges.update(Advertisement {
            server: domain.clone(),
            ..adv
        });
        self.publish_readiness();
        let probe = self.probes.probe(&self.handle, &domain).await;
        if probe.is_some() {
            self.request_api_snapshot();
        }
        probe
    }

    fn on_presence(&mut self, p: &PresenceStanza) {
        self.metrics.received.inc();
        let f = match interpret(p, self.limits) {
            Ok(f) => f,
            Err(Ignored::BadJid(why)) => {
                self.stats.invalid_jids += 1;
                debug!(
                    from = ?p.from.as_deref().unwrap_or_default(),
                    why = why.as_str(),
                    "ignoring a presence from an invalid JID"
                );
                return;
            }
            Err(why) => {
                debug!(from = p.from.as_deref().unwrap_or_default(), why = ?why, "ignoring a presence that is not a user's availability");
                return;
            }
        };
        let domain = f.domain();
        if !self.trusted(domain) {
            self.stats.foreign += 1;
            if self.warned.insert(domain.to_owned()) {
                warn!(from = %f.from.as_str(), server_domains = ?self.server_domains, "ignoring presences from a domain outside component.server_domains (first of them on this connection); if it is your server's domain, add it to component.server_domains");
            }
            return;
        }
        // Only the server forwards presences, and only for its own users.
        if !self.privileges.has_presence(domain) {
            debug!(from = %f.from.as_str(), "ignoring a presence from a domain without presence privileges");
            return;
        }
        self.saw_snapshot |= f.delayed;
        if let (Some(l), super::tracker::Update::Available { .. }) = (&mut self.liveness, &f.update)
        {
            l.seen(f.from.as_str());
        }
        if let Some(outcome) =
            self.tracker
                .apply(f.from.as_str(), f.update, f.delayed, now_millis())
        {
            self.settle(outcome);
        }
    }

    fn on_probe_answer(&mut self, answer: ProbeAnswer) {
        if !self.probes.answered(&answer) {
            return;
        }
        if let Some(name) = &answer.software {
            let kind = SnapshotMode::for_server(name);
            info!(server = %answer.domain, software = %name, snapshot = ?kind, "server identified");
            self.server_snapshot = kind;
        }
        if let Some(l) = &mut self.liveness {
            l.server_known(answer.software.as_deref());
            if self.probes.outstanding() == 0 {
                l.decide();
            }
        }
        if answer.snapshot_end && self.probes.outstanding() == 0 {
            self.probes_done = true;
            if !self.api_pending {
                self.finish_snapshot();
            }
        }
    }

    /// Starts this connection's read of ejabberd's admin API, if one is configured (once per
    /// connection: at the first advertisement that grants presence).
    fn request_api_snapshot(&mut self) {
        let Some((api, client, runtime)) = &self.api else {
            return;
        };
        if self.api_pending || self.api_snapshot {
            return;
        }
        self.api_pending = true;
        self.api_request = Some(ejabberd_api::read_sessions(
            runtime,
            client.clone(),
            api.clone(),
            self.epoch,
            self.snapshot_timeout,
        ));
    }

    /// Applies the API's sessions as snapshot presences; the snapshot ends once the probes are
    /// answered too.
    fn on_api_answer(&mut self, answer: ApiAnswer) {
        if answer.epoch != self.epoch || !self.api_pending {
            return;
        }
        self.api_pending = false;
        match answer.sessions {
            Ok(sessions) => {
                info!(
                    sessions = sessions.len(),
                    "sessions read from the ejabberd admin API"
                );
                self.api_snapshot = true;
                for presence in sessions.iter().filter_map(|s| s.presence()) {
                    self.on_presence(&presence);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read the connected sessions from the ejabberd admin API (presence.ejabberd_api); users online before this connection stay unknown until they change presence");
            }
        }
        if self.probes_done {
            self.finish_snapshot();
        }
    }

    fn trusted(&self, domain: &str) -> bool {
        self.server_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Closes the open snapshot: resources it did not confirm went offline while herald was
    /// away, unless the server evidently sends no snapshots (see [`SnapshotMode`]).
    fn finish_snapshot(&mut self) {
        self.snapshot_deadline = None;
        self.publish_readiness();
        if !self.tracker.in_snapshot() {
            return;
        }
        let mode = match self.snapshot {
            // The admin API's sessions are a complete snapshot.
            SnapshotMode::Auto if self.api_snapshot => SnapshotMode::Always,
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
            self.settle(o);
        }
    }

    /// Numbers an outcome's event and stages it, with its table change, for the next commit.
    fn settle(&mut self, outcome: Outcome) {
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
        if let Some(l) = &self.liveness {
            match &outcome.store {
                StoreOp::Put(jid, _) => l.online(jid),
                StoreOp::Delete(jid) => l.offline(jid),
                StoreOp::Nothing => {}
            }
        }
        if outcome.store != StoreOp::Nothing {
            self.pending_ops.push(outcome.store);
        }
    }

    /// A liveness check found `gone.jid` without a session: it is reported offline
    /// (`source: "liveness"`) unless a presence of it arrived since the check began.
    fn on_gone(&mut self, gone: Gone) {
        if !self.liveness.as_ref().is_some_and(|l| l.accept(&gone)) {
            debug!(jid = %gone.jid, "a liveness verdict was overtaken by a presence; ignored");
            return;
        }
        if let Some(outcome) = self.tracker.vanish(&gone.jid) {
            info!(jid = %gone.jid, "the server has no session for this resource any more; reported offline");
            self.settle(outcome);
        }
    }

    /// Answers a read-handle query (only between commits: nothing is pending).
    fn answer(&mut self, query: Query) {
        let started = std::time::Instant::now();
        let view = |resources: Vec<(String, ResourceState)>| TableView {
            seq: self.committed_seq,
            resources: resources.into_iter().map(resource_view).collect(),
            copied_in: started.elapsed(),
        };
        match query {
            Query::User { bare, reply } => {
                let _ = reply.send(view(self.tracker.user(&bare)));
            }
            Query::Table { reply } => {
                let _ = reply.send(view(self.tracker.iter().collect()));
            }
            Query::Stats { reply } => {
                let _ = reply.send(PresenceStats {
                    online: self.tracker.len(),
                    ..self.stats
                });
            }
        }
    }
}

fn resource_view((jid, state): (String, ResourceState)) -> ResourceView {
    ResourceView {
        jid,
        show: state.show.map(String::from),
        status: state.status.map(String::from),
        priority: state.priority,
        since_ms: state.since_ms,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
