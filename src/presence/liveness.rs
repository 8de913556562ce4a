//! Liveness: finding resources whose session ended without a forwarded unavailable.
//!
//! ejabberd 23.01 forwards only the presences a client sends itself: when a client's TCP
//! connection drops, or it closes its stream without an unavailable, herald hears nothing
//! (README, "Servers"). So herald asks. Each resource it believes online gets an XEP-0199 ping to
//! its full JID once per `presence.liveness_interval`, spread evenly; after every reconnect all of
//! them are checked first, at [`MAX_RATE`].
//!
//! **Verdict.** For a full JID without a session ejabberd answers at once, from that JID,
//! `<error type='cancel'><service-unavailable/><text>User session not found</text></error>`. A
//! client that does not implement ping may answer `service-unavailable` too (XEP-0199 §8), so
//! such an answer is confirmed with a disco#info query, which every client with entity
//! capabilities answers: only when both fail with a "no such recipient" condition
//! ([`GONE_CONDITIONS`]) is the resource gone. Any result, any other error and no answer at all
//! (an online client that ignores IQs; a session whose TCP is dead but not yet noticed by the
//! server) keep it online: silence proves nothing.
//!
//! **Owners.** [`Schedule`] is pure: which resource is due when. [`run`] owns it on a task of its
//! own; the presence service tells it which resources are online and whether to check
//! ([`Change`]), and receives each verdict "gone" as a [`Gone`], which it turns into an
//! unavailable event with `source: "liveness"` unless a presence for that resource arrived after
//! the check began.
//!
//! **Cost.** A check is one IQ out and one in; the schedule wakes at most every [`TICK`] and is
//! O(1) per check, insert and removal. `examples/bench_liveness.rs` measures the whole loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::xmpp::handle::{Lane, XmppHandle};
use crate::xmpp::stanza;
use crate::xmpp::IqError;

/// Most checks per second, also right after a reconnect when every resource is due.
pub const MAX_RATE: f64 = 1000.0;
/// Longest wait for one answer (or `liveness_interval`, if shorter); no answer keeps the
/// resource online.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most checks waiting for their answers at once.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Shortest pause between two rounds of sending (checks due meanwhile go out together).
pub const TICK: Duration = Duration::from_millis(100);
/// Error conditions that mean "no session with this full JID".
pub const GONE_CONDITIONS: &[&str] = &[
    "service-unavailable",
    "recipient-unavailable",
    "item-not-found",
];

/// Which resources are due for a check. Every resource is checked once per round; a round takes
/// `interval` (or less, at [`MAX_RATE`], when there are more than `interval × MAX_RATE`).
///
/// `order[..cursor]` were checked in this round, `order[cursor..]` are still due; a resource
/// that just came online joins the checked part (it was just seen), so it is first checked in
/// the next round.
#[derive(Debug)]
pub struct Schedule {
    order: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    cursor: usize,
    interval: Duration,
    /// Checks earned and not yet handed out.
    credit: f64,
    last: Option<Instant>,
    /// A round right after a reconnect: at [`MAX_RATE`].
    recheck: bool,
}

impl Schedule {
    pub fn new(interval: Duration) -> Schedule {
        Schedule {
            order: Vec::new(),
            index: HashMap::new(),
            cursor: 0,
            interval,
            credit: 0.0,
            last: None,
            recheck: false,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn contains(&self, jid: &str) -> bool {
        self.index.contains_key(jid)
    }

    /// A resource is online (again); nothing if it is known.
    pub fn insert(&mut self, jid: &str) {
        if self.index.contains_key(jid) {
            return;
        }
        let jid: Arc<str> = Arc::from(jid);
        self.order.push(jid.clone());
        self.index.insert(jid, self.order.len() - 1);
        let last = self.order.len() - 1;
        self.swap(last, self.cursor);
        self.cursor += 1;
    }

    /// A resource went offline; nothing if it is unknown.
    pub fn remove(&mut self, jid: &str) {
        let Some(i) = self.index.remove(jid) else {
            return;
        };
        if i < self.cursor {
            // Keep the checked part contiguous: its last entry takes the hole.
            self.swap(i, self.cursor - 1);
            self.cursor -= 1;
            let hole = self.cursor;
            let last = self.order.len() - 1;
            self.swap(hole, last);
        } else {
            let last = self.order.len() - 1;
            self.swap(i, last);
        }
        self.order.pop();
    }

    /// After a reconnect: every resource is due now, at [`MAX_RATE`].
    pub fn recheck_all(&mut self) {
        self.cursor = 0;
        self.recheck = true;
        self.credit = 0.0;
        self.last = None;
    }

    /// Checks per second now.
    fn rate(&self) -> f64 {
        if self.recheck {
            return MAX_RATE;
        }
        let per_interval = self.order.len() as f64 / self.interval.as_secs_f64().max(1e-3);
        per_interval.min(MAX_RATE)
    }

    /// The resources due at `now`, at most `limit` and never one twice.
    pub fn due(&mut self, now: Instant, limit: usize) -> Vec<Arc<str>> {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        self.last = Some(now);
        if self.order.is_empty() {
            self.credit = 0.0;
            return Vec::new();
        }
        let rate = self.rate();
        // A long pause (herald was busy) does not turn into a burst above one second's worth.
        self.credit = (self.credit + elapsed.as_secs_f64() * rate).min(rate.max(1.0));
        let n = (self.credit.floor() as usize)
            .min(limit)
            .min(self.order.len());
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if self.cursor >= self.order.len() {
                // Round over: the next one starts at the normal pace.
                self.cursor = 0;
                self.recheck = false;
            }
            out.push(self.order[self.cursor].clone());
            self.cursor += 1;
        }
        if self.cursor >= self.order.len() && self.recheck {
            self.cursor = 0;
            self.recheck = false;
        }
        self.credit -= n as f64;
        out
    }

    /// When [`Schedule::due`] next has something (never sooner than `now + TICK`); `None`
    /// when nobody is online.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if self.order.is_empty() {
            return None;
        }
        let rate = self.rate();
        let missing = (1.0 - self.credit).max(0.0);
        let wait = Duration::from_secs_f64(missing / rate).min(self.interval);
        Some(now + wait.max(TICK))
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.order.swap(a, b);
        for i in [a, b] {
            if let Some(slot) = self.index.get_mut(&self.order[i]) {
                *slot = i;
            }
        }
    }
}

/// What the presence service tells the check loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Online(String),
    Offline(String),
    /// A new connection: stop checking until the server is known.
    Pause,
    /// The server is known: check (every resource first, at [`MAX_RATE`]) or not.
    Active(bool),
}

/// A resource found gone; `asked` is when its check began.
#[derive(Debug, Clone)]
pub struct Gone {
    pub jid: String,
    pub asked: Instant,
}

/// The presence service's ends of the check loop's channels.
pub struct LivenessLink {
    pub changes: mpsc::UnboundedSender<Change>,
    pub gone: mpsc::Receiver<Gone>,
}

/// The check loop's ends.
pub struct LivenessTask {
    changes: mpsc::UnboundedReceiver<Change>,
    gone: mpsc::Sender<Gone>,
}

/// The two ends of a check loop's channels.
pub fn channel() -> (LivenessLink, LivenessTask) {
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let (gone_tx, gone_rx) = mpsc::channel(1024);
    (
        LivenessLink {
            changes: changes_tx,
            gone: gone_rx,
        },
        LivenessTask {
            changes: changes_rx,
            gone: gone_tx,
        },
    )
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    Gone,
    /// No answer in time, or the connection was lost: nothing is known.
    Unknown,
}

/// Whether an IQ's outcome says "no session with this full JID".
fn no_session(
    answer: &Result<Result<minidom::Element, IqError>, tokio::time::error::Elapsed>,
) -> Option<bool> {
    match answer {
        Ok(Ok(_)) => Some(false),
        Ok(Err(IqError::Stanza(e))) => Some(GONE_CONDITIONS.contains(&e.condition.as_str())),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Checks one resource: a ping, confirmed by a disco#info when it fails as if nobody were there.
pub async fn check(handle: &XmppHandle, jid: &str, timeout: Duration) -> Verdict {
    let me = handle.jid().to_owned();
    for (i, iq) in [
        stanza::ping("", &me, jid),
        stanza::disco_info_query("", &me, jid),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = match handle.request(Lane::Priority, iq).await {
            Ok(wait) => tokio::time::timeout(timeout, wait).await,
            Err(_) => return Verdict::Unknown,
        };
        match no_session(&answer) {
            None => return Verdict::Unknown,
            Some(false) => return Verdict::Alive,
            Some(true) if i == 1 => return Verdict::Gone,
            Some(true) => {}
        }
    }
    Verdict::Unknown
}

/// Runs the check loop until the presence service drops its [`LivenessLink`].
#[tracing::instrument(name = "liveness", skip_all)]
pub async fn run(handle: XmppHandle, interval: Duration, mut task: LivenessTask) {
    let mut schedule = Schedule::new(interval);
    let timeout = CHECK_TIMEOUT.min(interval);
    let mut active = false;
    let mut in_flight: FuturesUnordered<BoxFuture<'static, (Arc<str>, Instant, Verdict)>> =
        FuturesUnordered::new();
    loop {
        let wakeup = if active && in_flight.len() < MAX_IN_FLIGHT {
            schedule.next_wakeup(Instant::now())
        } else {
            None
        };
        tokio::select! {
            change = task.changes.recv() => {
                let Some(change) = change else { break };
                apply(&mut schedule, &mut active, change);
                while let Ok(change) = task.changes.try_recv() {
                    apply(&mut schedule, &mut active, change);
                }
            }
            Some((jid, asked, verdict)) = in_flight.next(), if !in_flight.is_empty() => {
                if verdict == Verdict::Gone && schedule.contains(&jid) {
                    debug!(jid = %jid, "the server has no session for this resource");
                    if task.gone.send(Gone { jid: String::from(&*jid), asked }).await.is_err() {
                        break;
                    }
                }
            }
            _ = sleep_until_opt(wakeup) => {
                let now = Instant::now();
                for jid in schedule.due(now, MAX_IN_FLIGHT - in_flight.len()) {
                    let handle = handle.clone();
                    in_flight.push(Box::pin(async move {
                        let verdict = check(&handle, &jid, timeout).await;
                        (jid, now, verdict)
                    }));
                }
            }
        }
    }
}

fn apply(schedule: &mut Schedule, active: &mut bool, change: Change) {
    match change {
        Change::Online(jid) => schedule.insert(&jid),
        Change::Offline(jid) => schedule.remove(&jid),
        Change::Pause => *active = false,
        Change::Active(on) => {
            if on {
                info!(resources = schedule.len(), interval = ?schedule.interval, "liveness checks on; checking every resource now");
                schedule.recheck_all();
            }
            *active = on;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod tests;
