//! When to self-ping which room (pure: every time is passed in).
//!
//! A room can be pinged while herald is in it and no join or nick change of it is pending
//! ([`Schedule::joined`] / [`Schedule::pause`]). Its next ping is due:
//! - `delay` after a join that followed a login (the first check after each reconnect);
//! - else `idle` after the last stanza from the room ([`Schedule::heard`]: any stanza proves
//!   herald still gets the room's traffic);
//! - after an undecided answer, `delay`·2ⁿ⁻¹ later (at most `idle`), and after `undecided`
//!   undecided answers in a row herald takes itself as out of the room.
//!
//! Each deadline gets a jitter of up to a tenth of its interval, so that rooms joined together
//! are not pinged together. At most `concurrency` pings wait for their answer at once.
//!
//! Cost: deadlines sit in a `BTreeMap`, so waking up looks at the rooms that are due and no
//! other. A stanza from a room only records its time; a deadline that comes up for a room heard
//! from since is moved on then (lazily), so busy rooms cost one map lookup per stanza.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::self_ping::Verdict;

/// The intervals and limits (`[muc]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub idle: Duration,
    pub delay: Duration,
    pub concurrency: usize,
    pub undecided: u32,
    /// Jitter: up to `interval / jitter_div` added to each deadline (0: none).
    pub jitter_div: u32,
}

impl Intervals {
    pub fn from_settings(s: &crate::config::MucSettings) -> Intervals {
        Intervals {
            idle: s.self_ping_idle,
            delay: s.self_ping_delay,
            concurrency: s.self_ping_concurrency,
            undecided: s.self_ping_undecided,
            jitter_div: 10,
        }
    }
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The answer is for an earlier ping or a paused room: nothing.
    Stale,
    /// Still joined; the next ping is scheduled.
    Joined,
    /// Undecided (`n` in a row); retried later.
    Retry(u32),
    /// Not joined (or undecided too often): join again. The room is paused until
    /// [`Schedule::joined`].
    Rejoin,
}

type Key = (Instant, u64);

#[derive(Debug)]
struct Entry {
    /// Its queued deadline.
    key: Option<Key>,
    last_heard: Instant,
    /// The queued ping is due whatever the room sent (first after a login, recheck).
    forced: bool,
    /// The id of the ping waiting for its answer.
    in_flight: Option<u64>,
    undecided: u32,
    active: bool,
}

/// The schedule of every room herald is in.
#[derive(Debug)]
pub struct Schedule {
    iv: Intervals,
    rooms: HashMap<String, Entry>,
    queue: BTreeMap<Key, String>,
    /// Pings started and not yet [`Schedule::finished`].
    outstanding: usize,
    next_id: u64,
    rng: u64,
}

impl Schedule {
    pub fn new(iv: Intervals, seed: u64) -> Schedule {
        Schedule {
            iv,
            rooms: HashMap::new(),
            queue: BTreeMap::new(),
            outstanding: 0,
            next_id: 0,
            rng: seed | 1,
        }
    }

    pub fn intervals(&self) -> Intervals {
        self.iv
    }

    /// Pings waiting for their answer.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Rooms with a ping scheduled.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn jitter(&mut self, interval: Duration) -> Duration {
        if self.iv.jitter_div == 0 {
            return Duration::ZERO;
        }
        // xorshift64: enough to spread deadlines.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = (interval / self.iv.jitter_div).as_millis() as u64;
        Duration::from_millis(self.rng % (span + 1))
    }

    fn queue_at(&mut self, name: &str, at: Instant) {
        self.next_id += 1;
        let key = (at, self.next_id);
        let Some(e) = self.rooms.get_mut(name) else {
            return;
        };
        if let Some(old) = e.key.replace(key) {
            self.queue.remove(&old);
        }
        self.queue.insert(key, name.to_owned());
    }

    fn unqueue(&mut self, name: &str) -> Option<&mut Entry> {
        let e = self.rooms.get_mut(name)?;
        if let Some(old) = e.key.take() {
            self.queue.remove(&old);
        }
        Some(e)
    }

    /// herald is in `name` (joined at `now`); `after_login`: the first join since the link came
    /// up, so the first ping is due after `delay` instead of `idle`.
    pub fn joined(&mut self, name: &str, now: Instant, after_login: bool) {
        let e = self.rooms.entry(name.to_owned()).or_insert(Entry {
            key: None,
            last_heard: now,
            forced: false,
            in_flight: None,
            undecided: 0,
            active: false,
        });
        e.active = true;
        e.undecided = 0;
        e.in_flight = None;
        e.last_heard = now;
        e.forced = after_login;
        let interval = if after_login {
            self.iv.delay
        } else {
            self.iv.idle
        };
        let at = now + interval + self.jitter(interval);
        self.queue_at(name, at);
    }

    /// No ping for `name` until [`Schedule::joined`]: a join or nick change is pending, or
    /// herald is out of the room or offline. A ping already sent is ignored when it returns.
    pub fn pause(&mut self, name: &str) {
        if let Some(e) = self.unqueue(name) {
            e.active = false;
            e.in_flight = None;
        }
    }

    /// `name` is not watched any more.
    pub fn remove(&mut self, name: &str) {
        self.unqueue(name);
        self.rooms.remove(name);
    }

    /// A stanza from `name` arrived at `now`.
    pub fn heard(&mut self, name: &str, now: Instant) {
        if let Some(e) = self.rooms.get_mut(name) {
            e.last_heard = now;
            if e.in_flight.is_none() && !e.forced {
                e.undecided = 0;
            }
        }
    }

    /// When [`Schedule::due`] has something to start (`None`: nothing queued, or the cap is
    /// reached and only an answer frees a slot).
    pub fn next_wake(&self) -> Option<Instant> {
        if self.outstanding >= self.iv.concurrency {
            return None;
        }
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The pings to send now, as (room, ping id), within the cap.
    pub fn due(&mut self, now: Instant) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while self.outstanding < self.iv.concurrency {
            let Some((&key, _)) = self.queue.first_key_value() else {
                break;
            };
            if key.0 > now {
                break;
            }
            let Some(name) = self.queue.remove(&key) else {
                break;
            };
            let idle = self.iv.idle;
            let Some(e) = self.rooms.get_mut(&name) else {
                continue;
            };
            e.key = None;
            if !e.active {
                continue;
            }
            let quiet_until = e.last_heard + idle;
            if !e.forced && e.undecided == 0 && quiet_until > now {
                // Heard from since this deadline was set: the next check is idle after that.
                let at = quiet_until + self.jitter(idle);
                self.queue_at(&name, at);
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            e.in_flight = Some(id);
            e.forced = false;
            self.outstanding += 1;
            out.push((name, id));
        }
        out
    }

    /// The ping `id` of `name` ended: `verdict` from its answer, or `None` when it got none
    /// because the link went down (then the room is paused anyway).
    pub fn finished(
        &mut self,
        name: &str,
        id: u64,
        verdict: Option<Verdict>,
        now: Instant,
    ) -> Step {
        self.outstanding = self.outstanding.saturating_sub(1);
        let iv = self.iv;
        let Some(e) = self.rooms.get_mut(name) else {
            return Step::Stale;
        };
        if e.in_flight != Some(id) || !e.active {
            return Step::Stale;
        }
        e.in_flight = None;
        let Some(verdict) = verdict else {
            return Step::Stale;
        };
        let (at, step) = match verdict {
            Verdict::Joined => {
                e.undecided = 0;
                (now + iv.idle, Step::Joined)
            }
            Verdict::JoinedRecheck => {
                e.undecided = 0;
                e.forced = true;
                (now + iv.delay, Step::Joined)
            }
            Verdict::Undecided => {
                e.undecided += 1;
                if e.undecided >= iv.undecided {
                    e.active = false;
                    return Step::Rejoin;
                }
                let backoff = iv
                    .delay
                    .saturating_mul(1 << (e.undecided - 1).min(20))
                    .min(iv.idle);
                (now + backoff, Step::Retry(e.undecided))
            }
            Verdict::NotJoined => {
                e.active = false;
                return Step::Rejoin;
            }
        };
        let interval = at - now;
        let at = at + self.jitter(interval);
        self.queue_at(name, at);
        step
    }

    /// A started ping whose room is unknown ended (its task failed): frees its slot.
    pub fn lost(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }
}

#[cfg(test)]
#[path = "ping_schedule_tests.rs"]
mod tests;
