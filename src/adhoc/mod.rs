//! XEP-0050 ad-hoc commands on herald's JID: a small framework ([`Command`], [`Commands`]) and
//! herald's commands ([`commands`], one per file).
//!
//! - disco#items on node `http://jabber.org/protocol/commands` lists the commands the requester
//!   may run; disco#info on a command node describes it (identity `automation/command-node`).
//! - `execute` without a form answers the first form with `status='executing'`, a `sessionid`
//!   and `<actions/>`; submitting it (`complete`/`next`, or `execute` with the form) runs the
//!   stage; the last one answers `status='completed'` with a `<note/>`. An `execute` that carries
//!   a submitted form runs at once (one round trip). `cancel` answers `status='canceled'`.
//! - Errors as XEP-0050 §4.6: `item-not-found` (unknown node), `forbidden` (not this user's
//!   command, or a foreign domain), `bad-request` + `<malformed-action/>`, `<bad-action/>`,
//!   `<bad-locale/>` (herald's texts are English), `<bad-payload/>` (naming the field),
//!   `<bad-sessionid/>`, and `not-allowed` + `<session-expired/>`. A failed submission keeps the
//!   session, so the form can be corrected and sent again.
//! - The session machine is pure ([`session`]); the commands do the work (store writes are
//!   flushed before they return, so `completed` is only sent for a durable change).

pub mod commands;
mod error;
pub mod session;
#[cfg(test)]
mod tests;
pub mod xml;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minidom::Element;
use rand::Rng;

use crate::xmpp::iq_handlers::{IqFuture, IqKind, IqRequest};
use crate::xmpp::stanza::{StanzaError, NS_DISCO_INFO};
use session::{Data, Sessions, Step};
use xml::{Note, Request};

pub use error::CommandError;

pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// Who runs a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub full: String,
    /// The bare JID (lowercase, as RFC 7622 prepares it).
    pub bare: String,
    /// In `[admin] jids`.
    pub admin: bool,
    /// A user of a domain herald serves push for.
    pub served: bool,
}

/// What a stage produced.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Another form; `last`: submitting it completes the command. `data` is kept for the next
    /// stage.
    Form {
        form: Element,
        last: bool,
        data: Data,
    },
    /// Done: the note, and the result forms (none, or one per table).
    Done { note: Note, results: Vec<Element> },
}

pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Reply, CommandError>> + Send>>;

/// A submitted stage.
#[derive(Debug, Clone)]
pub struct Input {
    pub requester: Requester,
    /// The stage the form belongs to (0 = the first form).
    pub stage: usize,
    pub form: xml::Submitted,
    pub data: Data,
}

/// One command.
pub trait Command: Send + Sync + 'static {
    fn node(&self) -> &'static str;
    fn name(&self) -> &'static str;
    /// Listed and runnable only for `[admin] jids`.
    fn admin_only(&self) -> bool {
        false
    }
    /// The first form.
    fn start(&self, requester: Requester) -> CommandFuture;
    /// A submitted form.
    fn submit(&self, input: Input) -> CommandFuture;
}

/// The command registry, the sessions and who is an admin.
pub struct Commands {
    jid: String,
    list: Vec<Arc<dyn Command>>,
    sessions: Mutex<Sessions>,
    admins: Vec<String>,
    served: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

fn new_session_id() -> String {
    let bytes: [u8; 12] = rand::thread_rng().gen();
    hex::encode(bytes)
}

impl Commands {
    /// `jid`: herald's JID (for disco items). `served`: whether a bare JID is a user of a
    /// served domain (others may run only admin commands, and only when they are admins).
    pub fn new(
        jid: &str,
        admins: Vec<String>,
        served: impl Fn(&str) -> bool + Send + Sync + 'static,
        timeout: Duration,
        per_user: usize,
    ) -> Commands {
        Commands {
            jid: jid.to_owned(),
            list: Vec::new(),
            sessions: Mutex::new(Sessions::new(timeout, per_user)),
            admins,
            served: Arc::new(served),
        }
    }

    pub fn add(&mut self, command: impl Command) {
        self.list.push(Arc::new(command));
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn requester(&self, from: &str) -> Requester {
        let bare = xmpp_parsers::jid::Jid::new(from)
            .map(|j| j.to_bare().to_string())
            .unwrap_or_else(|_| from.split('/').next().unwrap_or(from).to_owned());
        Requester {
            full: from.to_owned(),
            admin: self.admins.contains(&bare),
            served: (self.served)(&bare),
            bare,
        }
    }

    /// Whether `r` may run `c`: admins run everything; others only user commands, and only
    /// when they are users of a served domain.
    fn may_run(c: &dyn Command, r: &Requester) -> bool {
        r.admin || (!c.admin_only() && r.served)
    }

    /// The commands `r` may run.
    pub fn visible(&self, r: &Requester) -> Vec<(&'static str, &'static str)> {
        self.list
            .iter()
            .filter(|c| Self::may_run(c.as_ref(), r))
            .map(|c| (c.node(), c.name()))
            .collect()
    }

    /// Answers one `<command/>` request.
    pub async fn execute(&self, from: &str, payload: &Element) -> Result<Element, CommandError> {
        let req = xml::parse_request(payload)?;
        let command = self
            .list
            .iter()
            .find(|c| c.node() == req.node)
            .cloned()
            .ok_or(CommandError::ItemNotFound)?;
        let r = self.requester(from);
        if !Self::may_run(command.as_ref(), &r) {
            return Err(CommandError::Forbidden(if command.admin_only() {
                "this command is for herald's administrators".into()
            } else {
                "herald runs push commands only for users of the domains it serves".into()
            }));
        }
        self.run(command, r, req).await
    }

    async fn run(
        &self,
        command: Arc<dyn Command>,
        r: Requester,
        req: Request,
    ) -> Result<Element, CommandError> {
        let node = req.node.clone();
        let step = self.sessions().step(&req, &r.full, Instant::now())?;
        match step {
            Step::Start => {
                let reply = command.start(r.clone()).await?;
                self.answer_new(&node, &r, reply)
            }
            Step::OneShot(x) => {
                let form = xml::Submitted::parse(&x)?;
                let input = Input {
                    requester: r.clone(),
                    stage: 0,
                    form,
                    data: Data::new(),
                };
                let reply = command.submit(input).await?;
                self.answer_new(&node, &r, reply)
            }
            Step::Submit { session, form } => {
                let parsed = match xml::Submitted::parse(&form) {
                    Ok(f) => f,
                    Err(e) => {
                        self.sessions().put_back(session, None, Instant::now());
                        return Err(e);
                    }
                };
                let input = Input {
                    requester: r,
                    stage: session.stage,
                    form: parsed,
                    data: session.data.clone(),
                };
                match command.submit(input).await {
                    Err(e) => {
                        self.sessions().put_back(session, None, Instant::now());
                        Err(e)
                    }
                    Ok(Reply::Done { note, results }) => {
                        let id = session.id.clone();
                        self.sessions().finish(session, Instant::now());
                        Ok(xml::completed(&node, &id, &note, results))
                    }
                    Ok(Reply::Form { form, last, data }) => {
                        let mut session = session;
                        session.data = data;
                        let id = session.id.clone();
                        let stage = session.stage + 1;
                        self.sessions().put_back(
                            session,
                            Some((form.clone(), last)),
                            Instant::now(),
                        );
                        Ok(xml::executing(&node, &id, form, stage, last))
                    }
                }
            }
            Step::Prev(session) => {
                let (form, last) = session.forms[session.stage].clone();
                let (id, stage) = (session.id.clone(), session.stage);
                self.sessions().put_back(session, None, Instant::now());
                Ok(xml::executing(&node, &id, form, stage, last))
            }
            Step::Cancel(session) => Ok(xml::canceled(&node, &session.id)),
        }
    }

    /// The answer to a stage run without a session: a new session for a form, or done.
    fn answer_new(&self, node: &str, r: &Requester, reply: Reply) -> Result<Element, CommandError> {
        let id = new_session_id();
        match reply {
            Reply::Done { note, results } => Ok(xml::completed(node, &id, &note, results)),
            Reply::Form { form, last, data } => {
                let id = self.sessions().open(
                    id,
                    node,
                    &r.full,
                    &r.bare,
                    (form.clone(), last),
                    data,
                    Instant::now(),
                )?;
                Ok(xml::executing(node, &id, form, 0, last))
            }
        }
    }

    /// disco#items: the commands node lists what the requester may run.
    pub fn disco_items(&self, from: &str, payload: &Element) -> Result<Element, CommandError> {
        let mut q = Element::builder("query", NS_DISCO_ITEMS);
        match payload.attr("node") {
            None => {}
            Some(NS_COMMANDS) => {
                q = q.attr(crate::n!("node"), NS_COMMANDS);
                for (node, name) in self.visible(&self.requester(from)) {
                    q = q.append(
                        Element::builder("item", NS_DISCO_ITEMS)
                            .attr(crate::n!("jid"), self.jid.as_str())
                            .attr(crate::n!("node"), node)
                            .attr(crate::n!("name"), name)
                            .build(),
                    );
                }
            }
            Some(_) => return Err(CommandError::ItemNotFound),
        }
        Ok(q.build())
    }

    /// disco#info on a node: a command the requester may run, or the commands node.
    pub fn disco_info(&self, from: &str, payload: &Element) -> Result<Element, CommandError> {
        let node = payload.attr("node").unwrap_or_default();
        let r = self.requester(from);
        let (category, kind, name) = if node == NS_COMMANDS {
            ("automation", "command-list", "Commands")
        } else {
            let c = self
                .list
                .iter()
                .find(|c| c.node() == node && Self::may_run(c.as_ref(), &r))
                .ok_or(CommandError::ItemNotFound)?;
            ("automation", "command-node", c.name())
        };
        let mut q = Element::builder("query", NS_DISCO_INFO)
            .attr(crate::n!("node"), node)
            .append(
                Element::builder("identity", NS_DISCO_INFO)
                    .attr(crate::n!("category"), category)
                    .attr(crate::n!("type"), kind)
                    .attr(crate::n!("name"), name)
                    .build(),
            );
        for f in [NS_COMMANDS, xml::NS_DATA] {
            q = q.append(
                Element::builder("feature", NS_DISCO_INFO)
                    .attr(crate::n!("var"), f)
                    .build(),
            );
        }
        Ok(q.build())
    }
}

/// The IQ handlers: `<command/>` sets, disco#items gets, disco#info gets on nodes.
pub fn handlers(
    commands: Arc<Commands>,
) -> (
    impl Fn(IqRequest) -> IqFuture + Send + Sync + 'static,
    impl Fn(IqRequest) -> IqFuture + Send + Sync + 'static,
    impl Fn(IqRequest) -> IqFuture + Send + Sync + 'static,
) {
    let c1 = commands.clone();
    let execute = move |r: IqRequest| -> IqFuture {
        let c = c1.clone();
        Box::pin(async move {
            if r.kind != IqKind::Set {
                return Err(
                    CommandError::BadRequest("commands are IQ sets".into()).to_stanza_error()
                );
            }
            c.execute(&r.from, &r.payload)
                .await
                .map(Some)
                .map_err(|e| e.to_stanza_error())
        })
    };
    let c2 = commands.clone();
    let items = move |r: IqRequest| -> IqFuture {
        let answer = match r.kind {
            IqKind::Get => c2
                .disco_items(&r.from, &r.payload)
                .map(Some)
                .map_err(|e| e.to_stanza_error()),
            IqKind::Set => Err(StanzaError::service_unavailable()),
        };
        Box::pin(async move { answer })
    };
    let info = move |r: IqRequest| -> IqFuture {
        let answer = match r.kind {
            IqKind::Get => commands
                .disco_info(&r.from, &r.payload)
                .map(Some)
                .map_err(|e| e.to_stanza_error()),
            IqKind::Set => Err(StanzaError::service_unavailable()),
        };
        Box::pin(async move { answer })
    };
    (execute, items, info)
}
