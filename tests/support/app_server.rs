//! XEP-0114 components of the test's own on a real Prosody: a raw component connection
//! ([`RawComponent`]: handshake, send, wait for stanzas, IQ requests) and, on top of it, a push app
//! server ([`AppServer`]) that answers every pubsub publish with what the test configured (a result,
//! a given error, or nothing at all; per node if wanted), records each publish it got, and can send XEP-0357's
//! remote-disable message.
//!
//! The connection reads plain `minidom` elements (no stanza parsing), so nothing it receives can end
//! the stream. Stanzas it builds use the `jabber:component:accept` namespace ([`NS_COMPONENT`]).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use sha1::{Digest, Sha1};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

use super::client::{nc, to_xml};
use super::pubsub::{Form, NS_PUBSUB, NS_PUSH};

pub const NS_COMPONENT: &str = "jabber:component:accept";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = XmlStream<BufStream<TcpStream>, Element>;

enum Cmd {
    Send(Element, oneshot::Sender<Result<(), String>>),
    Close(oneshot::Sender<()>),
}

/// One XEP-0114 component connection (`jabber:component:accept`, SHA-1 handshake).
pub struct RawComponent {
    jid: String,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    in_rx: mpsc::UnboundedReceiver<Element>,
    pending: VecDeque<Element>,
    task: JoinHandle<()>,
    next_id: u64,
}

impl RawComponent {
    /// Connects to the component listener `addr` as `jid` and completes the handshake; panics with
    /// the reason (e.g. a `<conflict/>` stream error while another connection holds `jid`).
    pub async fn connect(addr: &str, jid: &str, secret: &str) -> RawComponent {
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(addr, jid, secret)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("component {jid} at {addr}: {e}"),
            Err(_) => panic!("component {jid} at {addr}: no handshake within {CONNECT_TIMEOUT:?}"),
        }
    }

    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Sends a stanza (build it in [`NS_COMPONENT`]); panics if the stream is gone.
    pub async fn send(&mut self, stanza: Element) {
        let (tx, rx) = oneshot::channel();
        let sent = self.cmd_tx.send(Cmd::Send(stanza, tx)).is_ok();
        let result = if sent {
            rx.await.unwrap_or_else(|_| Err("stream task ended".into()))
        } else {
            Err("stream task ended".into())
        };
        if let Err(e) = result {
            panic!("component {}: send failed: {e}", self.jid);
        }
    }

    /// Sends a stanza given as XML text; the root gets `xmlns='jabber:component:accept'`.
    pub async fn send_xml(&mut self, xml: &str) {
        let el = parse_component_xml(xml).unwrap_or_else(|e| panic!("bad XML {xml:?}: {e}"));
        self.send(el).await;
    }

    /// The next stanza, waiting as long as it takes; `None` once the stream has ended. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Element> {
        if let Some(el) = self.pending.pop_front() {
            return Some(el);
        }
        self.in_rx.recv().await
    }

    /// The next stanza for which `pred` holds; others are kept for later calls.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return self.pending.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let el = tokio::time::timeout_at(deadline, self.in_rx.recv())
                .await
                .ok()
                .flatten()?;
            if pred(&el) {
                return Some(el);
            }
            self.pending.push_back(el);
        }
    }

    /// Sends `<iq type=KIND to=TO>PAYLOAD</iq>` with a fresh id and returns the answer; panics after
    /// `timeout`.
    pub async fn request(
        &mut self,
        kind: &str,
        to: &str,
        payload: &str,
        timeout: Duration,
    ) -> Element {
        self.next_id += 1;
        let id = format!("rc{}", self.next_id);
        let xml = format!(
            "<iq type='{kind}' from='{}' to='{to}' id='{id}'>{payload}</iq>",
            self.jid
        );
        self.send_xml(&xml).await;
        let want = id.clone();
        self.next_matching(timeout, move |el| {
            el.name() == "iq"
                && el.attr("id") == Some(want.as_str())
                && matches!(el.attr("type"), Some("result" | "error"))
        })
        .await
        .unwrap_or_else(|| panic!("{}: no answer to {xml} within {timeout:?}", self.jid))
    }

    /// Everything received and not consumed yet, without waiting.
    pub fn drain(&mut self) -> Vec<Element> {
        let mut out: Vec<Element> = self.pending.drain(..).collect();
        while let Ok(el) = self.in_rx.try_recv() {
            out.push(el);
        }
        out
    }

    /// Ends the stream (`</stream:stream>`) and waits briefly for the server's.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd_tx.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

async fn connect_inner(addr: &str, jid: &str, secret: &str) -> Result<RawComponent, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(3600),
    };
    let header = StreamHeader {
        from: None,
        to: Some(std::borrow::Cow::Owned(jid.to_owned())),
        id: None,
    };
    let mut pending = initiate_stream(BufStream::new(tcp), NS_COMPONENT, header, timeouts)
        .await
        .map_err(|e| format!("stream header: {e}"))?;
    let stream_id = pending
        .take_header()
        .id
        .map(|id| id.into_owned())
        .ok_or("the server's stream header has no id")?;
    let mut stream: Stream = pending.skip_features();
    let digest = hex::encode(Sha1::digest(format!("{stream_id}{secret}").as_bytes()));
    let handshake = Element::builder("handshake", NS_COMPONENT)
        .append(digest)
        .build();
    stream
        .send(&handshake)
        .await
        .map_err(|e| format!("send handshake: {e}"))?;
    loop {
        match stream.next().await {
            Some(Ok(el)) if el.name() == "handshake" => break,
            Some(Ok(el)) => return Err(format!("handshake refused: {}", to_xml(&el))),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(format!("handshake: {e}")),
            None => return Err("connection closed during the handshake".into()),
        }
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(stream, cmd_rx, in_tx));
    Ok(RawComponent {
        jid: jid.to_owned(),
        cmd_tx,
        in_rx,
        pending: VecDeque::new(),
        task,
        next_id: 0,
    })
}

async fn run(
    mut stream: Stream,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    in_tx: mpsc::UnboundedSender<Element>,
) {
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => match cmd {
                None => break,
                Some(Cmd::Send(el, ack)) => {
                    let r = stream.send(&el).await.map_err(|e| format!("write: {e}"));
                    let failed = r.is_err();
                    let _ = ack.send(r);
                    if failed {
                        break;
                    }
                }
                Some(Cmd::Close(done)) => {
                    let _ = stream.shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(3), async {
                        while let Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) = stream.next().await {}
                    })
                    .await;
                    let _ = done.send(());
                    break;
                }
            },
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if el.name() == "error" && el.ns() == "http://etherx.jabber.org/streams" {
                        eprintln!("component: stream error from server: {}", to_xml(&el));
                        break;
                    }
                    let _ = in_tx.send(el);
                }
                Some(Err(ReadError::SoftTimeout)) => {}
                Some(Err(ReadError::ParseError(e))) => eprintln!("component: unparsable element: {e}"),
                Some(Err(_)) | None => break,
            },
        }
    }
}

/// Parses a stanza; its root gets `xmlns='jabber:component:accept'` when it has none.
pub fn parse_component_xml(xml: &str) -> Result<Element, String> {
    let xml = xml.trim();
    let head_end = xml.find('>').unwrap_or(xml.len());
    let xml = if xml[..head_end].contains("xmlns=") {
        xml.to_owned()
    } else {
        let name_end = xml[1..]
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .map(|i| i + 1)
            .unwrap_or(xml.len());
        format!(
            "{} xmlns='{NS_COMPONENT}'{}",
            &xml[..name_end],
            &xml[name_end..]
        )
    };
    xml.parse::<Element>().map_err(|e| e.to_string())
}

// ------------------------------------------------------------------------------------------------
// The push app server
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
