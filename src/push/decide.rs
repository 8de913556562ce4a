//! Who is pushed for a group-chat message: pure rules over the message, the room's occupants as
//! they were when it arrived, and the room's watchers.
//!
//! A message counts when it is a `groupchat` message with a `<body>` or an encrypted payload
//! (OMEMO, both namespaces), is not history (a `<delay xmlns='urn:xmpp:delay'/>` from the room
//! or without `from`), is not herald's own (sent under `own_nick`) and is not a subject change
//! (`<subject/>` without a body). Chat markers and chat states alone do not count.
//!
//! Each watcher then gets a [`Verdict`]: the sender (by real JID when the room shows it, else by
//! nick) is [`Verdict::Present`]; a muted sender or room, or a `mentioned` watcher who is not
//! mentioned, is [`Verdict::Skip`]; a candidate who is not an occupant is [`Verdict::Push`]; an
//! occupant is [`Verdict::PushIfOffline`] (the caller asks the presence table: online means
//! present, so no push and its count starts again; offline means a ghost, so it is pushed).

use minidom::Element;

use super::model::RoomMode;
use super::watchers::Watcher;
use crate::muc::RoomMessage;
use crate::xmpp::stanza::NS_DELAY;

pub const NS_OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
pub const NS_OMEMO_2: &str = "urn:xmpp:omemo:2";
pub const NS_REFERENCE: &str = "urn:xmpp:reference:0";

/// What herald does for one watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Skip,
    /// The watcher sent the message: present, nothing pushed, its count starts again.
    Present,
    /// Not an occupant: pushed.
    Push,
    /// An occupant: pushed only if the user has no online resource (a ghost); otherwise present.
    PushIfOffline,
}

/// A message that counts, as the rules and the push read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted<'a> {
    /// The sender's nick (the resource of `from`).
    pub nick: &'a str,
    /// The sender's real bare JID (lowercase), when the room shows it.
    pub real_jid: Option<&'a str>,
    pub body: Option<String>,
    pub encrypted: bool,
    /// The `uri`s of the XEP-0372 mentions.
    pub mentions: Vec<&'a str>,
}

impl Counted<'_> {
    /// `room@service/nick`, the push's `last-message-sender`.
    pub fn sender(&self, room: &str) -> String {
        format!("{room}/{}", self.nick)
    }
}

/// The message's facts if it counts; `None` when it pushes nobody.
pub fn counted(msg: &RoomMessage) -> Option<Counted<'_>> {
    let el = &msg.element;
    if el.name() != "message" || el.attr("type") != Some("groupchat") {
        return None;
    }
    let (room, nick) = el.attr("from")?.split_once('/')?;
    if !room.eq_ignore_ascii_case(&msg.room) || nick == msg.own_nick {
        return None;
    }
    let mut body = None;
    let (mut encrypted, mut subject) = (false, false);
    let mut mentions = Vec::new();
    for child in el.children() {
        match (child.ns().as_str(), child.name()) {
            (ns, "body") if ns == el.ns() => body = Some(child.text()),
            (ns, "subject") if ns == el.ns() => subject = true,
            (NS_OMEMO_LEGACY | NS_OMEMO_2, "encrypted") => encrypted = true,
            (NS_DELAY, "delay") if is_history(child, &msg.room) => return None,
            (NS_REFERENCE, "reference") if child.attr("type") == Some("mention") => {
                mentions.extend(child.attr("uri"));
            }
            _ => {}
        }
    }
    if body.is_none() && (subject || !encrypted) {
        return None;
    }
    let real_jid = msg.occupants.get(nick).and_then(|o| o.real_jid.as_deref());
    Some(Counted {
        nick,
        real_jid,
        body,
        encrypted,
        mentions,
    })
}

/// A delay the room added (history it replays), or one that says nothing of who added it.
fn is_history(delay: &Element, room: &str) -> bool {
    match delay.attr("from") {
        None => true,
        Some(from) => from
            .split('/')
            .next()
            .unwrap_or(from)
            .eq_ignore_ascii_case(room),
    }
}

/// The verdict of every watcher of `msg.watchers`, in order; empty when the message does not
/// count.
pub fn decide(msg: &RoomMessage) -> Vec<Verdict> {
    match counted(msg) {
        None => Vec::new(),
        Some(c) => msg.watchers.iter().map(|w| verdict(msg, &c, w)).collect(),
    }
}

fn verdict(msg: &RoomMessage, c: &Counted<'_>, w: &Watcher) -> Verdict {
    let is_sender = match c.real_jid {
        Some(real) => real == w.user,
        None => c.nick == w.nick,
    };
    if is_sender {
        return Verdict::Present;
    }
    let muted = |jid: &str| w.muted.iter().any(|m| m.eq_ignore_ascii_case(jid));
    if muted(&msg.room) || c.real_jid.is_some_and(muted) {
        return Verdict::Skip;
    }
    let candidate = match w.mode {
        RoomMode::Always => true,
        RoomMode::Mentioned => mentions(msg, c, w),
        RoomMode::Never => false,
    };
    if !candidate {
        return Verdict::Skip;
    }
    if msg.occupants.has_nick(&w.nick) || msg.occupants.by_real_jid(&w.user).is_some() {
        Verdict::PushIfOffline
    } else {
        Verdict::Push
    }
}

/// A XEP-0372 mention of the watcher's user (`xmpp:user@domain`) or nick
/// (`xmpp:room@service/nick`), or the nick as a whole word of the body, case-insensitive.
fn mentions(msg: &RoomMessage, c: &Counted<'_>, w: &Watcher) -> bool {
    let by_reference = c.mentions.iter().any(|uri| {
        let Some(target) = uri.strip_prefix("xmpp:") else {
            return false;
        };
        let target = percent_decode(target.split('?').next().unwrap_or(target));
        match target.split_once('/') {
            None => target.eq_ignore_ascii_case(&w.user),
            Some((room, nick)) => room.eq_ignore_ascii_case(&msg.room) && nick == w.nick,
        }
    });
    by_reference || c.body.as_deref().is_some_and(|b| has_word(b, &w.nick))
}

/// Whether `word` occurs in `text` with no letter, digit or `_` right before or after it,
/// ignoring case.
pub fn has_word(text: &str, word: &str) -> bool {
    let (text, word) = (text.to_lowercase(), word.to_lowercase());
    if word.is_empty() {
        return false;
    }
    let inner = |ch: char| ch.is_alphanumeric() || ch == '_';
    text.match_indices(&word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(inner) && !after.is_some_and(inner)
    })
}

/// `%XX` escapes of a URI decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
