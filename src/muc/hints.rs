//! Rejoin hints (pure): when a watcher's occupant drops out of a watched room because of an
//! error (status 333, or a kick for a technical reason) herald may invite the user back with a
//! XEP-0249 direct invitation, so that a client that missed the removal can rejoin. At most one
//! per user and room per [`HINT_EVERY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use minidom::Element;

use super::model::Occupant;
use crate::push::watchers::Watcher;
use crate::xmpp::inbound::PresenceStanza;
use crate::xmpp::stanza::NS_COMPONENT;

pub const NS_CONFERENCE: &str = "jabber:x:conference";
/// Status 333: removed because of an error reply (XEP-0045 §service-error-kick).
pub const ERROR_KICK: u16 = 333;
/// At most one hint per user and room this often.
pub const HINT_EVERY: Duration = Duration::from_secs(600);

/// Why the occupant of this unavailable presence dropped out because of an error, or `None`
/// when it left, was kicked by a moderator, or changed its nick.
///
/// An error removal is status 333 (Prosody), or 307 with the reason a server gives a kick
/// for an error (Prosody's `Kicked: …` text, ejabberd's "…because he sent an error…").
pub fn dropped_out(p: &PresenceStanza) -> Option<String> {
    if p.kind.as_deref() != Some("unavailable") {
        return None;
    }
    let muc = p.muc.as_deref()?;
    if muc.has_code(super::room::NICK_CHANGED) || muc.destroy.is_some() {
        return None;
    }
    let reason = muc
        .item
        .as_ref()
        .and_then(|i| i.reason.clone())
        .or_else(|| p.status.clone())
        .filter(|r| !r.trim().is_empty());
    let technical = |r: &str| r.starts_with("Kicked: ") || r.to_lowercase().contains("error");
    if muc.has_code(ERROR_KICK)
        || (muc.has_code(super::room::KICKED) && reason.as_deref().is_some_and(technical))
    {
        return Some(reason.unwrap_or_else(|| "removed because of an error".to_owned()));
    }
    None
}

/// The users among `watchers` this occupant is: by real JID when the room shows it, else by
/// the nick their room rule names. Each user once.
pub fn users_of(watchers: &[Watcher], occupant: &Occupant) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in watchers {
        let me = match &occupant.real_jid {
            Some(jid) => *jid == w.user,
            None => occupant.nick == w.nick,
        };
        if me && !out.contains(&w.user) {
            out.push(w.user.clone());
        }
    }
    out
}

/// `<message from=herald to=user><x xmlns='jabber:x:conference' jid=room reason=…/></message>`.
pub fn invitation(from: &str, user: &str, room: &str, why: &str) -> Element {
    let reason = format!(
        "You dropped out of the room {room} ({why}); join it again to keep receiving its messages."
    );
    Element::builder("message", NS_COMPONENT)
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), user)
        .append(
            Element::builder("x", NS_CONFERENCE)
                .attr(crate::n!("jid"), room)
                .attr(crate::n!("reason"), reason)
                .build(),
        )
        .build()
}

/// Which (user, room) got a hint when; forgets entries older than [`HINT_EVERY`].
#[derive(Debug, Default)]
pub struct HintLimiter {
    sent: HashMap<(String, String), Instant>,
    /// Size after the last clean-up: the next one runs when the map has doubled.
    cleaned: usize,
}

impl HintLimiter {
    /// Whether a hint to `user` for `room` may go out at `now`; if so it is counted as sent.
    pub fn allow(&mut self, user: &str, room: &str, now: Instant) -> bool {
        if self.sent.len() >= 2 * self.cleaned.max(64) {
            self.sent
                .retain(|_, at| now.duration_since(*at) < HINT_EVERY);
            self.cleaned = self.sent.len();
        }
        let key = (user.to_owned(), room.to_owned());
        match self.sent.get(&key) {
            Some(at) if now.duration_since(*at) < HINT_EVERY => false,
            _ => {
                self.sent.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
