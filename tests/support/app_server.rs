//! A push app server of the test's own on a real Prosody ([`AppServer`], on a [`RawComponent`]):
//! answers every pubsub publish with what the test configured (a result, a given error, or nothing
//! at all; per node if wanted), records each publish it got, answers nothing else, and can send
//! XEP-0357's remote-disable message and ping.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use minidom::Element;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::client::nc;
use super::pubsub::{Form, NS_PUBSUB, NS_PUSH};
pub use super::raw_component::{parse_component_xml, RawComponent, NS_COMPONENT};

const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

// ------------------------------------------------------------------------------------------------

/// How an [`AppServer`] answers a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `<iq type='result'>` with the published item's id, as Prosody's pubsub answers.
    Result,
    /// `<iq type='error'><error type=KIND><CONDITION/></error>`, e.g. `("cancel", "item-not-found")`
    /// or `("wait", "resource-constraint")`.
    Error { kind: String, condition: String },
    /// No answer at all (a stuck app server: the publisher's timeout decides).
    Silent,
}

impl Answer {
    pub fn error(kind: &str, condition: &str) -> Answer {
        Answer::Error {
            kind: kind.into(),
            condition: condition.into(),
        }
    }
}

/// One publish an [`AppServer`] got.
#[derive(Clone, Debug)]
pub struct Publish {
    /// The whole `<iq/>` as received.
    pub iq: Element,
    pub from: String,
    pub node: String,
    /// The `urn:xmpp:push:summary` form inside `<notification xmlns='urn:xmpp:push:0'>`.
    pub summary: Form,
    /// The `<publish-options>` form, if any.
    pub options: Option<Form>,
    /// What the app server answered.
    pub answered: Answer,
}

impl Publish {
    /// The `secret` field of the publish-options.
    pub fn secret(&self) -> Option<&str> {
        self.options.as_ref().and_then(|o| o.get("secret"))
    }
}

struct Shared {
    answer: Answer,
    by_node: std::collections::HashMap<String, Answer>,
    publishes: usize,
}

enum AppCmd {
    Send(Element, oneshot::Sender<()>),
}

/// A push app server on its own component JID: answers every `<pubsub><publish>` IQ as set by
/// [`AppServer::set_answer`] and hands each publish to [`AppServer::next_publish`]. Other IQs get
/// `service-unavailable`; other stanzas are ignored.
pub struct AppServer {
    pub jid: String,
    shared: Arc<Mutex<Shared>>,
    publishes: mpsc::UnboundedReceiver<Publish>,
    /// Stanzas that are not IQ requests (answers to [`AppServer::ping`], messages).
    others: mpsc::UnboundedReceiver<Element>,
    cmd_tx: mpsc::UnboundedSender<AppCmd>,
    task: JoinHandle<RawComponent>,
}

impl AppServer {
    /// Connects as `jid` (a component configured with
    /// [`super::prosody::ProsodyBuilder::extra_component`]) answering with `answer`.
    pub async fn connect(addr: &str, jid: &str, secret: &str, answer: Answer) -> AppServer {
        let comp = RawComponent::connect(addr, jid, secret).await;
        let shared = Arc::new(Mutex::new(Shared {
            answer,
            by_node: Default::default(),
            publishes: 0,
        }));
        let (pub_tx, publishes) = mpsc::unbounded_channel();
        let (other_tx, others) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(comp, shared.clone(), pub_tx, other_tx, cmd_rx));
        AppServer {
            jid: jid.to_owned(),
            shared,
            publishes,
            others,
            cmd_tx,
            task,
        }
    }

    /// How later publishes are answered.
    pub fn set_answer(&self, answer: Answer) {
        self.shared.lock().unwrap().answer = answer;
    }

    /// How later publishes to `node` are answered (overrides [`AppServer::set_answer`]).
    pub fn set_answer_for(&self, node: &str, answer: Answer) {
        self.shared
            .lock()
            .unwrap()
            .by_node
            .insert(node.to_owned(), answer);
    }

    /// How many publishes arrived so far.
    pub fn count(&self) -> usize {
        self.shared.lock().unwrap().publishes
    }

    /// The next publish (already answered), or `None` after `timeout`.
    pub async fn next_publish(&mut self, timeout: Duration) -> Option<Publish> {
        tokio::time::timeout(timeout, self.publishes.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next publish; panics with `what` after `timeout`.
    pub async fn expect_publish(&mut self, timeout: Duration, what: &str) -> Publish {
        self.next_publish(timeout)
            .await
            .unwrap_or_else(|| panic!("{}: no publish within {timeout:?}: {what}", self.jid))
    }

    /// Sends any stanza from this component.
    pub async fn send(&self, stanza: Element) {
        let (tx, rx) = oneshot::channel();
        self.cmd_tx
            .send(AppCmd::Send(stanza, tx))
            .unwrap_or_else(|_| panic!("{}: app server task ended", self.jid));
        rx.await
            .unwrap_or_else(|_| panic!("{}: app server task ended", self.jid));
    }

    /// XEP-0357 remote disable: `<message from=SELF to=TO><pubsub node=NODE><affiliation jid=USER
    /// affiliation='none'/></pubsub></message>`.
    pub async fn remote_disable(&self, to: &str, node: &str, user: &str) {
        let xml = remote_disable_xml(&self.jid, to, node, user);
        self.send(parse_component_xml(&xml).unwrap()).await;
    }

    /// A XEP-0199 ping to `to`; returns its answer (result or error), panicking after `timeout`.
    /// `to` has read every stanza this app server sent before once the answer is back.
    pub async fn ping(&mut self, to: &str, timeout: Duration) -> Element {
        let id = format!("ping-{}", uuid::Uuid::new_v4());
        let xml = format!(
            "<iq type='get' from='{}' to='{to}' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>",
            self.jid
        );
        self.send(parse_component_xml(&xml).unwrap()).await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let el = tokio::time::timeout_at(deadline, self.others.recv())
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{}: no answer to the ping of {to}", self.jid));
            if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
                return el;
            }
        }
    }

    /// Disconnects (clean stream close).
    pub async fn close(self) {
        drop(self.cmd_tx);
        if let Ok(comp) = self.task.await {
            comp.close().await;
        }
    }
}

/// The remote-disable message of XEP-0357 §8.
pub fn remote_disable_xml(from: &str, to: &str, node: &str, user: &str) -> String {
    format!(
        "<message from='{from}' to='{to}'><pubsub xmlns='{NS_PUBSUB}' node='{node}'>\
         <affiliation jid='{user}' affiliation='none'/></pubsub></message>"
    )
}

async fn serve(
    mut comp: RawComponent,
    shared: Arc<Mutex<Shared>>,
    publishes: mpsc::UnboundedSender<Publish>,
    others: mpsc::UnboundedSender<Element>,
    mut cmds: mpsc::UnboundedReceiver<AppCmd>,
) -> RawComponent {
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(AppCmd::Send(el, done)) => {
                    comp.send(el).await;
                    let _ = done.send(());
                }
                None => return comp,
            },
            el = comp.recv() => {
                let Some(el) = el else { return comp };
                if el.name() != "iq" || !matches!(el.attr("type"), Some("get" | "set")) {
                    let _ = others.send(el);
                    continue;
                }
                let Some(mut publish) = parse_publish(&el, Answer::Silent) else {
                    comp.send(error_reply(&el, "cancel", "service-unavailable")).await;
                    continue;
                };
                let answer = {
                    let s = shared.lock().unwrap();
                    s.by_node.get(&publish.node).unwrap_or(&s.answer).clone()
                };
                publish.answered = answer.clone();
                match &answer {
                    Answer::Result => comp.send(result_reply(&el, &publish.node)).await,
                    Answer::Error { kind, condition } => {
                        comp.send(error_reply(&el, kind, condition)).await
                    }
                    Answer::Silent => {}
                }
                shared.lock().unwrap().publishes += 1;
                let _ = publishes.send(publish);
            }
        }
    }
}

/// A `<pubsub><publish node>` IQ set as a [`Publish`]; `None` for anything else.
pub fn parse_publish(iq: &Element, answered: Answer) -> Option<Publish> {
    if iq.attr("type") != Some("set") {
        return None;
    }
    let pubsub = iq.get_child("pubsub", NS_PUBSUB)?;
    let publish = pubsub.get_child("publish", NS_PUBSUB)?;
    let notification = publish
        .get_child("item", NS_PUBSUB)
        .and_then(|i| i.get_child("notification", NS_PUSH));
    let summary = notification
        .and_then(|n| n.get_child("x", "jabber:x:data"))
        .map(Form::from_x)
        .unwrap_or_default();
    let options = pubsub
        .get_child("publish-options", NS_PUBSUB)
        .and_then(|o| o.get_child("x", "jabber:x:data"))
        .map(Form::from_x);
    Some(Publish {
        iq: iq.clone(),
        from: iq.attr("from").unwrap_or_default().to_owned(),
        node: publish.attr("node").unwrap_or_default().to_owned(),
        summary,
        options,
        answered,
    })
}

fn reply_base(iq: &Element, kind: &str) -> minidom::element::ElementBuilder {
    let mut b = Element::builder("iq", NS_COMPONENT).attr(nc("type"), kind);
    for (ours, theirs) in [("id", "id"), ("from", "to"), ("to", "from")] {
        if let Some(v) = iq.attr(theirs) {
            b = b.attr(nc(ours), v);
        }
    }
    b
}

fn result_reply(iq: &Element, node: &str) -> Element {
    let item = Element::builder("item", NS_PUBSUB)
        .attr(nc("id"), format!("item-{}", uuid::Uuid::new_v4()))
        .build();
    let publish = Element::builder("publish", NS_PUBSUB)
        .attr(nc("node"), node)
        .append(item)
        .build();
    reply_base(iq, "result")
        .append(
            Element::builder("pubsub", NS_PUBSUB)
                .append(publish)
                .build(),
        )
        .build()
}

/// An IQ error answer `<error type=KIND><CONDITION xmlns=stanzas/></error>`.
pub fn error_reply(iq: &Element, kind: &str, condition: &str) -> Element {
    let error = Element::builder("error", NS_COMPONENT)
        .attr(nc("type"), kind)
        .append(Element::builder(condition, NS_STANZAS).build())
        .build();
    reply_base(iq, "error").append(error).build()
}
