//! XEP-0410 (MUC Self-Ping, 1.1.0), pure: the ping herald sends to its own occupant JID in a
//! room, and what the answer says about herald's occupancy.
//!
//! | answer | verdict |
//! |---|---|
//! | `result` | joined |
//! | `service-unavailable`, `feature-not-implemented` | joined (the ping reached a client without XEP-0199) |
//! | `item-not-found` | joined, check again soon (the nick just changed) |
//! | `remote-server-not-found`, `remote-server-timeout`, no answer in time | undecided: retry with backoff |
//! | any other error (`not-acceptable`, `not-allowed`, `bad-request`, …) | not joined: join again |

use minidom::Element;

/// What came back for one self-ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<iq type='result'/>`.
    Result,
    /// `<iq type='error'/>` with this defined condition (e.g. `not-acceptable`).
    Error(String),
    /// No answer within `muc.self_ping_timeout`.
    Timeout,
}

/// What an [`Answer`] says about herald's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Joined,
    /// Joined, but the nick just changed: ping again after `muc.self_ping_delay`.
    JoinedRecheck,
    /// The network or a server between could not tell: retry with backoff.
    Undecided,
    /// herald is not in the room: join it again.
    NotJoined,
}

impl Verdict {
    /// The metric label: `joined`, `undecided` or `not_joined`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Joined | Verdict::JoinedRecheck => "joined",
            Verdict::Undecided => "undecided",
            Verdict::NotJoined => "not_joined",
        }
    }
}

/// The XEP-0410 1.1.0 table.
pub fn verdict(answer: &Answer) -> Verdict {
    match answer {
        Answer::Result => Verdict::Joined,
        Answer::Timeout => Verdict::Undecided,
        Answer::Error(condition) => match condition.as_str() {
            "service-unavailable" | "feature-not-implemented" => Verdict::Joined,
            "item-not-found" => Verdict::JoinedRecheck,
            "remote-server-not-found" | "remote-server-timeout" => Verdict::Undecided,
            _ => Verdict::NotJoined,
        },
    }
}

impl Answer {
    /// `result`, `timeout` or the error condition, for operators.
    pub fn describe(&self) -> &str {
        match self {
            Answer::Result => "result",
            Answer::Timeout => "timeout",
            Answer::Error(c) => c,
        }
    }
}

/// `<iq type='get' from=herald to='room@service/nick'><ping xmlns='urn:xmpp:ping'/></iq>` (the
/// id is set when sent).
pub fn ping_stanza(from: &str, room: &str, nick: &str) -> Element {
    crate::xmpp::stanza::ping("", from, &format!("{room}/{nick}"))
}

#[cfg(test)]
#[path = "self_ping_tests.rs"]
mod tests;
