//! A MUC service played over the fake XEP-0114 server's connection ([`Conn`]): it answers
//! herald's `disco#info` of a room, its joins (self-presence with status 110) and leaves, the
//! server's keepalive pings, and herald's XEP-0410 self-pings: by default the way Prosody's
//! self-ping optimisation does (`result` while herald is an occupant, `not-acceptable`
//! otherwise), or with answers scripted per room. Answers to joins and to self-pings can be held
//! back for a while, so that herald's caps are reached; the most joins and self-pings that
//! waited for an answer at once are recorded.
//!
//! The service's state ([`Muc`]) outlives a connection: after a reconnect a new [`serve`] goes
//! on with it.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use minidom::Element;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::fake_server::{escape, Conn, NS_COMPONENT, NS_DISCO_INFO, NS_PING};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// A scripted answer to one self-ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Result,
    /// An error with this condition (type `cancel`, `by` the room).
    Error(&'static str),
    /// No answer at all.
    Silent,
}

/// What the service knows and saw.
#[derive(Debug, Default)]
pub struct State {
    /// Rooms herald is an occupant of, with its nick.
    pub occupied: HashMap<String, String>,
    /// Scripted answers per room, used up one per self-ping; then the default.
    pub script: HashMap<String, VecDeque<Reply>>,
    pub pings: HashMap<String, u32>,
    pub joins: HashMap<String, u32>,
    pub leaves: HashSet<String>,
    pub pings_out: usize,
    pub max_pings_out: usize,
    /// disco#info and joins waiting for their answer.
    pub joins_out: usize,
    pub max_joins_out: usize,
    /// `[k]`: rooms with at least k + 1 self-pings, and joins (cheap to wait for at scale).
    pub pinged_at_least: Vec<usize>,
    pub joined_at_least: Vec<usize>,
}

fn bump(counts: &mut HashMap<String, u32>, at_least: &mut Vec<usize>, room: &str) {
    let n = counts.entry(room.to_owned()).or_default();
    *n += 1;
    let k = *n as usize;
    if at_least.len() < k {
        at_least.resize(k, 0);
    }
    at_least[k - 1] += 1;
}

impl State {
    pub fn pings(&self, room: &str) -> u32 {
        self.pings.get(room).copied().unwrap_or(0)
    }
    pub fn joins(&self, room: &str) -> u32 {
        self.joins.get(room).copied().unwrap_or(0)
    }
    /// Rooms pinged at least `n` times.
    pub fn rooms_pinged(&self, n: usize) -> usize {
        self.pinged_at_least.get(n - 1).copied().unwrap_or(0)
    }
    /// Rooms joined at least `n` times.
    pub fn rooms_joined(&self, n: usize) -> usize {
        self.joined_at_least.get(n - 1).copied().unwrap_or(0)
    }
    /// Forgets herald's occupancy of `room` without telling herald (a MUC restart, a split).
    pub fn forget(&mut self, room: &str) {
        self.occupied.remove(room);
    }
}

/// The service, shared by the test and each connection's [`serve`].
#[derive(Clone)]
pub struct Muc {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
    /// How long answers to disco#info and joins, and to self-pings, are held back.
    pub hold_joins: Duration,
    pub hold_pings: Duration,
}

impl Muc {
    pub fn new(hold_joins: Duration, hold_pings: Duration) -> Muc {
        Muc {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            hold_joins,
            hold_pings,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Scripts the next self-ping answers of `room`.
    pub fn script(&self, room: &str, replies: &[Reply]) {
        self.state()
            .script
            .entry(room.to_owned())
            .or_default()
            .extend(replies.iter().cloned());
    }

    /// Waits (woken by each stanza the service handles) until `pred` holds; false on timeout.
    pub async fn wait(&self, timeout: Duration, pred: impl Fn(&State) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let ok = tokio::time::timeout(timeout, async {
            loop {
                if pred(&self.state()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        ok.is_ok()
    }
}

pub enum Cmd {
    /// Close the socket (a crashed server).
    Drop,
}

#[derive(PartialEq)]
enum Held {
    Join,
    Ping,
}

/// Serves `conn` until it ends or [`Cmd::Drop`].
pub fn serve(mut conn: Conn, muc: Muc) -> (JoinHandle<()>, mpsc::UnboundedSender<Cmd>) {
    conn.answer_pings(false);
    let (tx, mut cmds) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut held: VecDeque<(Instant, Held, String)> = VecDeque::new();
        loop {
            let wait = held
                .front()
                .map(|(t, ..)| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            let got = tokio::select! {
                c = cmds.recv() => Err(c),
                el = conn.recv(wait) => Ok(el),
            };
            match got {
                Err(Some(Cmd::Drop)) | Err(None) => {
                    conn.drop_socket();
                    return;
                }
                Ok(Some(el)) => {
                    for (hold, kind, xml) in handle(&muc, &el) {
                        match hold {
                            Some(d) => held.push_back((Instant::now() + d, kind, xml)),
                            None => conn.send_raw(&xml).await,
                        }
                    }
                }
                Ok(None) if conn.ended() => return,
                Ok(None) => {}
            }
            let now = Instant::now();
            while held.front().is_some_and(|(t, ..)| *t <= now) {
                let (_, kind, xml) = held.pop_front().unwrap();
                {
                    let mut s = muc.state();
                    match kind {
                        Held::Join => s.joins_out -= 1,
                        Held::Ping => s.pings_out -= 1,
                    }
                }
                conn.send_raw(&xml).await;
            }
            muc.changed.send_modify(|n| *n += 1);
        }
    });
    (task, tx)
}

fn iq_error(el: &Element, condition: &str, by: &str) -> String {
    format!(
        "<iq type='error' id='{}' from='{}' to='{}'><error type='cancel' by='{}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        escape(el.attr("id").unwrap_or_default()),
        escape(el.attr("to").unwrap_or_default()),
        escape(el.attr("from").unwrap_or_default()),
        escape(by)
    )
}

fn iq_result(el: &Element, payload: &str) -> String {
    format!(
        "<iq type='result' id='{}' from='{}' to='{}'>{payload}</iq>",
        escape(el.attr("id").unwrap_or_default()),
        escape(el.attr("to").unwrap_or_default()),
        escape(el.attr("from").unwrap_or_default()),
    )
}

/// The answers to one stanza of herald's: (held back for, kind, xml).
fn handle(muc: &Muc, el: &Element) -> Vec<(Option<Duration>, Held, String)> {
    let to = el.attr("to").unwrap_or_default().to_owned();
    let from = el.attr("from").unwrap_or_default().to_owned();
    let (room, nick) = match to.split_once('/') {
        Some((r, n)) => (r.to_owned(), Some(n.to_owned())),
        None => (to.clone(), None),
    };
    let mut s = muc.state();
    if el.is("iq", NS_COMPONENT) && el.attr("type") == Some("get") {
        if el.has_child("ping", NS_PING) {
            if !room.contains('@') {
                return vec![(None, Held::Ping, iq_result(el, ""))];
            }
            let s = &mut *s;
            bump(&mut s.pings, &mut s.pinged_at_least, &room);
            let scripted = s.script.get_mut(&room).and_then(|q| q.pop_front());
            let reply = scripted.unwrap_or_else(|| {
                if s.occupied.get(&room).map(String::as_str) == nick.as_deref() {
                    Reply::Result
                } else {
                    Reply::Error("not-acceptable")
                }
            });
            let xml = match reply {
                Reply::Silent => return Vec::new(),
                Reply::Result => iq_result(el, ""),
                Reply::Error(c) => iq_error(el, c, &room),
            };
            s.pings_out += 1;
            s.max_pings_out = s.max_pings_out.max(s.pings_out);
            return vec![(Some(muc.hold_pings), Held::Ping, xml)];
        }
        if el.has_child("query", NS_DISCO_INFO) {
            let payload = format!(
                "<query xmlns='{NS_DISCO_INFO}'><identity category='conference' type='text' name='{}'/><feature var='{NS_MUC}'/></query>",
                escape(&room)
            );
            if !room.contains('@') {
                return vec![(None, Held::Join, iq_result(el, &payload))];
            }
            s.joins_out += 1;
            s.max_joins_out = s.max_joins_out.max(s.joins_out);
            return vec![(Some(muc.hold_joins), Held::Join, iq_result(el, &payload))];
        }
        return vec![(None, Held::Join, iq_error(el, "service-unavailable", &to))];
    }
    if el.is("presence", NS_COMPONENT) && room.contains('@') {
        let Some(nick) = nick else {
            return Vec::new();
        };
        let unavailable = el.attr("type") == Some("unavailable");
        let kind = if unavailable {
            " type='unavailable'"
        } else {
            ""
        };
        let role = if unavailable { "none" } else { "participant" };
        let xml = format!(
            "<presence from='{}' to='{}'{kind}><x xmlns='{NS_MUC_USER}'><item affiliation='none' role='{role}'/><status code='110'/></x></presence>",
            escape(&to),
            escape(&from)
        );
        if unavailable {
            s.occupied.remove(&room);
            s.leaves.insert(room);
            return vec![(None, Held::Join, xml)];
        }
        let s = &mut *s;
        bump(&mut s.joins, &mut s.joined_at_least, &room);
        s.occupied.insert(room, nick);
        s.joins_out += 1;
        s.max_joins_out = s.max_joins_out.max(s.joins_out);
        return vec![(Some(muc.hold_joins), Held::Join, xml)];
    }
    Vec::new()
}
