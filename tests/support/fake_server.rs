//! An in-process fake XEP-0114 server, for fault injection.
//!
//! It listens on `127.0.0.1:0` and speaks the accept side of `jabber:component:accept` the way
//! Prosody 0.12 does (`../shared/reference/servers.md` §1, §2, §4, §5): it reads the component's
//! stream header, answers with its own header and a fresh stream id, and checks
//! `<handshake>` = hex(sha1(stream id + secret)). What happens next is scripted per connection
//! ([`Script`]): accept, refuse the secret, or refuse with `<conflict/>`; after an accept,
//! optionally Prosody's privilege advertisement and raw stanzas (a snapshot), written in the same
//! write as `<handshake/>` so that nothing herald sends can overtake them.
//!
//! An accepted connection is handed to the test as a [`Conn`]: it records every top-level element
//! herald sends (parsed as minidom [`Element`]s in the `jabber:component:accept` namespace),
//! answers XEP-0199 pings unless told to be silent, writes raw XML on demand, and drops the socket
//! on command. Reading is done with rxml + minidom's `TreeBuilder`, not with tokio-xmpp, so the
//! server is an independent implementation of the wire format herald's side must get right.
//!
//! A connection scripted with [`Script::fast`] is served for throughput instead (the benchmarks
//! in `examples/` use it): after the same login it is handed over as a [`FastConn`], which writes
//! pre-rendered loads (chunks cut at stanza boundaries, ping answers slipped in between chunks as
//! a real server interleaves them) and reads herald's output at text level, without building any
//! element: it counts `<message>`s, keeps a sample of them, answers pings (and optionally
//! disco#info) and notes the answers to its own pings ([`FastConn::fence`]).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use minidom::tree_builder::TreeBuilder;
use minidom::Element;
use rxml::{AsyncRawReader, RawEvent};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub const NS_COMPONENT: &str = "jabber:component:accept";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The domain the fake server plays: the `from` of its advertisement, pings and answers.
pub const SERVER_DOMAIN: &str = "localhost";

/// Prosody 0.12's advertisement (servers.md §2), addressed to `component`.
pub fn prosody_advertisement(component: &str) -> String {
    format!(
        "<message from='{SERVER_DOMAIN}' to='{component}'><privilege xmlns='urn:xmpp:privilege:2'>\
         <perm access='roster' type='both'/><perm access='message' type='outgoing'/>\
         <perm access='presence' type='managed_entity'/></privilege></message>"
    )
}

/// A forwarded presence as Prosody sends it in its snapshot after a (re)connect (servers.md §4).
pub fn snapshot_presence(from: &str, to: &str) -> String {
    format!(
        "<presence xml:lang='en' to='{to}' from='{from}'><show>dnd</show><status>online first</status>\
         <delay from='{SERVER_DOMAIN}' xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>"
    )
}

/// How the server answers a handshake. A handshake whose digest does not match the secret is
/// always refused with `<not-authorized/>`, whatever the script says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Login {
    /// `<handshake/>`.
    #[default]
    Accept,
    /// `<not-authorized/>` stream error even for a correct digest.
    RejectSecret,
    /// Prosody's answer to a second connection under the same name (servers.md §5).
    Conflict,
}

/// What the server does with one connection.
#[derive(Debug, Clone)]
pub struct Script {
    login: Login,
    advertise: bool,
    stanzas: Vec<String>,
    answer_pings: bool,
    fast: Option<Fast>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            login: Login::Accept,
            advertise: false,
            stanzas: Vec::new(),
            answer_pings: true,
            fast: None,
        }
    }
}

impl Script {
    /// Accepts the handshake, sends nothing more, answers pings.
    pub fn accept() -> Self {
        Self::default()
    }

    pub fn reject_secret() -> Self {
        Script {
            login: Login::RejectSecret,
            ..Self::default()
        }
    }

    pub fn conflict() -> Self {
        Script {
            login: Login::Conflict,
            ..Self::default()
        }
    }

    /// Sends Prosody's privilege advertisement right after `<handshake/>`.
    pub fn advertise(mut self) -> Self {
        self.advertise = true;
        self
    }

    /// Sends `xml` after `<handshake/>` (and the advertisement), in order.
    pub fn then_send(mut self, xml: impl Into<String>) -> Self {
        self.stanzas.push(xml.into());
        self
    }

    /// Answers no ping: the server reads but never writes on its own.
    pub fn silent(mut self) -> Self {
        self.answer_pings = false;
        self
    }

    /// Serves the logged-in connection as a [`FastConn`] (from
    /// [`FakeServer::next_fast_connection`]) instead of a [`Conn`]. It always answers pings.
    pub fn fast(mut self, fast: Fast) -> Self {
        self.fast = Some(fast);
        self
    }
}

/// One login attempt, whatever its outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The `to` of the component's stream header.
    pub to: Option<String>,
    /// The handshake digest matched the server's secret.
    pub digest_ok: bool,
    /// What the server answered.
    pub answer: Login,
}

struct Shared {
    secret: String,
    scripts: Mutex<VecDeque<Script>>,
    fallback: Mutex<Script>,
    attempts: AtomicUsize,
}

impl Shared {
    fn next_script(&self) -> Script {
        let queued = lock(&self.scripts).pop_front();
        queued.unwrap_or_else(|| lock(&self.fallback).clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accepted: mpsc::UnboundedReceiver<Conn>,
    fast_accepted: mpsc::UnboundedReceiver<FastConn>,
    attempts: mpsc::UnboundedReceiver<Attempt>,
    acceptor: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl FakeServer {
    /// Starts listening; connections are served with `secret` and, unless scripted otherwise,
    /// [`Script::accept`].
    pub async fn start(secret: &str) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            secret: secret.to_owned(),
            scripts: Mutex::new(VecDeque::new()),
            fallback: Mutex::new(Script::default()),
            attempts: AtomicUsize::new(0),
        });
        let (conn_tx, accepted) = mpsc::unbounded_channel();
        let (fast_tx, fast_accepted) = mpsc::unbounded_channel();
        let (attempt_tx, attempts) = mpsc::unbounded_channel();
        let acceptor = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let accepted = Accepted {
                        conns: conn_tx.clone(),
                        fast: fast_tx.clone(),
                        attempts: attempt_tx.clone(),
                    };
                    tokio::spawn(serve(shared.clone(), socket, accepted));
                }
            }
        });
        FakeServer {
            addr,
            shared,
            accepted,
            fast_accepted,
            attempts,
            acceptor,
        }
    }

    /// The script of the next connection that has not been scripted yet (a queue).
    pub fn script_next(&self, script: Script) {
        lock(&self.shared.scripts).push_back(script);
    }

    /// The script of every connection beyond the queued ones (default: [`Script::accept`]).
    pub fn script_default(&self, script: Script) {
        *lock(&self.shared.fallback) = script;
    }

    /// Login attempts (handshakes received) so far.
    pub fn connections(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// The next login attempt, accepted or not.
    pub async fn next_attempt(&mut self, timeout: Duration) -> Option<Attempt> {
        tokio::time::timeout(timeout, self.attempts.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next accepted (logged-in) connection.
    pub async fn next_connection(&mut self, timeout: Duration) -> Option<Conn> {
        tokio::time::timeout(timeout, self.accepted.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next accepted connection scripted with [`Script::fast`].
    pub async fn next_fast_connection(&mut self, timeout: Duration) -> Option<FastConn> {
        tokio::time::timeout(timeout, self.fast_accepted.recv())
            .await
            .ok()
            .flatten()
    }
}

/// Where [`serve`] hands what it accepted.
struct Accepted {
    conns: mpsc::UnboundedSender<Conn>,
    fast: mpsc::UnboundedSender<FastConn>,
    attempts: mpsc::UnboundedSender<Attempt>,
}

/// What a connection saw from herald, in order.
#[derive(Debug)]
enum Seen {
    Stanza(Element),
    /// `</stream:stream>`.
    Footer,
    /// The socket was closed or broke (without a footer first, or after it).
    Eof(Option<String>),
}

enum Command {
    Send(String, oneshot::Sender<()>),
    Drop,
}

/// The test's handle on one logged-in connection.
pub struct Conn {
    /// The stream id the server gave this connection.
    pub stream_id: String,
    commands: mpsc::UnboundedSender<Command>,
    seen: mpsc::UnboundedReceiver<Seen>,
    answer_pings: Arc<AtomicBool>,
    history: Vec<Element>,
    footer: bool,
    eof: bool,
    read_error: Option<String>,
}

impl Conn {
    /// Writes `xml` to herald; returns once it has been written.
    pub async fn send_raw(&self, xml: &str) {
        let (done, written) = oneshot::channel();
        if self
            .commands
            .send(Command::Send(xml.to_owned(), done))
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// The next stanza herald sent, or `None` on timeout or once the stream has ended.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Element> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.recv_until(deadline).await
    }

    async fn recv_until(&mut self, deadline: tokio::time::Instant) -> Option<Element> {
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Stanza(el))) => {
                    self.history.push(el.clone());
                    return Some(el);
                }
                Ok(Some(Seen::Footer)) => self.footer = true,
                Ok(Some(Seen::Eof(error))) => {
                    self.eof = true;
                    self.read_error = self.read_error.take().or(error);
                    return None;
                }
                Ok(None) => {
                    self.eof = true;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// The next stanza herald sent that satisfies `pred`; the others are skipped (they stay in
    /// [`Conn::history`]).
    pub async fn recv_matching(
        &mut self,
        pred: impl Fn(&Element) -> bool,
        timeout: Duration,
    ) -> Option<Element> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let el = self.recv_until(deadline).await?;
            if pred(&el) {
                return Some(el);
            }
        }
    }

    /// Everything herald sent on this connection, up to now.
    pub async fn drain(&mut self, quiet: Duration) -> &[Element] {
        while self.recv(quiet).await.is_some() {}
        &self.history
    }

    /// Every stanza received so far (by `recv`, `recv_matching`, `drain`, `closed`).
    pub fn history(&self) -> &[Element] {
        &self.history
    }

    /// Closes the socket at once, as a crashed or restarted server would.
    pub fn drop_socket(self) {
        let _ = self.commands.send(Command::Drop);
    }

    /// Whether the server answers herald's XEP-0199 pings from now on.
    pub fn answer_pings(&self, answer: bool) {
        self.answer_pings.store(answer, Ordering::SeqCst);
    }

    /// Waits until herald has closed its stream with `</stream:stream>` (stanzas received in the
    /// meantime go to the history). False on timeout, or when the socket ended without a footer.
    pub async fn closed(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.footer && !self.eof {
            if self.recv_until(deadline).await.is_none() && !self.footer && !self.eof {
                return false;
            }
        }
        self.footer
    }

    /// Herald sent `</stream:stream>` (as far as received so far).
    pub fn footer_seen(&self) -> bool {
        self.footer
    }

    /// The socket has ended (as far as received so far).
    pub fn ended(&self) -> bool {
        self.eof
    }

    /// Why reading herald's stream failed, if it did: malformed XML, data after the footer, or a
    /// socket that ended in the middle of the stream (no footer).
    pub fn read_error(&self) -> Option<&str> {
        self.read_error.as_deref()
    }
}

/// Serves one TCP connection: header, handshake, then the scripted session.
async fn serve(shared: Arc<Shared>, socket: TcpStream, accepted: Accepted) {
    let _ = socket.set_nodelay(true);
    let (rd, mut wr) = socket.into_split();
    let mut reader = ElementReader::new(rd);
    let to = match reader.header().await {
        Ok(to) => to,
        Err(e) => return eprintln!("fake server: bad stream header: {e}"),
    };
    let stream_id = uuid::Uuid::new_v4().to_string();
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns:stream='{NS_STREAMS}' xml:lang='en' from='{}' id='{stream_id}' xmlns='{NS_COMPONENT}'>",
        to.as_deref().unwrap_or("")
    );
    if wr.write_all(header.as_bytes()).await.is_err() {
        return;
    }
    let handshake = match reader.next().await {
        Ok(Some(el)) if el.is("handshake", NS_COMPONENT) => el,
        other => {
            return eprintln!("fake server: expected <handshake/> in {NS_COMPONENT}, got {other:?}")
        }
    };
    let expected = hex::encode(Sha1::digest(format!("{stream_id}{}", shared.secret)));
    let digest_ok = handshake.text().trim().eq_ignore_ascii_case(&expected);
    let script = shared.next_script();
    let answer = if digest_ok {
        script.login
    } else {
        Login::RejectSecret
    };
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let _ = accepted.attempts.send(Attempt {
        to: to.clone(),
        digest_ok,
        answer,
    });
    let refusal = match answer {
        Login::Accept => None,
        Login::RejectSecret => Some(
            "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error></stream:stream>"
                .to_owned(),
        ),
        Login::Conflict => Some(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected</text>\
             </stream:error></stream:stream>"
                .to_owned(),
        ),
    };
    if let Some(refusal) = refusal {
        let _ = wr.write_all(refusal.as_bytes()).await;
        let _ = wr.shutdown().await;
        return;
    }
    let mut welcome = String::from("<handshake/>");
    if script.advertise {
        welcome.push_str(&prosody_advertisement(to.as_deref().unwrap_or("")));
    }
    for s in &script.stanzas {
        welcome.push_str(s);
    }
    if wr.write_all(welcome.as_bytes()).await.is_err() {
        return;
    }
    if let Some(fast) = script.fast {
        let component = to.unwrap_or_default();
        return start_fast_session(reader, wr, stream_id, component, fast, &accepted.fast);
    }

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let answer_pings = Arc::new(AtomicBool::new(script.answer_pings));
    let conn = Conn {
        stream_id,
        commands: cmd_tx,
        seen: seen_rx,
        answer_pings: answer_pings.clone(),
        history: Vec::new(),
        footer: false,
        eof: false,
        read_error: None,
    };
    if accepted.conns.send(conn).is_err() {
        return;
    }
    session(reader, wr, cmd_rx, seen_tx, answer_pings).await;
}

/// The logged-in part: forwards what herald sends to the test, answers pings, obeys commands.
async fn session(
    mut reader: ElementReader,
    mut wr: OwnedWriteHalf,
    mut commands: mpsc::UnboundedReceiver<Command>,
    seen: mpsc::UnboundedSender<Seen>,
    answer_pings: Arc<AtomicBool>,
) {
    // The reader runs in its own task so that no read is ever cancelled half-way.
    let (read_tx, mut read_rx) = mpsc::unbounded_channel();
    let read_task = tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Some(el)) => Seen::Stanza(el),
                Ok(None) if reader.footer => {
                    let _ = read_tx.send(Seen::Footer);
                    // Keep reading: the socket's end is reported separately.
                    match reader.next().await {
                        Ok(_) => Seen::Eof(None),
                        Err(e) => Seen::Eof(Some(e.to_string())),
                    }
                }
                Ok(None) => Seen::Eof(None),
                Err(e) => Seen::Eof(Some(e.to_string())),
            };
            let end = matches!(item, Seen::Eof(_));
            if read_tx.send(item).is_err() || end {
                return;
            }
        }
    });
    let mut commands_open = true;
    loop {
        tokio::select! {
            cmd = commands.recv(), if commands_open => match cmd {
                Some(Command::Send(xml, done)) => {
                    let _ = wr.write_all(xml.as_bytes()).await;
                    let _ = done.send(());
                }
                Some(Command::Drop) => break,
                // The test dropped its handle: keep serving (answering pings) until herald leaves.
                None => commands_open = false,
            },
            item = read_rx.recv() => {
                let Some(item) = item else { break };
                let end = matches!(item, Seen::Eof(_));
                match &item {
                    Seen::Stanza(el) if answer_pings.load(Ordering::SeqCst) => {
                        if let Some(pong) = ping_answer(el) {
                            let _ = wr.write_all(pong.as_bytes()).await;
                        }
                    }
                    // Like Prosody: close our side too.
                    Seen::Footer => {
                        let _ = wr.write_all(b"</stream:stream>").await;
                        let _ = wr.shutdown().await;
                    }
                    _ => {}
                }
                let _ = seen.send(item);
                if end {
                    break;
                }
            }
        }
    }
    read_task.abort();
    // Dropping both halves closes the socket.
}

/// The server's answer to an XEP-0199 ping herald sends it.
fn ping_answer(el: &Element) -> Option<String> {
    if !el.is("iq", NS_COMPONENT)
        || el.attr("type") != Some("get")
        || !el.has_child("ping", NS_PING)
    {
        return None;
    }
    let id = el.attr("id").unwrap_or_default();
    let from = el.attr("to").unwrap_or(SERVER_DOMAIN);
    let to = el.attr("from").unwrap_or_default();
    Some(format!(
        "<iq type='result' id='{}' from='{}' to='{}'/>",
        escape(id),
        escape(from),
        escape(to)
    ))
}

/// Escapes text for an attribute value in single quotes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Reads a component stream from herald: the header, then one top-level element at a time.
struct ElementReader {
    parser: AsyncRawReader<BufReader<OwnedReadHalf>>,
    tree: TreeBuilder,
    footer: bool,
}

impl ElementReader {
    fn new(rd: OwnedReadHalf) -> Self {
        ElementReader {
            parser: AsyncRawReader::new(BufReader::new(rd)),
            tree: TreeBuilder::new(),
            footer: false,
        }
    }

    /// The socket's read half and what was read from it but not parsed yet. Only used right
    /// after the handshake, when herald waits for the answer and has sent nothing more.
    fn into_raw(self) -> (OwnedReadHalf, BytesMut) {
        let (buffered, _parser) = self.parser.into_inner();
        let rest = BytesMut::from(buffered.buffer());
        (buffered.into_inner(), rest)
    }

    /// Reads the stream header; returns its `to`. (That the stanzas are in the
    /// `jabber:component:accept` default namespace is checked on the handshake.)
    async fn header(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let Some(event) = self.parser.read().await? else {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            };
            let head_closed = matches!(event, RawEvent::ElementHeadClose(_));
            self.tree.process_event(event).map_err(invalid)?;
            if head_closed && self.tree.depth() == 1 {
                let root = self.tree.top().ok_or_else(|| invalid("no root"))?;
                if !root.is("stream", NS_STREAMS) {
                    return Err(invalid(format!("unexpected stream header {root:?}")));
                }
                return Ok(root.attr("to").map(str::to_owned));
            }
        }
    }

    /// The next top-level element; `None` at `</stream:stream>` or end of file.
    async fn next(&mut self) -> std::io::Result<Option<Element>> {
        if self.footer {
            // Only the end of the socket can follow a footer.
            return match self.parser.read().await? {
                None => Ok(None),
                Some(_) => Err(invalid("data after the stream footer")),
            };
        }
        loop {
            let Some(event) = self.parser.read().await? else {
                return Ok(None);
            };
            let foot = matches!(event, RawEvent::ElementFoot(_));
            self.tree.process_event(event).map_err(invalid)?;
            if !foot {
                continue;
            }
            match self.tree.depth() {
                1 => {
                    if let Some(el) = self.tree.unshift_child() {
                        return Ok(Some(el));
                    }
                }
                0 => {
                    self.footer = true;
                    return Ok(None);
                }
                _ => {}
            }
        }
    }
}

fn invalid(e: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Fast sessions (benchmarks): pre-rendered loads in, text-level counting out
// ---------------------------------------------------------------------------------------------

/// What a fast session does with herald's output beyond answering its pings.
#[derive(Debug, Clone, Default)]
pub struct Fast {
    /// Keeps the raw text of one `<message>` in this many for [`FastConn::take_samples`] (0: none).
    pub sample_every: u64,
    /// At most this many samples are held at a time.
    pub max_samples: usize,
    /// Answers herald's disco#info query with this identity: (category, type, name). Without it
    /// the query is left unanswered.
    pub disco_identity: Option<(String, String, String)>,
}

/// What a fast session has seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastProgress {
    /// Complete top-level `<message>` elements received from herald.
    pub messages: u64,
    /// Ping answers queued for writing.
    pub pongs: u64,
    /// Highest `N` of an answered [`FastConn::fence`] ping (`id='fence-N'`).
    pub fences: u64,
    /// herald's side of the socket has ended.
    pub eof: bool,
}

/// One load for the writer: chunks written back to back, ping answers slipped in between.
struct Load {
    chunks: Vec<Bytes>,
    /// Just before the first chunk was handed to the socket.
    started: oneshot::Sender<Instant>,
    /// Once the last chunk was handed to the socket.
    written: oneshot::Sender<Instant>,
}

#[derive(Default)]
struct FastShared {
    /// (message count to reach, who to tell when the read that reached it returned).
    arm: Mutex<Option<(u64, oneshot::Sender<Instant>)>>,
    samples: Mutex<Vec<String>>,
}

/// The handle on a logged-in [`Script::fast`] connection.
pub struct FastConn {
    /// The stream id the server gave this connection.
    pub stream_id: String,
    /// The component's JID (the `to` of its stream header).
    pub component: String,
    loads: mpsc::UnboundedSender<Load>,
    progress: watch::Receiver<FastProgress>,
    shared: Arc<FastShared>,
    next_fence: AtomicU64,
}

impl FastConn {
    /// Writes `chunks` back to back (pending ping answers go out between two chunks); returns
    /// when the first chunk was about to be written and when the last one was. `None` if the
    /// connection is gone.
    pub async fn write(&self, chunks: Vec<Bytes>) -> Option<(Instant, Instant)> {
        let (started_tx, started) = oneshot::channel();
        let (written_tx, written) = oneshot::channel();
        self.loads
            .send(Load {
                chunks,
                started: started_tx,
                written: written_tx,
            })
            .ok()?;
        let started = started.await.ok()?;
        let written = written.await.ok()?;
        Some((started, written))
    }

    /// Writes one chunk; returns the moment just before it was handed to the socket.
    pub async fn write_timed(&self, chunk: Bytes) -> Option<Instant> {
        self.write(vec![chunk]).await.map(|(started, _)| started)
    }

    pub fn progress(&self) -> FastProgress {
        *self.progress.borrow()
    }

    /// `<message>`s received so far.
    pub fn messages(&self) -> u64 {
        self.progress.borrow().messages
    }

    /// Resolves with the moment the read that brought the message count to `target` returned
    /// (at once if it is already there). Replaces an earlier, unresolved arm.
    pub fn arm(&self, target: u64) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        let mut arm = lock(&self.shared.arm);
        // The reader publishes its count before it checks the arm (under this lock), so a count
        // read here after taking the lock is never older than the reader's last check.
        if self.messages() >= target {
            let _ = tx.send(Instant::now());
        } else {
            *arm = Some((target, tx));
        }
        rx
    }

    /// Waits until at least `n` ping answers were queued; false on timeout or at the socket's end.
    pub async fn wait_pongs(&self, n: u64, timeout: Duration) -> bool {
        let mut progress = self.progress.clone();
        let reached = progress.wait_for(|p| p.pongs >= n || p.eof);
        let done =
            matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(p)) if p.pongs >= n);
        done
    }

    /// Pings herald and waits for its answer: everything written before has been read by
    /// herald's connection task (it answers in stream order). False on timeout.
    pub async fn fence(&self, timeout: Duration) -> bool {
        let n = self.next_fence.fetch_add(1, Ordering::SeqCst) + 1;
        let ping = format!(
            "<iq type='get' id='fence-{n}' from='{SERVER_DOMAIN}' to='{}'><ping xmlns='{NS_PING}'/></iq>",
            escape(&self.component)
        );
        if self.write_timed(Bytes::from(ping)).await.is_none() {
            return false;
        }
        let mut progress = self.progress.clone();
        let answered = progress.wait_for(|p| p.fences >= n || p.eof);
        let done =
            matches!(tokio::time::timeout(timeout, answered).await, Ok(Ok(p)) if p.fences >= n);
        done
    }

    /// Waits until no `<message>` has arrived for `quiet`; returns the message count.
    pub async fn settle(&self, quiet: Duration) -> u64 {
        loop {
            let before = self.messages();
            tokio::time::sleep(quiet).await;
            if self.messages() == before {
                return before;
            }
        }
    }

    /// The samples kept since the last call.
    pub fn take_samples(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.shared.samples))
    }
}

/// Hands the logged-in connection over to a fast session (a writer and a reader task).
fn start_fast_session(
    reader: ElementReader,
    wr: OwnedWriteHalf,
    stream_id: String,
    component: String,
    fast: Fast,
    conns: &mpsc::UnboundedSender<FastConn>,
) {
    let (rd, buffered) = reader.into_raw();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    let (loads_tx, loads_rx) = mpsc::unbounded_channel();
    let (progress_tx, progress) = watch::channel(FastProgress::default());
    let shared = Arc::new(FastShared::default());
    let conn = FastConn {
        stream_id,
        component: component.clone(),
        loads: loads_tx,
        progress,
        shared: shared.clone(),
        next_fence: AtomicU64::new(0),
    };
    if conns.send(conn).is_err() {
        return;
    }
    tokio::spawn(fast_writer(wr, answers_rx, loads_rx));
    let scanner = Scanner {
        fast,
        component,
        progress: FastProgress::default(),
    };
    tokio::spawn(fast_reader(
        rd,
        buffered,
        scanner,
        answers_tx,
        progress_tx,
        shared,
    ));
}

/// Writes the reader's answers as they come, and loads chunk by chunk with the pending answers
/// in between.
async fn fast_writer(
    mut wr: OwnedWriteHalf,
    mut answers: mpsc::UnboundedReceiver<Bytes>,
    mut loads: mpsc::UnboundedReceiver<Load>,
) {
    let mut loads_open = true;
    loop {
        tokio::select! {
            biased;
            answer = answers.recv() => match answer {
                Some(b) => {
                    if wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
                // The reader saw the socket's end.
                None => break,
            },
            load = loads.recv(), if loads_open => match load {
                Some(load) => {
                    let mut started = Some(load.started);
                    for chunk in &load.chunks {
                        while let Ok(b) = answers.try_recv() {
                            if wr.write_all(&b).await.is_err() {
                                return;
                            }
                        }
                        if let Some(tx) = started.take() {
                            let _ = tx.send(Instant::now());
                        }
                        if wr.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    if let Some(tx) = started.take() {
                        let _ = tx.send(Instant::now());
                    }
                    let _ = load.written.send(Instant::now());
                }
                None => loads_open = false,
            },
        }
    }
    let _ = wr.shutdown().await;
}

/// Reads herald's output into one growing buffer and scans it after every read.
async fn fast_reader(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    mut scanner: Scanner,
    answers: mpsc::UnboundedSender<Bytes>,
    progress: watch::Sender<FastProgress>,
    shared: Arc<FastShared>,
) {
    let mut received = Instant::now();
    loop {
        let before = scanner.progress;
        scanner.scan(&mut buf, &answers, &shared);
        let now = scanner.progress;
        if (now.messages, now.pongs, now.fences) != (before.messages, before.pongs, before.fences) {
            // Published before the arm is checked: see `FastConn::arm`.
            progress.send_replace(now);
            let mut arm = lock(&shared.arm);
            if arm.as_ref().is_some_and(|(t, _)| now.messages >= *t) {
                if let Some((_, tx)) = arm.take() {
                    let _ = tx.send(received);
                }
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(256 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => received = Instant::now(),
        }
    }
    progress.send_modify(|p| p.eof = true);
}

/// The fast session's view of herald's output, one top-level element at a time.
struct Scanner {
    fast: Fast,
    component: String,
    progress: FastProgress,
}

impl Scanner {
    fn scan(
        &mut self,
        buf: &mut BytesMut,
        answers: &mpsc::UnboundedSender<Bytes>,
        shared: &FastShared,
    ) {
        split_top_level(buf, |piece| match piece {
            TopLevel::StreamEnd => {
                // herald's `</stream:stream>`: like Prosody, close ours too.
                let _ = answers.send(Bytes::from_static(b"</stream:stream>"));
            }
            TopLevel::Element {
                tag,
                local,
                element,
            } => match local {
                b"message" => {
                    self.progress.messages += 1;
                    let every = self.fast.sample_every;
                    if every > 0 && self.progress.messages % every == 0 {
                        let mut samples = lock(&shared.samples);
                        if samples.len() < self.fast.max_samples {
                            samples.push(String::from_utf8_lossy(element).into_owned());
                        }
                    }
                }
                b"iq" => self.iq(tag, element, answers),
                _ => {}
            },
        });
    }

    fn iq(&mut self, tag: &[u8], element: &[u8], answers: &mpsc::UnboundedSender<Bytes>) {
        let id = attr(tag, "id").unwrap_or_default();
        match attr(tag, "type") {
            Some("get") if find(element, NS_PING.as_bytes()).is_some() => {
                let _ = answers.send(Bytes::from(format!("{}/>", self.result_head(tag, id))));
                self.progress.pongs += 1;
            }
            Some("get") if find(element, NS_DISCO_INFO.as_bytes()).is_some() => {
                if let Some((category, kind, name)) = &self.fast.disco_identity {
                    let _ = answers.send(Bytes::from(format!(
                        "{}><query xmlns='{NS_DISCO_INFO}'><identity category='{}' type='{}' name='{}'/>\
                         </query></iq>",
                        self.result_head(tag, id),
                        escape(category),
                        escape(kind),
                        escape(name)
                    )));
                }
            }
            Some("result") => {
                if let Some(n) = id.strip_prefix("fence-").and_then(|n| n.parse().ok()) {
                    self.progress.fences = self.progress.fences.max(n);
                }
            }
            _ => {}
        }
    }

    /// `<iq type='result' id=… from=… to=…` (unclosed) answering the iq whose start tag is `tag`.
    /// Attribute values are copied as herald escaped them.
    fn result_head(&self, tag: &[u8], id: &str) -> String {
        let from = attr(tag, "to").unwrap_or(SERVER_DOMAIN);
        let to = attr(tag, "from").unwrap_or(&self.component);
        format!(
            "<iq type='result' id={} from={} to={}",
            quoted(id),
            quoted(from),
            quoted(to)
        )
    }
}

/// A raw (already escaped) attribute value in quotes that do not occur in it.
fn quoted(raw: &str) -> String {
    if raw.contains('\'') {
        format!("\"{raw}\"")
    } else {
        format!("'{raw}'")
    }
}

// ---------------------------------------------------------------------------------------------
// Text-level XML (fast sessions)
// ---------------------------------------------------------------------------------------------

/// One top-level piece of herald's output.
pub enum TopLevel<'a> {
    /// herald's `</stream:stream>` (the only end tag at top level).
    StreamEnd,
    /// A complete element: its start tag, the start tag's local name and the whole element.
    Element {
        tag: &'a [u8],
        local: &'a [u8],
        element: &'a [u8],
    },
}

/// Splits herald's output into top-level elements, at text level, handing each complete one
/// to `on` and consuming it from `buf`. Whitespace, stray text between stanzas (none
/// expected), `<?…?>` declarations and a stream header (it stays open) are skipped.
pub fn split_top_level(buf: &mut BytesMut, mut on: impl FnMut(TopLevel<'_>)) {
    let data = &buf[..];
    let mut pos = 0;
    loop {
        while pos < data.len() && data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= data.len() {
            break;
        }
        if data[pos] != b'<' {
            match find_byte(&data[pos..], b'<') {
                Some(i) => pos += i,
                None => pos = data.len(),
            }
            continue;
        }
        let Some(gt) = find_byte(&data[pos..], b'>') else {
            break;
        };
        let tag_end = pos + gt + 1;
        let tag = &data[pos..tag_end];
        if tag.starts_with(b"<?") {
            pos = tag_end;
            continue;
        }
        if tag.starts_with(b"</") {
            on(TopLevel::StreamEnd);
            pos = tag_end;
            continue;
        }
        let name = tag_name(tag);
        let local = match name.iter().position(|&b| b == b':') {
            Some(i) => &name[i + 1..],
            None => name,
        };
        if local == b"stream" {
            pos = tag_end;
            continue;
        }
        let end = if tag.ends_with(b"/>") {
            tag_end
        } else {
            let mut closing = Vec::with_capacity(name.len() + 3);
            closing.extend_from_slice(b"</");
            closing.extend_from_slice(name);
            closing.push(b'>');
            match find(&data[tag_end..], &closing) {
                Some(i) => tag_end + i + closing.len(),
                None => break,
            }
        };
        on(TopLevel::Element {
            tag,
            local,
            element: &data[pos..end],
        });
        pos = end;
    }
    buf.advance(pos);
}

/// The raw (still escaped) value of attribute `name` in a start tag.
pub fn attr<'a>(tag: &'a [u8], name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = find(&tag[from..], name.as_bytes()) {
        let at = from + i;
        let after = at + name.len();
        let preceded = at > 0 && tag[at - 1].is_ascii_whitespace();
        if preceded && tag.get(after) == Some(&b'=') {
            let quote = *tag.get(after + 1)?;
            let start = after + 2;
            let len = find_byte(&tag[start..], quote)?;
            return std::str::from_utf8(&tag[start..start + len]).ok();
        }
        from = after;
    }
    None
}

/// The (prefixed) name of a start tag.
pub fn tag_name(tag: &[u8]) -> &[u8] {
    let rest = &tag[1..];
    let end = rest
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        .unwrap_or(rest.len());
    &rest[..end]
}

pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&x| x == b)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        i += find_byte(&hay[i..=hay.len() - needle.len()], first)?;
        if &hay[i + 1..i + needle.len()] == rest {
            return Some(i);
        }
        i += 1;
    }
    None
}
