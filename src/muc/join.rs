//! Joining and leaving a room (pure): the stanzas herald sends, the nicks it tries, and what a
//! refused join or a refused `disco#info` means: try another nick, retry later (and why), or the
//! room is gone.
//!
//! herald never creates rooms: before a join it asks the room's `disco#info` (a room that does
//! not exist answers `item-not-found`), and a join that still creates one (status 201) is left
//! at once.

use std::time::Duration;

use minidom::Element;

use crate::xmpp::stanza::{NS_COMPONENT, NS_DISCO_INFO};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";

/// Nicks tried when the nick is taken: `herald`, `herald_2`, … `herald_5`; then back off.
pub const MAX_NICK_ATTEMPTS: u32 = 5;

/// First and last delay before retrying a refused or timed-out join.
pub const JOIN_RETRY: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(3600));
/// First and last delay before rejoining after a kick, a removal or a service shutdown.
pub const REJOIN_RETRY: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3600));
/// First and last delay before retrying a room that bans herald.
pub const BANNED_RETRY: (Duration, Duration) =
    (Duration::from_secs(600), Duration::from_secs(6 * 3600));

/// `<presence from to='room/nick'><x xmlns='…muc'><history maxstanzas='0'/></x></presence>`: no
/// history, so nothing old is pushed.
pub fn join_stanza(from: &str, room: &str, nick: &str) -> Element {
    let history = Element::builder("history", NS_MUC)
        .attr(crate::n!("maxstanzas"), "0")
        .build();
    Element::builder("presence", NS_COMPONENT)
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), format!("{room}/{nick}"))
        .append(Element::builder("x", NS_MUC).append(history).build())
        .build()
}

/// `<presence type='unavailable' from to='room/nick'/>`.
pub fn leave_stanza(from: &str, room: &str, nick: &str) -> Element {
    Element::builder("presence", NS_COMPONENT)
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), format!("{room}/{nick}"))
        .attr(crate::n!("type"), "unavailable")
        .build()
}

/// `<iq type='get' from to='room'><query xmlns='…disco#info'/></iq>` (the id is set when sent).
pub fn disco_info(from: &str, room: &str) -> Element {
    Element::builder("iq", NS_COMPONENT)
        .attr(crate::n!("type"), "get")
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), room)
        .append(Element::builder("query", NS_DISCO_INFO).build())
        .build()
}

/// The nick of attempt `n` (0-based): `base`, then `base_2`, `base_3`, …
pub fn nick_for(base: &str, n: u32) -> String {
    if n == 0 {
        base.to_owned()
    } else {
        format!("{base}_{}", n + 1)
    }
}

/// How long to wait before retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// [`JOIN_RETRY`].
    Join,
    /// [`REJOIN_RETRY`].
    Rejoin,
    /// [`BANNED_RETRY`].
    Banned,
}

impl Wait {
    pub fn bounds(self) -> (Duration, Duration) {
        match self {
            Wait::Join => JOIN_RETRY,
            Wait::Rejoin => REJOIN_RETRY,
            Wait::Banned => BANNED_RETRY,
        }
    }
}

/// What to do after a room refused herald.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The nick is taken: try the next one.
    NickTaken,
    /// Retry after a backoff; the reason is for logs and `push-list`.
    Retry { wait: Wait, reason: String },
    /// The room does not exist (any more): stop.
    Gone(String),
}

/// The room is gone, for these conditions (of a join or of `disco#info`).
fn gone(condition: &str) -> Option<&'static str> {
    match condition {
        "item-not-found" => Some("the room does not exist"),
        "gone" => Some("the room is gone"),
        _ => None,
    }
}

/// A join answered with a presence error of `condition` (with the room's `text`).
pub fn classify_join_error(condition: &str, text: Option<&str>) -> Refused {
    if condition == "conflict" {
        return Refused::NickTaken;
    }
    if let Some(g) = gone(condition) {
        return Refused::Gone(g.to_owned());
    }
    let (wait, reason) = match condition {
        "registration-required" => (Wait::Join, "members-only: herald is not a member"),
        "forbidden" => (Wait::Banned, "banned: herald is banned from the room"),
        "not-allowed" => (Wait::Join, "not allowed: the room refuses herald"),
        "not-authorized" => (Wait::Join, "password-protected: herald has no password"),
        "service-unavailable" => (Wait::Join, "full: the room has no room for herald"),
        // Often passing (the remote server restarts, a DNS blip): never a reason to stop.
        "remote-server-not-found" | "remote-server-timeout" => (
            Wait::Join,
            "unreachable: the room's server cannot be reached",
        ),
        "" => (Wait::Join, "join refused"),
        _ => {
            let mut reason = format!("join refused: {condition}");
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                reason.push_str(&format!(" ({t})"));
            }
            return Refused::Retry {
                wait: Wait::Join,
                reason,
            };
        }
    };
    Refused::Retry {
        wait,
        reason: reason.to_owned(),
    }
}

/// What the `disco#info` asked before a join says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Join it (the room answered, or refused in a way the join itself will tell better).
    Join,
    /// The room does not exist: never join it (that would create it).
    Gone(String),
    /// No answer in time: retry later.
    Retry(String),
}

/// A `disco#info` error of `condition`.
pub fn classify_probe_error(condition: &str) -> Probe {
    match (gone(condition), condition) {
        (Some(g), _) => Probe::Gone(g.to_owned()),
        (None, "remote-server-not-found" | "remote-server-timeout") => {
            Probe::Retry("unreachable: the room's server cannot be reached".to_owned())
        }
        (None, _) => Probe::Join,
    }
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
