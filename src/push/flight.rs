//! The pushes persisted and not yet answered, and which of them may be sent now: at most
//! `push.max_in_flight` await an answer at once, and at most `push.max_in_flight_per_server`
//! from one app server. Each app server has its own queue, so pushes to a slow or dead one wait
//! behind each other, never in front of another server's. Pure (times passed in).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::answer::Next;
use super::publish::PendingPush;
use crate::backoff::Backoff;

/// Delays before a push that got `wait` or no answer is tried again.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Held for the end of a coalescing window.
    Held,
    Queued,
    /// Sent on the connection of this login.
    InFlight {
        epoch: u64,
    },
    Retry {
        at_ms: i64,
    },
    /// Waits for the next login.
    WaitUp,
}

struct Entry {
    push: PendingPush,
    state: State,
    backoff: Option<Backoff>,
}

/// What [`Flights::next`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// Send it (it now counts as in flight).
    Send(u64, PendingPush),
    /// Older than `push.max_age`: removed, to be dropped from the store.
    Expired(u64, PendingPush),
}

pub struct Flights {
    entries: HashMap<u64, Entry>,
    queues: BTreeMap<String, VecDeque<u64>>,
    per_app: HashMap<String, usize>,
    /// `(at_ms, id)` of every push in [`State::Retry`], earliest first.
    retries: BTreeSet<(i64, u64)>,
    /// Ids in [`State::WaitUp`].
    waiting: BTreeSet<u64>,
    in_flight: usize,
    max_in_flight: usize,
    per_server: usize,
    max_age_ms: i64,
}

impl Flights {
    pub fn new(max_in_flight: usize, per_server: usize, max_age: Duration) -> Flights {
        Flights {
            entries: HashMap::new(),
            queues: BTreeMap::new(),
            per_app: HashMap::new(),
            retries: BTreeSet::new(),
            waiting: BTreeSet::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            per_server: per_server.max(1),
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Pushes known (held, queued, in flight or waiting to be retried).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn get(&self, id: u64) -> Option<&PendingPush> {
        self.entries.get(&id).map(|e| &e.push)
    }

    /// A new push: queued, or `held` for a coalescing window.
    pub fn insert(&mut self, id: u64, push: PendingPush, held: bool) {
        let app = push.app.clone();
        let state = if held { State::Held } else { State::Queued };
        self.entries.insert(
            id,
            Entry {
                push,
                state,
                backoff: None,
            },
        );
        if !held {
            self.enqueue(id, app);
        }
    }

    fn enqueue(&mut self, id: u64, app: String) {
        self.queues.entry(app).or_default().push_back(id);
    }

    /// New content for a held push.
    pub fn replace(&mut self, id: u64, push: PendingPush) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.push = push;
        }
    }

    /// A held push's window ended: queue it.
    pub fn release(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.state == State::Held {
                e.state = State::Queued;
                let app = e.push.app.clone();
                self.enqueue(id, app);
            }
        }
    }

    /// Forgets a push that is not in flight (a held one the user no longer needs).
    pub fn remove_idle(&mut self, id: u64) -> Option<PendingPush> {
        match self.entries.get(&id)?.state {
            State::InFlight { .. } => None,
            _ => {
                let e = self.entries.remove(&id)?;
                match e.state {
                    State::Retry { at_ms } => {
                        self.retries.remove(&(at_ms, id));
                    }
                    State::WaitUp => {
                        self.waiting.remove(&id);
                    }
                    _ => {
                        if let Some(q) = self.queues.get_mut(&e.push.app) {
                            q.retain(|i| *i != id);
                        }
                    }
                }
                Some(e.push)
            }
        }
    }

    /// The next push that may be sent at `now_ms` on the login `epoch`, within the caps.
    pub fn next(&mut self, now_ms: i64, epoch: u64) -> Option<Ready> {
        if self.in_flight >= self.max_in_flight {
            return None;
        }
        let per_server = self.per_server;
        let app = self
            .queues
            .iter()
            .find(|(app, q)| {
                !q.is_empty() && self.per_app.get(*app).copied().unwrap_or(0) < per_server
            })
            .map(|(app, _)| app.clone())?;
        let q = self.queues.get_mut(&app)?;
        let id = q.pop_front()?;
        if q.is_empty() {
            self.queues.remove(&app);
        }
        let entry = self.entries.get_mut(&id)?;
        if now_ms.saturating_sub(entry.push.first_ms) > self.max_age_ms {
            let e = self.entries.remove(&id)?;
            return Some(Ready::Expired(id, e.push));
        }
        entry.state = State::InFlight { epoch };
        *self.per_app.entry(app).or_default() += 1;
        self.in_flight += 1;
        Some(Ready::Send(id, entry.push.clone()))
    }

    /// Push `id`'s attempt ended with `next`, at `now_ms`, while the link is `up_epoch`
    /// (`None`: down). Returns the push when it is done (to remove from the store).
    pub fn finished(
        &mut self,
        id: u64,
        next: Next,
        now_ms: i64,
        up_epoch: Option<u64>,
    ) -> Option<PendingPush> {
        let entry = self.entries.get_mut(&id)?;
        let State::InFlight { epoch } = entry.state else {
            return None;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.per_app.get_mut(&entry.push.app) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_app.remove(&entry.push.app);
            }
        }
        match next {
            Next::Done => return self.entries.remove(&id).map(|e| e.push),
            Next::Backoff => {
                let b = entry
                    .backoff
                    .get_or_insert_with(|| Backoff::new(RETRY_MIN, RETRY_MAX));
                let delay = i64::try_from(b.next_delay().as_millis()).unwrap_or(i64::MAX);
                let at_ms = now_ms.saturating_add(delay);
                entry.state = State::Retry { at_ms };
                self.retries.insert((at_ms, id));
            }
            // Lost with a connection that has since been replaced: send it on the new one.
            Next::AfterUp if up_epoch.is_some_and(|e| e > epoch) => {
                entry.state = State::Queued;
                let app = entry.push.app.clone();
                self.enqueue(id, app);
            }
            Next::AfterUp | Next::Keep => {
                entry.state = State::WaitUp;
                self.waiting.insert(id);
            }
        }
        None
    }

    /// Queues the retries due by `now_ms`.
    pub fn retry_due(&mut self, now_ms: i64) {
        let mut due = Vec::new();
        while let Some(&(at_ms, id)) = self.retries.first() {
            if at_ms > now_ms {
                break;
            }
            self.retries.remove(&(at_ms, id));
            due.push(id);
        }
        self.requeue(due);
    }

    /// The earliest retry time, if any.
    pub fn next_retry(&self) -> Option<i64> {
        self.retries.first().map(|(at_ms, _)| *at_ms)
    }

    /// A login: queues what waited for it.
    pub fn link_up(&mut self) {
        let waiting = std::mem::take(&mut self.waiting).into_iter().collect();
        self.requeue(waiting);
    }

    fn requeue(&mut self, mut ids: Vec<u64>) {
        ids.sort_unstable();
        for id in ids {
            if let Some(e) = self.entries.get_mut(&id) {
                e.state = State::Queued;
                let app = e.push.app.clone();
                self.enqueue(id, app);
            }
        }
    }
}

#[cfg(test)]
#[path = "flight_tests.rs"]
mod tests;
