//! The XEP-0050 session table and state machine. Pure (time is passed in): given a parsed
//! request it decides what happens next, or which XEP-0050 §4.6 error to answer.
//!
//! A session belongs to the full JID that started it and to its command node; anyone else
//! using its id gets `<bad-sessionid/>`. Sessions not touched for the timeout expire; ids of
//! ended (completed, canceled, expired, evicted) sessions are remembered for as long again, so
//! using one gets `<session-expired/>` rather than `<bad-sessionid/>`. A user has at most
//! `per_user` open sessions: starting one more ends their oldest.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use minidom::Element;

use super::xml::{Action, Request};
use super::CommandError;

/// Most open sessions in all; beyond it new sessions are refused (`resource-constraint`).
pub const MAX_SESSIONS: usize = 10_000;
/// Most remembered ids of ended sessions.
const MAX_ENDED: usize = 10_000;

/// What a command keeps between stages.
pub type Data = BTreeMap<String, String>;

/// One open session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub node: String,
    /// The full JID that started it.
    pub owner: String,
    pub bare: String,
    /// The stage whose form was sent last (0 = the first form).
    pub stage: usize,
    /// The form sent at each stage so far, and whether submitting it completes the command.
    pub forms: Vec<(Element, bool)>,
    pub data: Data,
    touched: Instant,
}

impl Session {
    /// Whether submitting the current form completes the command.
    pub fn last(&self) -> bool {
        self.forms.get(self.stage).is_some_and(|(_, last)| *last)
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Step {
    /// Start the command: send its first form.
    Start,
    /// `execute` (or `complete`) carrying a submitted form and no session: run stage 0 at once.
    OneShot(Element),
    /// A form submitted for `session.stage` (the session is taken out until it is put back).
    Submit { session: Session, form: Element },
    /// Go back one stage: resend `session.forms[session.stage]` (already moved back).
    Prev(Session),
    /// The session is ended.
    Cancel(Session),
}

pub struct Sessions {
    open: HashMap<String, Session>,
    ended: HashMap<String, Instant>,
    timeout: Duration,
    per_user: usize,
}

impl Sessions {
    pub fn new(timeout: Duration, per_user: usize) -> Sessions {
        Sessions {
            open: HashMap::new(),
            ended: HashMap::new(),
            timeout,
            per_user: per_user.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        let expired: Vec<String> = self
            .open
            .values()
            .filter(|s| now.saturating_duration_since(s.touched) >= timeout)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.open.remove(&id);
            self.ended.insert(id, now);
        }
        self.ended
            .retain(|_, at| now.saturating_duration_since(*at) < timeout);
    }

    fn remember_ended(&mut self, id: String, now: Instant) {
        if self.ended.len() >= MAX_ENDED {
            if let Some(oldest) = self
                .ended
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                self.ended.remove(&oldest);
            }
        }
        self.ended.insert(id, now);
    }

    /// Decides what `req` from `from` means.
    pub fn step(&mut self, req: &Request, from: &str, now: Instant) -> Result<Step, CommandError> {
        self.expire(now);
        let Some(id) = &req.sessionid else {
            return match (req.action, &req.form) {
                (Action::Execute | Action::Complete, Some(form)) => Ok(Step::OneShot(form.clone())),
                (Action::Execute, None) => Ok(Step::Start),
                _ => Err(CommandError::BadSessionId(
                    "this action needs the sessionid of a running command".into(),
                )),
            };
        };
        let Some(session) = self.open.get(id) else {
            return Err(if self.ended.contains_key(id) {
                CommandError::SessionExpired
            } else {
                CommandError::BadSessionId("unknown sessionid".into())
            });
        };
        if session.owner != from || session.node != req.node {
            return Err(CommandError::BadSessionId(
                "this sessionid belongs to another requester or command".into(),
            ));
        }
        let last = session.last();
        let stage = session.stage;
        let action = match req.action {
            Action::Execute => {
                if last {
                    Action::Complete
                } else {
                    Action::Next
                }
            }
            a => a,
        };
        match action {
            Action::Cancel => {
                let session = self.take(id, now);
                Ok(Step::Cancel(session))
            }
            Action::Prev if stage == 0 => Err(CommandError::BadAction(
                "this is the first stage: there is no previous one".into(),
            )),
            Action::Prev => {
                let mut session = self.take_open(id);
                session.stage -= 1;
                session.forms.truncate(session.stage + 1);
                session.touched = now;
                Ok(Step::Prev(session))
            }
            Action::Next if last => Err(CommandError::BadAction(
                "this is the last stage: complete it".into(),
            )),
            Action::Complete if !last => Err(CommandError::BadAction(
                "this stage is not the last: use next".into(),
            )),
            Action::Next | Action::Complete => match &req.form {
                None => Err(CommandError::BadPayload(
                    "submit the form (<x xmlns='jabber:x:data' type='submit'/>)".into(),
                )),
                Some(form) => Ok(Step::Submit {
                    session: self.take_open(id),
                    form: form.clone(),
                }),
            },
            Action::Execute => unreachable!("execute was mapped to next or complete"),
        }
    }

    fn take_open(&mut self, id: &str) -> Session {
        self.open
            .remove(id)
            .unwrap_or_else(|| unreachable!("looked up just before"))
    }

    fn take(&mut self, id: &str, now: Instant) -> Session {
        let s = self.take_open(id);
        self.remember_ended(s.id.clone(), now);
        s
    }

    /// Opens a session for `node` owned by `owner` with its first form; ends the owner's
    /// oldest session when they have `per_user` already.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        id: String,
        node: &str,
        owner: &str,
        bare: &str,
        form: (Element, bool),
        data: Data,
        now: Instant,
    ) -> Result<String, CommandError> {
        self.expire(now);
        let mine: Vec<(&String, Instant)> = self
            .open
            .iter()
            .filter(|(_, s)| s.bare == bare)
            .map(|(k, s)| (k, s.touched))
            .collect();
        if mine.len() >= self.per_user {
            if let Some(oldest) = mine
                .iter()
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| (*k).clone())
            {
                self.take(&oldest, now);
            }
        } else if self.open.len() >= MAX_SESSIONS {
            return Err(CommandError::Busy);
        }
        self.open.insert(
            id.clone(),
            Session {
                id: id.clone(),
                node: node.to_owned(),
                owner: owner.to_owned(),
                bare: bare.to_owned(),
                stage: 0,
                forms: vec![form],
                data,
                touched: now,
            },
        );
        Ok(id)
    }

    /// Puts a session back after a stage: `next` is the form just sent (the session moves on
    /// to it), or `None` when the same stage is to be submitted again (after an error).
    pub fn put_back(&mut self, mut session: Session, next: Option<(Element, bool)>, now: Instant) {
        if let Some(form) = next {
            session.forms.truncate(session.stage + 1);
            session.forms.push(form);
            session.stage += 1;
        }
        session.touched = now;
        self.open.insert(session.id.clone(), session);
    }

    /// Ends a session that completed.
    pub fn finish(&mut self, session: Session, now: Instant) {
        self.remember_ended(session.id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adhoc::xml;

    const ALICE: &str = "alice@example.org/phone";

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn config_form(var: &str) -> Element {
        xml::form(
            "Configure Service",
            "",
            vec![xml::field(
                var,
                xmpp_parsers::data_forms::FieldType::ListSingle,
                var,
                true,
                &[],
            )],
        )
    }

    fn request(
        node: &str,
        sessionid: Option<&str>,
        action: xml::Action,
        form: bool,
    ) -> xml::Request {
        xml::Request {
            node: node.into(),
            sessionid: sessionid.map(Into::into),
            action,
            form: form.then(|| el("<x xmlns='jabber:x:data' type='submit'/>")),
        }
    }

    #[test]
    fn sessions_expire_and_their_ids_then_read_as_expired() {
        let mut s = Sessions::new(Duration::from_secs(600), 8);
        let t0 = Instant::now();
        let form = (config_form("mode"), true);
        let id = s
            .open(
                "s1".into(),
                "config",
                ALICE,
                "alice@example.org",
                form,
                Data::new(),
                t0,
            )
            .unwrap();
        let req = request("config", Some(&id), xml::Action::Complete, true);
        let t1 = t0 + Duration::from_secs(599);
        let Ok(Step::Submit { session, .. }) = s.step(&req, ALICE, t1) else {
            panic!("still open after 599 s");
        };
        // A stage that failed puts it back (touched at t1); 600 s of silence end it.
        s.put_back(session, None, t1);
        let late = s.step(&req, ALICE, t1 + Duration::from_secs(600));
        assert!(
            matches!(late, Err(CommandError::SessionExpired)),
            "{late:?}"
        );
        assert!(s.is_empty());
        // Long after, the id is forgotten: unknown.
        let later = s.step(&req, ALICE, t1 + Duration::from_secs(1300));
        assert!(
            matches!(later, Err(CommandError::BadSessionId(_))),
            "{later:?}"
        );
    }

    #[test]
    fn a_user_has_a_bounded_number_of_sessions() {
        let mut s = Sessions::new(Duration::from_secs(600), 2);
        let t = Instant::now();
        let f = || (config_form("mode"), true);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.open(
                (*id).into(),
                "config",
                ALICE,
                "alice@example.org",
                f(),
                Data::new(),
                t + Duration::from_secs(i as u64),
            )
            .unwrap();
        }
        // Another user's session does not count against alice.
        s.open(
            "d".into(),
            "config",
            "bob@example.org/x",
            "bob@example.org",
            f(),
            Data::new(),
            t,
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        let oldest = s.step(
            &request("config", Some("a"), xml::Action::Cancel, false),
            ALICE,
            t,
        );
        assert!(
            matches!(oldest, Err(CommandError::SessionExpired)),
            "{oldest:?}"
        );
        assert!(matches!(
            s.step(
                &request("config", Some("c"), xml::Action::Cancel, false),
                ALICE,
                t
            ),
            Ok(Step::Cancel(_))
        ));
    }
}
