//! One watched room as the rooms owner keeps it: where the join is, herald's nick, the
//! occupants, the backoff and the last failure; and how that shows in the [`RoomsView`].
//!
//! [`RoomsView`]: super::view::RoomsView

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::join::{nick_for, Wait};
use super::model::Occupants;
use super::view::{RoomHealth, RoomMap, RoomState, RoomStatus};
use crate::backoff::Backoff;
use crate::metrics::RoomsMetrics;
use crate::push::watchers::Watcher;

/// Where a join is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// To be joined: once connected, from `next_at` on, when a join slot is free.
    Waiting,
    /// Its `disco#info` is asked (attempt `attempt`).
    Probing,
    /// The join presence is sent; the answer is due by `deadline`.
    Joining {
        deadline: Instant,
    },
    Joined,
    /// Refused or removed: joined again from `next_at` on.
    Retrying,
    /// Does not exist: not asked again until a watcher changes its rule for it.
    Gone,
    /// herald left it at shutdown.
    Left,
}

impl Phase {
    /// Holds one of the join slots.
    pub fn in_flight(self) -> bool {
        matches!(self, Phase::Probing | Phase::Joining { .. })
    }

    /// herald has sent its join (and so must send a leave).
    pub fn sent_join(self) -> bool {
        matches!(self, Phase::Joining { .. } | Phase::Joined)
    }
}

pub struct Room {
    pub watchers: Arc<[Watcher]>,
    pub phase: Phase,
    /// Numbers probes, so that a late answer to an earlier one is ignored.
    pub attempt: u64,
    /// herald's nick in the room, or the one it is joining with.
    pub nick: String,
    /// Which nick ([`nick_for`]) the join uses.
    pub nick_try: u32,
    pub occupants: Arc<Occupants>,
    /// When the last stanza from the room arrived.
    pub last_stanza: Option<Instant>,
    /// Waiting or retrying: not joined before this.
    pub next_at: Option<Instant>,
    /// Why the last join failed; shown until a join succeeds.
    pub failure: Option<String>,
    pub backoff: Option<(Wait, Backoff)>,
    /// herald was in the room before (its next join is a rejoin).
    pub joined_before: bool,
    /// A self-ping found herald out of the room: why (until it is back in).
    pub rejoining: Option<String>,
    pub health: RoomHealth,
    /// Its next join is the first since the link came up (the first self-ping after it is
    /// due after `muc.self_ping_delay`).
    pub login_join: bool,
    /// The room changed herald's nick; the presence under the new one is still to come.
    pub nick_changing: bool,
}

impl Room {
    pub fn new(watchers: Arc<[Watcher]>, nick: &str) -> Room {
        Room {
            watchers,
            phase: Phase::Waiting,
            attempt: 0,
            nick: nick.to_owned(),
            nick_try: 0,
            occupants: Arc::default(),
            last_stanza: None,
            next_at: None,
            failure: None,
            backoff: None,
            joined_before: false,
            rejoining: None,
            health: RoomHealth::default(),
            login_join: false,
            nick_changing: false,
        }
    }

    /// Notes `reason` as the last error, and that herald is failing from now on.
    fn failed(&mut self, reason: &str) {
        let now = crate::push::now_ms();
        self.health.failing_since_ms.get_or_insert(now);
        self.health.last_error = Some((now, reason.to_owned()));
    }

    /// A self-ping found herald out of the room: join it again at once (through the usual
    /// join, with its backoff should the room refuse).
    pub fn rejoin(&mut self, in_flight: &mut usize, reason: String) {
        self.set_phase(in_flight, Phase::Waiting);
        self.next_at = None;
        Arc::make_mut(&mut self.occupants).clear();
        self.failed(&reason);
        self.rejoining = Some(reason);
    }

    /// Moves to `phase`, keeping the owner's count of joins in flight.
    pub fn set_phase(&mut self, in_flight: &mut usize, phase: Phase) {
        if self.phase.in_flight() {
            *in_flight = in_flight.saturating_sub(1);
        }
        if phase.in_flight() {
            *in_flight += 1;
        }
        self.phase = phase;
    }

    /// Retries after the backoff of `wait` (continued while the failures are of one kind);
    /// returns whether the reason is new (to log it once, not at every retry).
    pub fn retry(&mut self, in_flight: &mut usize, wait: Wait, reason: String) -> bool {
        let backoff = match &mut self.backoff {
            Some((w, b)) if *w == wait => b,
            other => {
                let (min, max) = wait.bounds();
                &mut other.insert((wait, Backoff::new(min, max))).1
            }
        };
        self.next_at = Some(Instant::now() + backoff.next_delay());
        self.set_phase(in_flight, Phase::Retrying);
        Arc::make_mut(&mut self.occupants).clear();
        let new = self.failure.as_deref() != Some(reason.as_str());
        self.failed(&reason);
        self.failure = Some(reason);
        new
    }

    /// Stops for good; returns whether the reason is new.
    pub fn gone(&mut self, in_flight: &mut usize, reason: String) -> bool {
        let new = self.phase != Phase::Gone || self.failure.as_deref() != Some(reason.as_str());
        self.set_phase(in_flight, Phase::Gone);
        Arc::make_mut(&mut self.occupants).clear();
        self.failed(&reason);
        self.failure = Some(reason);
        new
    }

    /// In the room.
    pub fn joined(&mut self, in_flight: &mut usize, nick: String) {
        self.set_phase(in_flight, Phase::Joined);
        self.nick = nick;
        self.failure = None;
        self.backoff = None;
        self.joined_before = true;
        self.rejoining = None;
        self.health.failing_since_ms = None;
    }

    /// Tries the next nick; `false` when every nick was tried (then back to the first).
    pub fn next_nick(&mut self, base: &str) -> bool {
        self.nick_try += 1;
        if self.nick_try >= super::join::MAX_NICK_ATTEMPTS {
            self.nick_try = 0;
            self.nick = base.to_owned();
            return false;
        }
        self.nick = nick_for(base, self.nick_try);
        true
    }

    /// How the room shows in the view.
    pub fn status(&self, link_up: bool) -> (RoomState, Option<String>) {
        match self.phase {
            Phase::Joined => (RoomState::Joined, None),
            Phase::Gone => (RoomState::Gone, self.failure.clone()),
            Phase::Left => (RoomState::Left, None),
            Phase::Retrying => (RoomState::Retrying, self.failure.clone()),
            _ if self.failure.is_some() => (RoomState::Retrying, self.failure.clone()),
            _ if self.rejoining.is_some() => (RoomState::Rejoining, self.rejoining.clone()),
            _ if !link_up => (
                RoomState::Joining,
                Some("waiting for the connection to the server".into()),
            ),
            _ => (RoomState::Joining, None),
        }
    }
}

fn failing(s: RoomState) -> bool {
    matches!(s, RoomState::Retrying | RoomState::Gone)
}

/// Keeps the view and the joined/failing gauges in step with the rooms.
pub struct Publisher {
    pub tx: watch::Sender<RoomMap>,
    pub metrics: RoomsMetrics,
}

impl Publisher {
    /// Publishes `room`'s state (`None`: no longer watched).
    pub fn publish(&self, name: &str, room: Option<&Room>, link_up: bool) {
        let metrics = &self.metrics;
        self.tx.send_if_modified(|map| {
            let old = map.get(name).map(|s| s.state);
            let Some(room) = room else {
                return map
                    .remove(name)
                    .map(|s| count(metrics, Some(s.state), None))
                    .is_some();
            };
            let (state, reason) = room.status(link_up);
            let occupants = room.occupants.len();
            if let Some(s) = map.get_mut(name) {
                if s.state == state && s.reason == reason {
                    let changed =
                        s.nick != room.nick || s.occupants != occupants || s.health != room.health;
                    if changed {
                        s.nick.clone_from(&room.nick);
                        s.occupants = occupants;
                        s.health.clone_from(&room.health);
                    }
                    return changed;
                }
            }
            count(metrics, old, Some(state));
            map.insert(
                name.to_owned(),
                RoomStatus {
                    state,
                    since_ms: crate::push::now_ms(),
                    reason,
                    nick: room.nick.clone(),
                    occupants,
                    health: room.health.clone(),
                },
            );
            true
        });
    }
}

fn count(m: &RoomsMetrics, old: Option<RoomState>, new: Option<RoomState>) {
    if old == Some(RoomState::Joined) {
        m.joined.dec();
    }
    if old.is_some_and(failing) {
        m.failing.dec();
    }
    if new == Some(RoomState::Joined) {
        m.joined.inc();
    }
    if new.is_some_and(failing) {
        m.failing.inc();
    }
}
