//! The rooms owner's handling of what the rooms send: occupant presences (herald joined,
//! renamed, removed), refused joins, and groupchat messages handed to the push owner.

use std::time::Instant;

use tracing::{debug, info};

use super::Owner;
use crate::muc::join::{self, Refused, Wait};
use crate::muc::room::{self as occupancy, Change, Removal};
use crate::muc::rooms::Phase;
use crate::muc::RoomMessage;
use crate::xmpp::inbound::PresenceStanza;
use crate::xmpp::Lane;

impl Owner {
    pub(super) async fn on_presence(&mut self, p: PresenceStanza) {
        let Some(from) = p.from.as_deref() else {
            return;
        };
        let name = occupancy::bare(from);
        let Some(room) = self.rooms.get_mut(&name) else {
            debug!(from, "presence from a room herald is not in; dropped");
            return;
        };
        let now = Instant::now();
        room.last_stanza = Some(now);
        self.pings.heard(&name, now);
        if p.kind.as_deref() == Some("error") {
            self.on_join_error(&name, &p);
            return;
        }
        if !room.phase.sent_join() {
            debug!(
                from,
                "occupant presence while herald is not joining; dropped"
            );
            return;
        }
        self.rejoin_hints(&name, &p);
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        let occupants = std::sync::Arc::make_mut(&mut room.occupants);
        match occupancy::apply(occupants, &room.nick, &p) {
            Change::Occupant | Change::Ignored => {}
            Change::SelfJoined {
                nick,
                created: true,
            } => {
                let leave = join::leave_stanza(&self.ctx.jid, &name, &nick);
                let _ = self.ctx.handle.send(Lane::Priority, &leave).await;
                let reason =
                    "the room does not exist (herald's join created it; herald left it at once)";
                self.stop_for_good(&name, reason.to_owned());
                return;
            }
            Change::SelfJoined { nick, .. } => {
                if room.phase != Phase::Joined {
                    info!(room = %name, %nick, occupants = room.occupants.len(), "joined the room");
                    let after_login = std::mem::take(&mut room.login_join);
                    room.joined(&mut self.in_flight, nick);
                    self.pings.joined(&name, now, after_login);
                    self.fill_slots();
                } else if std::mem::take(&mut room.nick_changing) {
                    self.pings.joined(&name, now, false);
                }
            }
            Change::SelfNick(nick) => {
                info!(room = %name, from = %room.nick, to = %nick, "herald's nick in the room changed");
                room.nick = nick;
                // No self-ping until the presence under the new nick arrives.
                room.nick_changing = true;
                self.pings.pause(&name);
            }
            // The answer to a leave sent on an earlier join of this room.
            Change::SelfRemoved(Removal::Left) if room.phase != Phase::Joined => {}
            Change::SelfRemoved(removal) => {
                let reason = removal.describe();
                match removal {
                    Removal::Destroyed { venue, .. } => {
                        if let Some(v) = venue {
                            info!(room = %name, venue = %v, "the room was destroyed; its users moved to another room");
                        }
                        self.stop_for_good(&name, reason);
                    }
                    Removal::Banned { .. } => self.refuse(&name, Wait::Banned, reason),
                    _ => self.refuse(&name, Wait::Rejoin, reason),
                }
                return;
            }
        }
        self.publish(&name);
    }

    fn on_join_error(&mut self, name: &str, p: &PresenceStanza) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if !matches!(room.phase, Phase::Joining { .. }) {
            debug!(room = %name, "presence error while not joining; dropped");
            return;
        }
        let error = p.muc.as_ref().and_then(|m| m.error.as_ref());
        let condition = error.map(|e| e.condition.as_str()).unwrap_or_default();
        let text = error.and_then(|e| e.text.as_deref());
        match join::classify_join_error(condition, text) {
            Refused::NickTaken => {
                let taken = room.nick.clone();
                if room.next_nick(&self.ctx.nick) {
                    info!(room = %name, %taken, next = %room.nick, "nick taken in the room; trying another");
                    room.set_phase(&mut self.in_flight, Phase::Waiting);
                    room.next_at = None;
                    self.reschedule = true;
                    self.publish(name);
                } else {
                    let reason = format!(
                        "nick taken: {} to {} are all in use",
                        self.ctx.nick,
                        join::nick_for(&self.ctx.nick, join::MAX_NICK_ATTEMPTS - 1)
                    );
                    self.refuse(name, Wait::Join, reason);
                }
            }
            Refused::Retry { wait, reason } => self.refuse(name, wait, reason),
            Refused::Gone(reason) => self.stop_for_good(name, reason),
        }
    }

    pub(super) async fn on_groupchat(&mut self, el: minidom::Element) {
        let name = el.attr("from").map(occupancy::bare).unwrap_or_default();
        let Some(room) = self.rooms.get_mut(&name) else {
            debug!(room = %name, "groupchat from a room herald is not in; dropped");
            return;
        };
        let now = Instant::now();
        room.last_stanza = Some(now);
        self.pings.heard(&name, now);
        if room.phase != Phase::Joined {
            debug!(room = %name, "groupchat while herald is not joined; dropped");
            return;
        }
        debug!(room = %name, id = el.attr("id").unwrap_or_default(), watchers = room.watchers.len(), "groupchat message handed to the push owner");
        let msg = RoomMessage {
            room: name,
            own_nick: room.nick.clone(),
            element: el,
            occupants: room.occupants.clone(),
            watchers: room.watchers.clone(),
            at_ms: crate::push::now_ms(),
        };
        if self.ctx.messages.send(msg).await.is_err() {
            debug!("the push owner has stopped; groupchat dropped");
        }
    }
}
