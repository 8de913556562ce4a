//! Real c2s clients (plaintext TCP to a test Prosody) that behave like end-user clients.
//!
//! Why not `tokio_xmpp::Client`: the crate enables `xmpp-parsers/component` (herald is a component),
//! and Cargo features are unified, so in this build `xmpp_parsers::ns::DEFAULT_NS` is
//! `jabber:component:accept`. tokio-xmpp's c2s `Client` then serializes every stanza (even its
//! resource-binding `<iq/>`) as `<iq xmlns='jabber:component:accept'>` on a `jabber:client` stream,
//! which Prosody does not route, and it cannot parse the `jabber:client` stanzas it receives. It also
//! reconnects on its own after a TCP drop, which would defeat [`C2s::drop_tcp`].
//!
//! So this client uses tokio-xmpp's lower `xmlstream` layer with `minidom::Element` as the stanza
//! type (no namespace assumptions): stream header, SASL PLAIN (the test Prosody allows it without
//! TLS), resource binding, then a background task that owns the stream. Nothing is sent on login:
//! in particular **no initial presence** (neither does tokio-xmpp's `Client`: it sends nothing after
//! binding), so the user is "online" for Prosody's presence logic (and for mod_privilege) only after
//! [`C2s::send_presence`].
//!
//! The background task answers XEP-0199 pings (`<iq type='get'><ping xmlns='urn:xmpp:ping'/>`)
//! addressed to the client by itself unless [`C2s::set_auto_pong`]`(false)`, like a real client does;
//! every other stanza is queued for the `next_*` methods.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

pub const NS_CLIENT: &str = "jabber:client";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_PING: &str = "urn:xmpp:ping";
/// Login must finish within this.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`C2s::close`] waits for the server's `</stream:stream>`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Stream = XmlStream<BufStream<TcpStream>, Element>;

enum Cmd {
    Send(Element, oneshot::Sender<Result<(), String>>),
    Close(oneshot::Sender<()>),
    AutoPong(bool),
}

/// One logged-in c2s session (one resource).
pub struct C2s {
    jid: String,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    inbox: Inbox,
    /// Stanzas read by a `next_*` call that skipped them but may still be wanted by another one.
    /// A second handle on the socket (dup'ed fd), so that [`C2s::drop_tcp`] can cut it synchronously.
    tcp: std::net::TcpStream,
    task: JoinHandle<()>,
    ended: Arc<Mutex<Option<String>>>,
    next_id: u64,
}

impl std::fmt::Debug for C2s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2s").field("jid", &self.jid).finish()
    }
}

impl C2s {
    /// Connects to `addr` (`"127.0.0.1:PORT"`), authenticates `jid` (`user@domain/resource`; without a
    /// resource the server picks one) with SASL PLAIN and binds the resource. Sends no presence.
    /// Panics with the reason on failure.
    pub async fn login(addr: &str, jid: &str, password: &str) -> C2s {
        match C2s::try_login(addr, jid, password).await {
            Ok(c) => c,
            Err(e) => panic!("c2s login of {jid} at {addr} failed: {e}"),
        }
    }

    /// Like [`C2s::login`], returning the reason instead of panicking (e.g. `SASL failure:
    /// not-authorized` for a wrong password).
    pub async fn try_login(addr: &str, jid: &str, password: &str) -> Result<C2s, String> {
        match tokio::time::timeout(LOGIN_TIMEOUT, login_inner(addr, jid, password)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no login within {LOGIN_TIMEOUT:?}")),
        }
    }

    /// The bound full JID (`user@domain/resource`).
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The bare JID (`user@domain`).
    pub fn bare_jid(&self) -> &str {
        self.jid.split('/').next().unwrap_or(&self.jid)
    }

    /// Sends any stanza; build it in the `jabber:client` namespace ([`NS_CLIENT`]). Panics if the
    /// stream is gone.
    pub async fn send(&mut self, stanza: Element) {
        if let Err(e) = self.try_send(stanza).await {
            panic!("{}: send failed: {e}", self.jid);
        }
    }

    /// Sends any stanza, returning an error if the stream is gone.
    pub async fn try_send(&mut self, stanza: Element) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.cmd_tx
            .send(Cmd::Send(stanza, tx))
            .map_err(|_| self.ended_reason())?;
        rx.await.map_err(|_| self.ended_reason())?
    }

    /// Sends a stanza given as XML text; `xmlns='jabber:client'` is added to the root if it has none.
    pub async fn send_xml(&mut self, xml: &str) {
        let el = parse_client_xml(xml).unwrap_or_else(|e| panic!("bad XML {xml:?}: {e}"));
        self.send(el).await;
    }

    /// Broadcast (available) presence with optional `<show/>`, `<status/>` and `<priority/>`.
    pub async fn send_presence(&mut self, show: Option<&str>, status: Option<&str>, priority: i8) {
        let id = self.make_id("pres");
        let mut b = Element::builder("presence", NS_CLIENT).attr(nc("id"), id);
        if let Some(show) = show {
            b = b.append(Element::builder("show", NS_CLIENT).append(show).build());
        }
        if let Some(status) = status {
            b = b.append(Element::builder("status", NS_CLIENT).append(status).build());
        }
        b = b.append(
            Element::builder("priority", NS_CLIENT)
                .append(priority.to_string())
                .build(),
        );
        self.send(b.build()).await;
    }

    /// Broadcast `<presence type='unavailable'/>` (the stream stays open).
    pub async fn send_unavailable(&mut self) {
        let id = self.make_id("pres");
        let el = Element::builder("presence", NS_CLIENT)
            .attr(nc("id"), id)
            .attr(nc("type"), "unavailable")
            .build();
        self.send(el).await;
    }

    /// `<message type='chat' to=TO><body>BODY</body></message>`.
    pub async fn send_chat(&mut self, to: &str, body: &str) {
        let id = self.make_id("msg");
        let el = Element::builder("message", NS_CLIENT)
            .attr(nc("id"), id)
            .attr(nc("type"), "chat")
            .attr(nc("to"), to)
            .append(Element::builder("body", NS_CLIENT).append(body).build())
            .build();
        self.send(el).await;
    }

    /// Whether the client answers XEP-0199 pings by itself (default true). Turn it off to play a
    /// client that is connected but does not respond.
    pub fn set_auto_pong(&mut self, on: bool) {
        let _ = self.cmd_tx.send(Cmd::AutoPong(on));
    }

    /// The next stanza of any kind, or `None` on timeout or when the stream has ended.
    pub async fn next_stanza(&mut self, timeout: Duration) -> Option<Element> {
        self.inbox.next_within(timeout).await
    }

    /// The next stanza for which `pred` holds; stanzas that do not match are kept for later calls.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        self.inbox.next_matching(timeout, pred).await
    }

    /// The next `<message/>` with a child `name` in namespace `ns` (e.g. `("flux:xmpp", "event")`,
    /// `("jabber:client", "body")`); other stanzas are kept for later calls.
    pub async fn next_message_with(
        &mut self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Option<Element> {
        self.next_matching(timeout, |el| {
            el.name() == "message" && el.get_child(name, ns).is_some()
        })
        .await
    }

    /// The next `<presence/>` whose `from` is `from` (a full JID, or a bare JID matching any of its
    /// resources); other stanzas are kept for later calls.
    pub async fn next_presence_from(&mut self, from: &str, timeout: Duration) -> Option<Element> {
        let from = from.to_owned();
        self.next_matching(timeout, move |el| {
            el.name() == "presence"
                && el.attr("from").is_some_and(|f| {
                    f == from || (!from.contains('/') && f.split('/').next() == Some(&from))
                })
        })
        .await
    }

    /// Everything received so far and not consumed yet, without waiting.
    pub fn drain(&mut self) -> Vec<Element> {
        self.inbox.drain()
    }

    /// Drops the received, not yet consumed stanzas for which `pred` holds (e.g. a room's stale
    /// presences before joining it again); returns how many.
    pub fn discard(&mut self, pred: impl Fn(&Element) -> bool) -> usize {
        self.inbox.discard(pred)
    }

    /// Whether the stream is still up (false after the server closed it or the connection broke).
    pub fn is_connected(&self) -> bool {
        self.ended.lock().unwrap().is_none() && !self.task.is_finished()
    }

    /// Ends the stream cleanly: `</stream:stream>`, then waits (up to 5 s) for the server's. No
    /// unavailable presence is sent first (Prosody then makes one up for the session itself).
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd_tx.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT + Duration::from_secs(1), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }

    /// Cuts the TCP connection at once (`shutdown(2)` of the socket, so the server sees a FIN with no
    /// `</stream:stream>` and no unavailable presence), like a client that crashes or is killed.
    /// Done synchronously: the server may already be reading EOF when this returns.
    pub fn drop_tcp(self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
        // Dropping the command channel ends the task without writing anything more.
        drop(self.cmd_tx);
    }

    fn make_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn ended_reason(&self) -> String {
        self.ended
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "stream task ended".into())
    }
}

async fn login_inner(addr: &str, jid: &str, password: &str) -> Result<C2s, String> {
    let (local, rest) = jid
        .split_once('@')
        .ok_or_else(|| format!("JID {jid:?} has no user part"))?;
    let (domain, resource) = match rest.split_once('/') {
        Some((d, r)) => (d.to_owned(), Some(r.to_owned())),
        None => (rest.to_owned(), None),
    };

    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).ok();
    let std_tcp = tcp.into_std().map_err(|e| e.to_string())?;
    let dup = std_tcp.try_clone().map_err(|e| e.to_string())?;
    let tcp = TcpStream::from_std(std_tcp).map_err(|e| e.to_string())?;

    // Long timeouts: a test client must never give up on its own (soft timeouts are ignored below).
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(3600),
    };
    let header = || StreamHeader {
        from: None,
        to: Some(Cow::Owned(domain.clone())),
        id: None,
    };
    let pending = initiate_stream(BufStream::new(tcp), NS_CLIENT, header(), timeouts)
        .await
        .map_err(|e| format!("stream header: {e}"))?;
    let (features, mut stream) = pending
        .recv_features::<Element>()
        .await
        .map_err(|e| format!("stream features: {e}"))?;
    if !features.sasl_mechanisms.contains("PLAIN") {
        return Err(format!(
            "server offers no SASL PLAIN (offers {:?}); the test config needs \
             allow_unencrypted_plain_auth = true",
            features.sasl_mechanisms
        ));
    }

    // SASL PLAIN: base64("\0user\0password").
    let mut raw = vec![0u8];
    raw.extend_from_slice(local.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    let auth = Element::builder("auth", NS_SASL)
        .attr(nc("mechanism"), "PLAIN")
        .append(base64(&raw))
        .build();
    stream
        .send(&auth)
        .await
        .map_err(|e| format!("send auth: {e}"))?;
    loop {
        let el = read_one(&mut stream).await?;
        match el.name() {
            "success" => break,
            "failure" => {
                let cond = el
                    .children()
                    .map(|c| c.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                return Err(format!("SASL failure: {cond}"));
            }
            _ => {}
        }
    }

    let pending = stream
        .initiate_reset()
        .send_header(header())
        .await
        .map_err(|e| format!("stream restart: {e}"))?;
    let (_features, mut stream) = pending
        .recv_features::<Element>()
        .await
        .map_err(|e| format!("stream features after auth: {e}"))?;

    let mut bind = Element::builder("bind", NS_BIND);
    if let Some(res) = &resource {
        bind = bind.append(
            Element::builder("resource", NS_BIND)
                .append(res.as_str())
                .build(),
        );
    }
    let iq = Element::builder("iq", NS_CLIENT)
        .attr(nc("type"), "set")
        .attr(nc("id"), "bind-1")
        .append(bind.build())
        .build();
    stream
        .send(&iq)
        .await
        .map_err(|e| format!("send bind: {e}"))?;
    let bound = loop {
        let el = read_one(&mut stream).await?;
        if el.name() == "iq" && el.attr("id") == Some("bind-1") {
            if el.attr("type") != Some("result") {
                return Err(format!("resource binding failed: {}", to_xml(&el)));
            }
            let jid = el
                .get_child("bind", NS_BIND)
                .and_then(|b| b.get_child("jid", NS_BIND))
                .map(|j| j.text())
                .ok_or_else(|| format!("bind result without <jid/>: {}", to_xml(&el)))?;
            break jid;
        }
    };

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let ended = Arc::new(Mutex::new(None));
    let task = tokio::spawn(run(stream, cmd_rx, in_tx, ended.clone()));
    Ok(C2s {
        jid: bound,
        cmd_tx,
        inbox: Inbox::new(in_rx),
        tcp: dup,
        task,
        ended,
        next_id: 0,
    })
}

/// Reads the next element during login.
async fn read_one(stream: &mut Stream) -> Result<Element, String> {
    loop {
        match stream.next().await {
            Some(Ok(el)) => {
                if el.name() == "error" && el.ns() == "http://etherx.jabber.org/streams" {
                    return Err(format!("stream error: {}", to_xml(&el)));
                }
                return Ok(el);
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection closed by the server".into()),
        }
    }
}

/// The task that owns the stream after login.
async fn run(
    mut stream: Stream,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    in_tx: mpsc::UnboundedSender<Element>,
    ended: Arc<Mutex<Option<String>>>,
) {
    let mut auto_pong = true;
    let reason = loop {
        tokio::select! {
            cmd = cmd_rx.recv() => match cmd {
                // The C2s was dropped (or drop_tcp): just drop the socket, write nothing.
                None => break "client dropped".to_owned(),
                Some(Cmd::Send(el, ack)) => {
                    let r = stream.send(&el).await.map_err(|e| format!("write: {e}"));
                    let failed = r.is_err();
                    let _ = ack.send(r);
                    if failed {
                        break "write failed".to_owned();
                    }
                }
                Some(Cmd::AutoPong(on)) => auto_pong = on,
                Some(Cmd::Close(done)) => {
                    let _ = stream.shutdown().await;
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                        loop {
                            match stream.next().await {
                                Some(Ok(el)) => { let _ = in_tx.send(el); }
                                Some(Err(ReadError::SoftTimeout)) | Some(Err(ReadError::ParseError(_))) => {}
                                Some(Err(_)) | None => break,
                            }
                        }
                    })
                    .await;
                    let _ = done.send(());
                    break "closed by client".to_owned();
                }
            },
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if auto_pong && is_ping(&el) {
                        let pong = pong_for(&el);
                        if stream.send(&pong).await.is_err() {
                            break "write failed".to_owned();
                        }
                    } else if el.name() == "error" && el.ns() == "http://etherx.jabber.org/streams" {
                        break format!("stream error from server: {}", to_xml(&el));
                    } else {
                        let _ = in_tx.send(el);
                    }
                }
                Some(Err(ReadError::SoftTimeout)) => {}
                Some(Err(ReadError::ParseError(e))) => {
                    eprintln!("c2s client: unparsable element skipped: {e}");
                }
                Some(Err(ReadError::StreamFooterReceived)) => break "stream closed by server".to_owned(),
                Some(Err(ReadError::HardError(e))) => break format!("connection error: {e}"),
                None => break "connection closed".to_owned(),
            },
        }
    };
    *ended.lock().unwrap() = Some(reason);
}

fn is_ping(el: &Element) -> bool {
    el.name() == "iq" && el.attr("type") == Some("get") && el.has_child("ping", NS_PING)
}

fn pong_for(ping: &Element) -> Element {
    let mut b = Element::builder("iq", NS_CLIENT).attr(nc("type"), "result");
    if let Some(id) = ping.attr("id") {
        b = b.attr(nc("id"), id);
    }
    if let Some(from) = ping.attr("from") {
        b = b.attr(nc("to"), from);
    }
    b.build()
}

/// An attribute name.
pub fn nc(name: &str) -> minidom::rxml::NcName {
    minidom::rxml::NcName::try_from(name).expect("valid attribute name")
}

/// Serializes an element (for messages and assertions).
pub fn to_xml(el: &Element) -> String {
    String::from(el)
}

/// Parses a stanza; its root gets `xmlns='jabber:client'` when it has none.
pub fn parse_client_xml(xml: &str) -> Result<Element, String> {
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
            "{} xmlns='{NS_CLIENT}'{}",
            &xml[..name_end],
            &xml[name_end..]
        )
    };
    xml.parse::<Element>().map_err(|e| e.to_string())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The stanzas a test connection has read, in order, with those a caller skipped kept for later
/// calls (shared by [`C2s`] and the raw component connection).
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Element>,
    pending: VecDeque<Element>,
}

impl Inbox {
    pub fn new(rx: mpsc::UnboundedReceiver<Element>) -> Inbox {
        Inbox {
            rx,
            pending: VecDeque::new(),
        }
    }

    /// The next stanza, waiting as long as it takes; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Element> {
        match self.pending.pop_front() {
            Some(el) => Some(el),
            None => self.rx.recv().await,
        }
    }

    /// The next stanza, or `None` on timeout or when the stream has ended.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Element> {
        tokio::time::timeout(timeout, self.next())
            .await
            .ok()
            .flatten()
    }

    /// The next stanza for which `pred` holds; the others are kept for later calls.
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
            let el = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten()?;
            if pred(&el) {
                return Some(el);
            }
            self.pending.push_back(el);
        }
    }

    /// Everything received and not consumed yet, without waiting.
    pub fn drain(&mut self) -> Vec<Element> {
        let mut out: Vec<Element> = self.pending.drain(..).collect();
        while let Ok(el) = self.rx.try_recv() {
            out.push(el);
        }
        out
    }

    /// Drops the received, not yet consumed stanzas for which `pred` holds; returns how many.
    pub fn discard(&mut self, pred: impl Fn(&Element) -> bool) -> usize {
        while let Ok(el) = self.rx.try_recv() {
            self.pending.push_back(el);
        }
        let before = self.pending.len();
        self.pending.retain(|el| !pred(el));
        before - self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"\0alice\0pw"), "AGFsaWNlAHB3");
    }

    #[test]
    fn parse_client_xml_adds_namespace() {
        let el = parse_client_xml("<message to='a@b'><body>x</body></message>").unwrap();
        assert_eq!(el.ns(), NS_CLIENT);
        assert_eq!(el.get_child("body", NS_CLIENT).unwrap().text(), "x");
        let el = parse_client_xml("<presence/>").unwrap();
        assert_eq!(el.ns(), NS_CLIENT);
    }
}
