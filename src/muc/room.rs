//! What one occupant presence from a room means (pure): who joined, changed nick or left, and
//! whether it was herald itself, joined (status 110, or its own nick), renamed (303), or out of
//! the room: kicked (307), banned (301), removed by an affiliation change (321) or because the
//! room became members-only (322), the service shutting down (332), or the room destroyed.

use crate::xmpp::inbound::PresenceStanza;
use crate::xmpp::muc_presence::MucDetails;

use super::model::{Occupant, Occupants, Role};

/// Status codes (XEP-0045 §15.6).
pub const SELF: u16 = 110;
pub const CREATED: u16 = 201;
pub const BANNED: u16 = 301;
pub const NICK_CHANGED: u16 = 303;
pub const KICKED: u16 = 307;
pub const AFFILIATION_CHANGED: u16 = 321;
pub const MEMBERS_ONLY: u16 = 322;
pub const SHUTDOWN: u16 = 332;

/// Why herald is no longer in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Kicked {
        reason: Option<String>,
    },
    Banned {
        reason: Option<String>,
    },
    /// Its affiliation was changed (321) or the room became members-only (322).
    NotAMember,
    /// The MUC service is shutting down (332).
    Shutdown,
    /// The room was destroyed; `venue` is the alternative room it named.
    Destroyed {
        venue: Option<String>,
        reason: Option<String>,
    },
    /// An unavailable self-presence with no reason: the answer to herald's own leave.
    Left,
}

impl Removal {
    /// A human reason, for logs and `push-list`.
    pub fn describe(&self) -> String {
        let with = |what: &str, why: &Option<String>| match why {
            Some(r) if !r.is_empty() => format!("{what} ({r})"),
            _ => what.to_owned(),
        };
        match self {
            Removal::Kicked { reason } => with("kicked from the room", reason),
            Removal::Banned { reason } => with("banned: herald is banned from the room", reason),
            Removal::NotAMember => "members-only: herald is not a member".to_owned(),
            Removal::Shutdown => "the room's service is shutting down".to_owned(),
            Removal::Destroyed { venue, reason } => {
                let mut s = with("the room was destroyed", reason);
                if let Some(v) = venue {
                    s.push_str(&format!("; it moved to {v}"));
                }
                s
            }
            Removal::Left => "herald left the room".to_owned(),
        }
    }
}

/// What a presence changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another occupant joined, changed or left.
    Occupant,
    /// herald is in the room as `nick` (the room may have changed it); `created` when the join
    /// created the room (status 201).
    SelfJoined { nick: String, created: bool },
    /// herald's nick changed to this one (303); its presence under the new nick follows.
    SelfNick(String),
    /// herald is out of the room.
    SelfRemoved(Removal),
    /// Not an occupant presence (no nick, e.g. ejabberd's presence from the bare room).
    Ignored,
}

/// `room@service/nick` → (`room@service` lowercase, `nick`). `None` without a nick.
pub fn split_occupant(from: &str) -> Option<(String, &str)> {
    let (room, nick) = from.split_once('/')?;
    if room.is_empty() || nick.is_empty() {
        return None;
    }
    Some((room.to_lowercase(), nick))
}

/// The bare JID of `jid`, lowercase.
pub fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_lowercase()
}

fn occupant(nick: &str, muc: Option<&MucDetails>) -> Occupant {
    let item = muc.and_then(|m| m.item.as_ref());
    Occupant {
        nick: nick.to_owned(),
        real_jid: item.and_then(|i| i.jid.as_deref()).map(bare),
        role: Role::parse(item.and_then(|i| i.role.as_deref())),
    }
}

/// Applies an occupant presence (not a presence error) to `occupants`; `own_nick` is the nick
/// herald has, or is joining with.
pub fn apply(occupants: &mut Occupants, own_nick: &str, p: &PresenceStanza) -> Change {
    let Some((_, nick)) = p.from.as_deref().and_then(split_occupant) else {
        return Change::Ignored;
    };
    let muc = p.muc.as_deref();
    let code = |c: u16| muc.is_some_and(|m| m.has_code(c));
    let is_self = code(SELF) || nick == own_nick;
    let unavailable = p.kind.as_deref() == Some("unavailable");
    if !unavailable {
        occupants.insert(occupant(nick, muc));
        return if is_self {
            Change::SelfJoined {
                nick: nick.to_owned(),
                created: code(CREATED),
            }
        } else {
            Change::Occupant
        };
    }
    let old = occupants.remove(nick);
    let new_nick = muc
        .and_then(|m| m.item.as_ref())
        .and_then(|i| i.nick.clone());
    if code(NICK_CHANGED) {
        if let Some(new) = new_nick {
            let mut moved = old.unwrap_or_else(|| occupant(nick, muc));
            moved.nick = new.clone();
            occupants.insert(moved);
            return if is_self {
                Change::SelfNick(new)
            } else {
                Change::Occupant
            };
        }
    }
    if !is_self {
        return Change::Occupant;
    }
    let reason = muc
        .and_then(|m| m.item.as_ref())
        .and_then(|i| i.reason.clone());
    let removal = if let Some(d) = muc.and_then(|m| m.destroy.as_ref()) {
        Removal::Destroyed {
            venue: d.jid.clone(),
            reason: d.reason.clone(),
        }
    } else if code(BANNED) {
        Removal::Banned { reason }
    } else if code(KICKED) {
        Removal::Kicked { reason }
    } else if code(AFFILIATION_CHANGED) || code(MEMBERS_ONLY) {
        Removal::NotAMember
    } else if code(SHUTDOWN) {
        Removal::Shutdown
    } else {
        Removal::Left
    };
    occupants.clear();
    Change::SelfRemoved(removal)
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
