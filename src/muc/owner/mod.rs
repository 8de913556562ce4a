//! The rooms owner: one task that keeps herald in every room somebody watches, and hands each
//! groupchat message of a joined room to the push owner with the room's occupants and watchers.
//!
//! - Which rooms: those with a [`Watcher`](crate::push::watchers::Watcher), learnt from the push
//!   store at start and from its change notifications (all re-read when they lag).
//! - A join first asks the room's `disco#info` (so herald never creates a room), then sends the
//!   join presence; at most [`MAX_JOINS_IN_FLIGHT`] at once, each answered within
//!   [`JOIN_TIMEOUT`] or retried with backoff. After each login every room is joined again,
//!   spread over [`REJOIN_SPREAD`]; while the link is down no room counts as joined.
//! - Who decides what is pushed is the push owner: this task only forwards messages.
//! - At shutdown it leaves every room it joined, and waits (briefly) until the server has
//!   handled the leaves, so that no ghost occupant stays behind.
//! - It self-pings every room it is in (XEP-0410, [`crate::muc::ping_schedule`]) and joins a
//!   room again when the answer says herald is not in it; and it invites users who dropped out
//!   of a watched room back ([`crate::muc::hints`]). Both are in `health`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod health;
mod traffic;

use super::hints::HintLimiter;
use super::index::WatchIndex;
use super::join::{self, Probe, Wait};
use super::ping_schedule::{Intervals, Schedule};
use super::rooms::{Phase, Publisher, Room};
use super::view::RoomsView;
use super::RoomMessage;
use crate::config::MucSettings;
use crate::metrics::RoomsMetrics;
use crate::presence::query::PresenceReader;
use crate::store::PushStore;
use crate::xmpp::routes::{LinkStatus, RoomInbound};
use crate::xmpp::{IqError, Lane, XmppHandle};

/// Joins (disco#info asked or join presence sent, not answered yet) at once.
pub const MAX_JOINS_IN_FLIGHT: usize = 16;
/// How long a room has to answer the `disco#info` and then the join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Rejoins after a login are spread over this long.
pub const REJOIN_SPREAD: Duration = Duration::from_secs(3);
/// How long the shutdown waits for the server to have handled the leaves.
pub const LEAVE_DEADLINE: Duration = Duration::from_secs(2);

/// What the rooms owner works with.
pub struct RoomsContext {
    pub handle: XmppHandle,
    pub store: PushStore,
    /// herald's JID, the `from` of its joins.
    pub jid: String,
    /// `[push] room_nick`.
    pub nick: String,
    /// To the push owner.
    pub messages: mpsc::Sender<RoomMessage>,
    pub metrics: RoomsMetrics,
    /// `[muc]`: self-ping and rejoin hints.
    pub muc: MucSettings,
    /// Whether a user who dropped out of a room is still online (for rejoin hints).
    pub presence: PresenceReader,
}

/// Starts the rooms owner. It runs until `stop` is cancelled, then leaves every room; the
/// handle completes once the leaves are handled (or [`LEAVE_DEADLINE`] passed).
pub fn spawn(
    ctx: RoomsContext,
    inbox: mpsc::Receiver<RoomInbound>,
    status: watch::Receiver<LinkStatus>,
    stop: CancellationToken,
) -> (RoomsView, JoinHandle<()>) {
    let (tx, view) = RoomsView::channel();
    let publisher = Publisher {
        tx,
        metrics: ctx.metrics.clone(),
    };
    let pings = Schedule::new(Intervals::from_settings(&ctx.muc), rand::random());
    let owner = Owner {
        ctx,
        pings,
        ping_tasks: JoinSet::new(),
        hints: HintLimiter::default(),
        publisher,
        index: WatchIndex::default(),
        rooms: BTreeMap::new(),
        in_flight: 0,
        link_up: false,
        epoch: None,
        probes: JoinSet::new(),
        reschedule: true,
        ready: std::collections::VecDeque::new(),
        wake: None,
    };
    let task = tokio::spawn(owner.run(inbox, status, stop));
    (view, task)
}

type ProbeDone = (String, u64, Option<Probe>);

struct Owner {
    ctx: RoomsContext,
    /// When to self-ping which joined room.
    pings: Schedule,
    /// Self-pings waiting for their answer.
    ping_tasks: JoinSet<health::PingDone>,
    hints: HintLimiter,
    publisher: Publisher,
    index: WatchIndex,
    rooms: BTreeMap<String, Room>,
    in_flight: usize,
    link_up: bool,
    /// The login the rooms were joined on.
    epoch: Option<u64>,
    /// `None` outcome: the connection was lost first.
    probes: JoinSet<ProbeDone>,
    /// The rooms' timers and slots must be looked at again (a scan of every room).
    reschedule: bool,
    /// Rooms found due (by the last scan, or since): started as join slots free up, without a
    /// scan of every room each time.
    ready: std::collections::VecDeque<String>,
    wake: Option<Instant>,
}

impl Owner {
    #[tracing::instrument(name = "rooms", skip_all)]
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<RoomInbound>,
        mut status: watch::Receiver<LinkStatus>,
        stop: CancellationToken,
    ) {
        // Subscribed before reading the records, so that no change falls in between.
        let mut changes = self.ctx.store.subscribe();
        self.rebuild().await;
        let first = *status.borrow_and_update();
        self.on_link(first);
        let (mut inbox_open, mut status_open, mut changes_open) = (true, true, true);
        loop {
            if self.reschedule {
                self.schedule().await;
            }
            let wake = self.wake;
            let ping_wake = self.pings.next_wake();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = status.changed(), if status_open => match r {
                    Ok(()) => {
                        let s = *status.borrow_and_update();
                        self.on_link(s);
                    }
                    Err(_) => status_open = false,
                },
                r = changes.recv(), if changes_open => match r {
                    Ok(user) => self.on_user(&user).await,
                    Err(RecvError::Lagged(n)) => {
                        debug!(missed = n, "push changes lagged; re-reading every user");
                        self.rebuild().await;
                    }
                    Err(RecvError::Closed) => changes_open = false,
                },
                Some(done) = self.probes.join_next(), if !self.probes.is_empty() => {
                    if let Ok(done) = done {
                        self.on_probe(done).await;
                    }
                }
                m = inbox.recv(), if inbox_open => match m {
                    Some(RoomInbound::Presence(p)) => self.on_presence(p).await,
                    Some(RoomInbound::Groupchat(el)) => self.on_groupchat(el).await,
                    None => inbox_open = false,
                },
                Some(done) = self.ping_tasks.join_next(), if !self.ping_tasks.is_empty() => {
                    match done {
                        Ok(done) => self.on_ping(done).await,
                        Err(_) => self.pings.lost(),
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => self.reschedule = true,
                _ = sleep_until(ping_wake), if ping_wake.is_some() => self.start_pings(),
            }
        }
        self.leave_all().await;
    }

    fn publish(&self, name: &str) {
        self.publisher
            .publish(name, self.rooms.get(name), self.link_up);
    }

    /// Re-reads every user's watchers.
    async fn rebuild(&mut self) {
        self.index = WatchIndex::build(self.ctx.store.users());
        let names: BTreeSet<String> = self
            .index
            .rooms()
            .map(|(r, _)| r.clone())
            .chain(self.rooms.keys().cloned())
            .collect();
        self.reconcile(names).await;
    }

    async fn on_user(&mut self, user: &str) {
        match self.ctx.store.get(user) {
            Ok(push) => {
                let changed = self.index.set_user(user, &push);
                self.reconcile(changed.into_iter().collect()).await;
            }
            Err(e) => {
                warn!(user, error = %e, "cannot read a user's push record; their rooms are unchanged")
            }
        }
    }

    /// Joins rooms newly watched, leaves rooms nobody watches any more.
    async fn reconcile(&mut self, names: BTreeSet<String>) {
        for name in names {
            match (
                self.index.watchers(&name).cloned(),
                self.rooms.get_mut(&name),
            ) {
                (Some(w), Some(room)) => {
                    room.watchers = w;
                    // Someone changed their rule for a room found gone: it may exist by now.
                    if room.phase == Phase::Gone {
                        debug!(room = %name, "a gone room's watchers changed; asking for it again");
                        room.set_phase(&mut self.in_flight, Phase::Waiting);
                        room.next_at = None;
                        self.reschedule = true;
                    }
                }
                (Some(w), None) => {
                    debug!(room = %name, "room watched; joining it");
                    self.rooms
                        .insert(name.clone(), Room::new(w, &self.ctx.nick));
                    self.reschedule = true;
                }
                (None, Some(room)) => {
                    if room.phase.sent_join() {
                        let leave = join::leave_stanza(&self.ctx.jid, &name, &room.nick);
                        let _ = self.ctx.handle.send(Lane::Priority, &leave).await;
                    }
                    room.set_phase(&mut self.in_flight, Phase::Left);
                    self.rooms.remove(&name);
                    self.pings.remove(&name);
                    info!(room = %name, "nobody watches the room any more; left it");
                    self.reschedule = true;
                }
                (None, None) => {}
            }
            self.publish(&name);
        }
    }

    fn on_link(&mut self, s: LinkStatus) {
        let epoch = match s {
            LinkStatus::Up { epoch } => Some(epoch),
            LinkStatus::Down => None,
        };
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        self.link_up = epoch.is_some();
        let now = Instant::now();
        let spread = REJOIN_SPREAD.as_millis() as u64;
        for (name, room) in self.rooms.iter_mut() {
            self.pings.pause(name);
            room.login_join = self.link_up;
            // A join sent on an earlier connection is void: join again.
            if room.phase.in_flight() || room.phase == Phase::Joined {
                room.set_phase(&mut self.in_flight, Phase::Waiting);
                std::sync::Arc::make_mut(&mut room.occupants).clear();
            }
            if self.link_up && room.phase == Phase::Waiting {
                let jitter = rand::thread_rng().gen_range(0..=spread);
                room.next_at = Some(now + Duration::from_millis(jitter));
            }
        }
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.publish(&name);
        }
        self.reschedule = true;
    }

    /// Times out late joins, starts due ones within the cap, and sets the next wake-up.
    async fn schedule(&mut self) {
        self.reschedule = false;
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut due = Vec::new();
        let mut timed_out = Vec::new();
        for (name, room) in &self.rooms {
            let at = match room.phase {
                Phase::Joining { deadline } if deadline <= now => {
                    timed_out.push(name.clone());
                    continue;
                }
                Phase::Joining { deadline } => deadline,
                Phase::Waiting | Phase::Retrying if self.link_up => match room.next_at {
                    Some(t) if t > now => t,
                    _ => {
                        due.push(name.clone());
                        continue;
                    }
                },
                _ => continue,
            };
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        for name in timed_out {
            let reason = format!("no answer to the join within {}s", JOIN_TIMEOUT.as_secs());
            self.refuse(&name, Wait::Join, reason);
        }
        self.wake = wake;
        self.ready = due.into();
        self.fill_slots();
    }

    /// Starts the joins of ready rooms (still due) while join slots are free.
    fn fill_slots(&mut self) {
        let now = Instant::now();
        while self.link_up && self.in_flight < MAX_JOINS_IN_FLIGHT {
            let Some(name) = self.ready.pop_front() else {
                return;
            };
            let due = self.rooms.get(&name).is_some_and(|r| {
                matches!(r.phase, Phase::Waiting | Phase::Retrying)
                    && r.next_at.is_none_or(|t| t <= now)
            });
            if due {
                self.start_probe(&name);
            }
        }
    }

    fn start_probe(&mut self, name: &str) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.attempt += 1;
        room.set_phase(&mut self.in_flight, Phase::Probing);
        let (handle, attempt, name) = (self.ctx.handle.clone(), room.attempt, name.to_owned());
        let iq = join::disco_info(&self.ctx.jid, &name);
        self.probes.spawn(async move {
            let outcome = match handle.request(Lane::Priority, iq).await {
                Err(_) => None,
                Ok(answer) => match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
                    Err(_) => Some(Probe::Retry(format!(
                        "no answer to disco#info within {}s",
                        JOIN_TIMEOUT.as_secs()
                    ))),
                    Ok(Ok(_)) => Some(Probe::Join),
                    Ok(Err(IqError::Stanza(e))) => Some(join::classify_probe_error(&e.condition)),
                    Ok(Err(_)) => None,
                },
            };
            (name, attempt, outcome)
        });
    }

    async fn on_probe(&mut self, (name, attempt, outcome): ProbeDone) {
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        if room.phase != Phase::Probing || room.attempt != attempt {
            return;
        }
        match outcome {
            Some(Probe::Join) => {
                let deadline = Instant::now() + JOIN_TIMEOUT;
                room.set_phase(&mut self.in_flight, Phase::Joining { deadline });
                self.wake = Some(self.wake.map_or(deadline, |w| w.min(deadline)));
                std::sync::Arc::make_mut(&mut room.occupants).clear();
                self.ctx.metrics.joins.inc();
                if room.joined_before {
                    self.ctx.metrics.rejoins.inc();
                }
                let stanza = join::join_stanza(&self.ctx.jid, &name, &room.nick);
                let _ = self.ctx.handle.send(Lane::Priority, &stanza).await;
            }
            Some(Probe::Gone(reason)) => self.stop_for_good(&name, reason),
            Some(Probe::Retry(reason)) => self.refuse(&name, Wait::Join, reason),
            None => {
                room.set_phase(&mut self.in_flight, Phase::Waiting);
                self.ready.push_back(name.clone());
            }
        }
        self.fill_slots();
        self.publish(&name);
    }

    fn refuse(&mut self, name: &str, wait: Wait, reason: String) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        self.pings.pause(name);
        if room.retry(&mut self.in_flight, wait, reason.clone()) {
            warn!(room = %name, %reason, "herald is not in the room; it will try again");
        } else {
            debug!(room = %name, %reason, "still not in the room; trying again later");
        }
        self.reschedule = true;
        self.publish(name);
    }

    fn stop_for_good(&mut self, name: &str, reason: String) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        self.pings.pause(name);
        if room.gone(&mut self.in_flight, reason.clone()) {
            warn!(room = %name, %reason, "the room is gone; herald will not join it");
        }
        self.reschedule = true;
        self.publish(name);
    }

    /// Leaves every room herald sent a join to, then waits until each MUC service answered a
    /// ping sent after the leaves (so they were handled), or [`LEAVE_DEADLINE`].
    async fn leave_all(&mut self) {
        let mut services = BTreeSet::new();
        let mut left = 0;
        for (name, room) in &mut self.rooms {
            // A room herald was in may still list it although this connection has not joined
            // it yet (a MUC restored its occupants after a restart, or kept a ghost): leave it
            // too; a room that does not list herald ignores the leave.
            if room.phase.sent_join() || (room.joined_before && room.phase != Phase::Gone) {
                let leave = join::leave_stanza(&self.ctx.jid, name, &room.nick);
                if self.ctx.handle.send(Lane::Priority, &leave).await.is_ok() {
                    left += 1;
                }
                if let Some((_, service)) = name.split_once('@') {
                    services.insert(service.to_owned());
                }
            }
            room.set_phase(&mut self.in_flight, Phase::Left);
            self.pings.pause(name);
        }
        let mut answers = JoinSet::new();
        for service in services {
            let ping = crate::xmpp::stanza::ping("", &self.ctx.jid, &service);
            if let Ok(answer) = self.ctx.handle.request(Lane::Priority, ping).await {
                answers.spawn(answer);
            }
        }
        let all = async { while answers.join_next().await.is_some() {} };
        if tokio::time::timeout(LEAVE_DEADLINE, all).await.is_err() {
            debug!("a MUC service did not answer before the shutdown went on");
        }
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.publish(&name);
        }
        info!(rooms = left, "left the rooms");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
