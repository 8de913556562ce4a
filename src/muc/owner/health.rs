//! The rooms owner's checks that herald is still in its rooms and that users know when they
//! are not: XEP-0410 self-pings (started from the [`Schedule`](crate::muc::ping_schedule)
//! within its cap, each with `muc.self_ping_timeout`), the rejoin a "not joined" answer asks
//! for, and the XEP-0249 invitations of rejoin hints.

use std::time::Instant;

use tracing::{debug, info, warn};

use super::Owner;
use crate::muc::hints;
use crate::muc::ping_schedule::Step;
use crate::muc::rooms::Phase;
use crate::muc::self_ping::{self, Answer, Verdict};
use crate::xmpp::inbound::PresenceStanza;
use crate::xmpp::{IqError, Lane};

/// A self-ping's room, id, and answer (`None`: the link went down first).
pub(super) type PingDone = (String, u64, Option<Answer>);

fn describe(verdict: Verdict, answer: &Answer) -> String {
    let what = match verdict {
        Verdict::Joined | Verdict::JoinedRecheck => "joined",
        Verdict::Undecided => "undecided",
        Verdict::NotJoined => "not joined",
    };
    format!("{what} ({})", answer.describe())
}

impl Owner {
    /// Sends the self-pings that are due, within the cap.
    pub(super) fn start_pings(&mut self) {
        let now = Instant::now();
        for (name, id) in self.pings.due(now) {
            let Some(room) = self.rooms.get(&name) else {
                self.pings.finished(&name, id, None, now);
                continue;
            };
            let iq = self_ping::ping_stanza(&self.ctx.jid, &name, &room.nick);
            let (handle, timeout) = (self.ctx.handle.clone(), self.ctx.muc.self_ping_timeout);
            self.ping_tasks.spawn(async move {
                let answer = match handle.request(Lane::Priority, iq).await {
                    Err(_) => None,
                    Ok(answer) => match tokio::time::timeout(timeout, answer).await {
                        Err(_) => Some(Answer::Timeout),
                        Ok(Ok(_)) => Some(Answer::Result),
                        Ok(Err(IqError::Stanza(e))) => Some(Answer::Error(e.condition)),
                        Ok(Err(_)) => None,
                    },
                };
                (name, id, answer)
            });
        }
    }

    pub(super) async fn on_ping(&mut self, (name, id, answer): PingDone) {
        let now = Instant::now();
        let verdict = answer.as_ref().map(self_ping::verdict);
        let step = self.pings.finished(&name, id, verdict, now);
        let (Some(verdict), Some(answer)) = (verdict, answer) else {
            return;
        };
        if step == Step::Stale {
            return;
        }
        self.ctx.metrics.ping(verdict.label());
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        let outcome = describe(verdict, &answer);
        room.health.last_ping = Some((crate::push::now_ms(), outcome.clone()));
        match step {
            Step::Rejoin if room.phase == Phase::Joined => {
                let reason = match verdict {
                    Verdict::Undecided => format!(
                        "self-ping undecided {} times in a row ({})",
                        self.ctx.muc.self_ping_undecided,
                        answer.describe()
                    ),
                    _ => format!("self-ping: {outcome}"),
                };
                warn!(room = %name, %reason, "herald is not in the room any more; joining it again");
                self.ctx.metrics.self_ping_rejoins.inc();
                room.rejoin(&mut self.in_flight, reason);
                self.ready.push_back(name.clone());
                self.fill_slots();
            }
            Step::Retry(n) => {
                debug!(room = %name, undecided = n, answer = answer.describe(), "self-ping undecided; trying again later")
            }
            _ => {}
        }
        self.publish(&name);
    }

    /// Before `p` (an unavailable occupant presence) is applied: when it removes a watcher's
    /// occupant because of an error, invites each such user who is still online back.
    pub(super) fn rejoin_hints(&mut self, name: &str, p: &PresenceStanza) {
        if !self.ctx.muc.rejoin_hints {
            return;
        }
        let Some(why) = hints::dropped_out(p) else {
            return;
        };
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let Some((_, nick)) = p.from.as_deref().and_then(crate::muc::room::split_occupant) else {
            return;
        };
        if nick == room.nick {
            return;
        }
        let occupant = room
            .occupants
            .get(nick)
            .cloned()
            .unwrap_or_else(|| crate::muc::Occupant {
                nick: nick.to_owned(),
                real_jid: p
                    .muc
                    .as_ref()
                    .and_then(|m| m.item.as_ref())
                    .and_then(|i| i.jid.as_deref())
                    .map(crate::muc::room::bare),
                role: crate::muc::Role::None,
            });
        let now = Instant::now();
        for user in hints::users_of(&room.watchers, &occupant) {
            if !self.hints.allow(&user, name, now) {
                debug!(room = %name, %user, "dropped out again; a hint went out recently");
                continue;
            }
            let (reader, handle) = (self.ctx.presence.clone(), self.ctx.handle.clone());
            let invite = hints::invitation(&self.ctx.jid, &user, name, &why);
            let (metrics, room, why) = (self.ctx.metrics.clone(), name.to_owned(), why.clone());
            tokio::spawn(async move {
                match reader.is_online(&user).await {
                    Ok(true) => {
                        if handle.send(Lane::Priority, &invite).await.is_ok() {
                            metrics.rejoin_hints.inc();
                            info!(%room, %user, %why, "the user dropped out of the room; invited them back");
                        }
                    }
                    Ok(false) => {
                        debug!(%room, %user, "dropped out of the room while offline; no hint")
                    }
                    Err(_) => debug!("the presence owner has stopped; no hint"),
                }
            });
        }
    }
}
