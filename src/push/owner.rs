//! The push owner: one task that turns the group-chat messages the rooms owner hands on into
//! durable XEP-0357 publishes, and reads app servers' remote disables from the messages inbox.
//!
//! Per batch of messages (up to [`BATCH_MAX`] read at once): [`decide`] each, ask the presence
//! table about every occupant watcher at once (online = present, offline = a ghost), coalesce
//! ([`Coalescer`]), write every new or changed push to the outbox with one flush, then publish.
//! Publishing runs in tasks of their own within the caps of [`Flights`], only while herald is
//! logged in; each task reads the registration (app server, node, options) from the store when
//! it publishes, waits `push.timeout` for the answer and applies the error policy
//! ([`super::answer`]). A push leaves the outbox when its app server answered for good, when
//! its registration is gone, or when it is older than `push.max_age` (dropped, logged). Pushes
//! left in the outbox by an earlier run are published after the first login.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use minidom::Element;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::answer::Next;
use super::attempt::{attempt, TaskCtx};
use super::coalesce::{Coalescer, Offer};
use super::decide::{self, Verdict};
use super::flight::{Flights, Ready};
use super::publish::{self, PendingPush};
use super::{now_ms, record, Push};
use crate::config::PushSettings;
use crate::metrics::{PushMetrics, RemovedBy};
use crate::muc::RoomMessage;
use crate::presence::query::PresenceReader;
use crate::store::PushOutbox;
use crate::xmpp::routes::LinkStatus;
use crate::xmpp::XmppHandle;

/// Capacity of the rooms owner → push owner channel, in messages.
pub const ROOM_MESSAGES_CAPACITY: usize = 1024;
/// Messages read and decided together (one outbox flush for all of their pushes).
pub const BATCH_MAX: usize = 64;

/// Everything the push owner works with.
pub struct PushOwner {
    /// Group-chat messages from the rooms owner.
    pub room_messages: mpsc::Receiver<RoomMessage>,
    /// Other messages (app servers' remote disables among them).
    pub messages: mpsc::Receiver<Element>,
    pub status: watch::Receiver<LinkStatus>,
    pub handle: XmppHandle,
    pub push: Push,
    pub outbox: PushOutbox,
    pub presence: PresenceReader,
    pub settings: PushSettings,
    /// herald's JID: the `from` of every publish.
    pub jid: String,
    pub metrics: PushMetrics,
}

/// Starts the push owner; it stops when `cancel` fires (pushes not yet answered stay in the
/// outbox for the next start).
pub fn spawn(owner: PushOwner, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(run(owner, cancel))
}

/// What a publish task reports.
struct Ended {
    id: u64,
    next: Next,
}

struct State {
    o: PushOwner,
    coalescer: Coalescer,
    flights: Flights,
    /// The id of the held push of each `user\nreg_key`.
    held: HashMap<String, u64>,
    tasks: JoinSet<Ended>,
    ctx: Arc<TaskCtx>,
}

fn slot(user: &str, reg_key: &str) -> String {
    format!("{user}\n{reg_key}")
}

/// Milliseconds from now to `at_ms` (0 when past).
fn until(at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0))
}

async fn run(o: PushOwner, cancel: CancellationToken) {
    let s = &o.settings;
    let mut flights = Flights::new(s.max_in_flight, s.max_in_flight_per_server, s.max_age);
    for (id, p) in o.outbox.load() {
        flights.insert(id, p, false);
    }
    if !flights.is_empty() {
        info!(
            pending = flights.len(),
            "push: publishing the pushes left from the last run after the login"
        );
    }
    let ctx = Arc::new(TaskCtx {
        handle: o.handle.clone(),
        push: o.push.clone(),
        jid: o.jid.clone(),
        timeout: s.timeout,
        metrics: o.metrics.clone(),
    });
    let mut st = State {
        coalescer: Coalescer::new(s.coalesce),
        flights,
        held: HashMap::new(),
        tasks: JoinSet::new(),
        ctx,
        o,
    };
    let (mut rooms_open, mut messages_open, mut status_open) = (true, true, true);
    loop {
        st.o.metrics.pending.set(st.flights.len() as i64);
        st.dispatch();
        let wake = [st.coalescer.next_due(), st.flights.next_retry()]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            _ = cancel.cancelled() => {
                st.drain_room_messages().await;
                break;
            }
            m = st.o.room_messages.recv(), if rooms_open => match m {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH_MAX {
                        match st.o.room_messages.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    st.messages(batch).await;
                }
                None => rooms_open = false,
            },
            m = st.o.messages.recv(), if messages_open => match m {
                Some(el) => st.other_message(el).await,
                None => messages_open = false,
            },
            c = st.o.status.changed(), if status_open => match c {
                Ok(()) => {
                    if matches!(*st.o.status.borrow_and_update(), LinkStatus::Up { .. }) {
                        st.flights.link_up();
                    }
                }
                Err(_) => status_open = false,
            },
            Some(done) = st.tasks.join_next(), if !st.tasks.is_empty() => match done {
                Ok(ended) => st.ended(ended),
                Err(e) => error!(error = %e, "push: a publish task failed"),
            },
            _ = tokio::time::sleep(wake.map_or(Duration::from_secs(3600), until)), if wake.is_some() => {
                st.timer();
            }
        }
    }
    st.tasks.abort_all();
    debug!(pending = st.flights.len(), "push owner stopped");
}

impl State {
    /// At shutdown: decides and persists the room messages already handed over, so that a
    /// message herald read is pushed after the restart rather than lost (rooms are rejoined
    /// without history).
    async fn drain_room_messages(&mut self) {
        loop {
            let mut batch = Vec::new();
            while batch.len() < BATCH_MAX {
                match self.o.room_messages.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.messages(batch).await;
        }
    }

    fn up_epoch(&self) -> Option<u64> {
        match *self.o.status.borrow() {
            LinkStatus::Up { epoch } => Some(epoch),
            LinkStatus::Down => None,
        }
    }

    /// Starts every publish the caps allow (none while herald is not logged in).
    fn dispatch(&mut self) {
        let Some(epoch) = self.up_epoch() else {
            return;
        };
        while let Some(ready) = self.flights.next(now_ms(), epoch) {
            match ready {
                Ready::Expired(id, p) => {
                    info!(user = %p.user, app = %p.app, age_ms = now_ms().saturating_sub(p.first_ms), "push: dropped undelivered, older than push.max_age");
                    self.o.metrics.expired.inc();
                    self.remove(id);
                }
                Ready::Send(id, p) => {
                    let ctx = self.ctx.clone();
                    self.tasks.spawn(async move {
                        let next = attempt(&ctx, &p).await;
                        Ended { id, next }
                    });
                }
            }
        }
    }

    fn remove(&self, id: u64) {
        if let Err(e) = self.o.outbox.remove(id) {
            warn!(error = %e, "push: cannot remove a push from the outbox");
        }
    }

    fn ended(&mut self, e: Ended) {
        if self
            .flights
            .finished(e.id, e.next, now_ms(), self.up_epoch())
            .is_some()
        {
            self.remove(e.id);
        }
    }

    fn timer(&mut self) {
        let now = now_ms();
        self.flights.retry_due(now);
        for (key, _) in self.coalescer.due(now) {
            if let Some(id) = self.held.remove(&key) {
                self.flights.release(id);
            }
        }
    }

    /// Decides, checks presence, coalesces and persists the pushes of `batch`.
    async fn messages(&mut self, batch: Vec<RoomMessage>) {
        let verdicts: Vec<Vec<Verdict>> = batch.iter().map(decide::decide).collect();
        let mut ask: Vec<&str> = batch
            .iter()
            .zip(&verdicts)
            .flat_map(|(m, v)| {
                m.watchers
                    .iter()
                    .zip(v)
                    .filter(|(_, v)| **v == Verdict::PushIfOffline)
                    .map(|(w, _)| w.user.as_str())
            })
            .collect();
        ask.sort_unstable();
        ask.dedup();
        let reader = &self.o.presence;
        // A presence table that cannot answer (herald stopping) counts as offline: a push too
        // many rather than one missing.
        let answers = join_all(
            ask.iter()
                .map(|u| async move { reader.is_online(u).await.unwrap_or(false) }),
        )
        .await;
        let online: HashMap<&str, bool> = ask.iter().copied().zip(answers).collect();
        let mut new: Vec<(String, PendingPush, bool)> = Vec::new();
        let mut replaced: Vec<(u64, PendingPush)> = Vec::new();
        for (m, v) in batch.iter().zip(&verdicts) {
            let Some(c) = decide::counted(m) else {
                continue;
            };
            for (w, verdict) in m.watchers.iter().zip(v) {
                let key = slot(&w.user, &w.reg_key);
                let push = match verdict {
                    Verdict::Skip => false,
                    Verdict::Present => {
                        self.present(&key);
                        false
                    }
                    Verdict::PushIfOffline if online.get(w.user.as_str()) == Some(&true) => {
                        self.present(&key);
                        false
                    }
                    Verdict::Push | Verdict::PushIfOffline => true,
                };
                if !push {
                    continue;
                }
                let (sender, body) = publish::content(&c, &m.room, &self.o.settings);
                let mut p = PendingPush {
                    user: w.user.clone(),
                    reg_key: w.reg_key.clone(),
                    app: w.reg_key.split('<').next().unwrap_or_default().to_owned(),
                    count: 0,
                    sender,
                    body,
                    at_ms: m.at_ms,
                    first_ms: m.at_ms,
                };
                match self.coalescer.offer(&key, now_ms()) {
                    Offer::Now { count } => {
                        p.count = count;
                        new.push((key, p, false));
                    }
                    Offer::Held { count, merged, .. } => {
                        self.o.metrics.coalesced.inc();
                        p.count = count;
                        if let Some(i) = new.iter().rposition(|(k, _, h)| *h && *k == key) {
                            p.first_ms = new[i].1.first_ms;
                            new[i].1 = p;
                        } else if let (true, Some(&id)) = (merged, self.held.get(&key)) {
                            if let Some(old) = self.flights.get(id) {
                                p.first_ms = old.first_ms;
                            }
                            if let Some(r) = replaced.iter_mut().find(|(i, _)| *i == id) {
                                r.1 = p;
                            } else {
                                replaced.push((id, p));
                            }
                        } else {
                            new.push((key, p, true));
                        }
                    }
                }
            }
        }
        if new.is_empty() && replaced.is_empty() {
            return;
        }
        let pushes: Vec<PendingPush> = new.iter().map(|(_, p, _)| p.clone()).collect();
        match self.o.outbox.write(&pushes, &replaced).await {
            Ok(ids) => {
                for ((key, p, held), id) in new.into_iter().zip(ids) {
                    if held {
                        self.held.insert(key, id);
                    }
                    self.flights.insert(id, p, held);
                }
                for (id, p) in replaced {
                    self.flights.replace(id, p);
                }
            }
            Err(e) => {
                error!(error = %e, pushes = pushes.len(), "push: cannot persist pushes; they are dropped")
            }
        }
    }

    /// The user of `key` is present: the count starts again, a held push is dropped.
    fn present(&mut self, key: &str) {
        if self.coalescer.present(key) {
            if let Some(id) = self.held.remove(key) {
                if self.flights.remove_idle(id).is_some() {
                    self.remove(id);
                }
            }
        }
    }

    /// A message that is not a group chat: an app server's remote disable, or dropped.
    async fn other_message(&mut self, el: Element) {
        let Some(d) = record::remote_disable(&el) else {
            debug!(
                from = el.attr("from").unwrap_or_default(),
                "push: a message herald does not act on; dropped"
            );
            return;
        };
        match self.o.push.disable(&d.user, &d.app, Some(&d.node)).await {
            Ok(gone) if !gone.is_empty() => {
                info!(user = %d.user, app = %d.app, node = %d.node, "push: the app server disabled a registration; removed");
                self.o.metrics.removed(RemovedBy::RemoteDisable);
            }
            Ok(_) => {
                debug!(user = %d.user, app = %d.app, "push: remote disable for no registration")
            }
            Err(e) => {
                warn!(error = %e, user = %d.user, "push: cannot remove a remotely disabled registration")
            }
        }
    }
}
