//! The connection task: the only owner of the XEP-0114 stream.
//!
//! It logs in (`<handshake>` = hex(sha1(stream id + secret)), done by tokio-xmpp), reads every
//! inbound element, classifies it ([`super::router`]) and hands it to its owner, and keeps the
//! stream alive. Once logged in, a writer task of its own takes over the socket's write half and
//! writes what the [`XmppHandle`](super::XmppHandle)s queue (stanzas already rendered as text),
//! so reading and writing run side by side:
//!
//! - **Keepalive**: an XEP-0199 ping to the server every `component.keepalive`, and one more when
//!   the stream has been silent for `component.read_timeout`; no answer within
//!   `component.request_timeout` after that means the stream is dead.
//! - **Reconnect** forever with jittered exponential backoff (`reconnect_min` → `reconnect_max`),
//!   reset once a connection has stayed up for `stable_after`. A wrong secret on the very first
//!   attempt is fatal (the operator must fix the config); a `<conflict/>` (another herald holds
//!   the name) is logged at ERROR and retried at the slowest pace.
//! - **Snapshot end**: right after a privilege advertisement herald pings the server. The server
//!   answers in order, so the answer arrives after the presence snapshot it sent with the
//!   advertisement; [`ConnectionEvent::SnapshotDone`] marks that point in the event stream.
//! - **Reconnect is a state transition**: pending IQs fail with `Disconnected`, consumers get
//!   [`ConnectionEvent::Down`] then [`ConnectionEvent::Up`] with a new epoch.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use minidom::Element;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};
use tracing::{debug, error, info, warn};

use super::disco;
use super::inbound::Stanza;
use super::iq_tracker::{IqError, IqTracker};
use super::limits::Limits;
use super::reader::{GuardedReader, PoisonMemory};
use super::router::{classify, classify_element, Inbound};
use super::stanza::{self, NS_COMPONENT};
use crate::backoff::Backoff;
use crate::config::ComponentSettings;
use crate::presence::tracker::Update;
use crate::xep::privilege::Advertisement;

type Stream = XmlStream<LoginIo, Stanza>;

/// What the handles queue for the writer: stanzas rendered as XML text.
pub type Outbound = mpsc::Receiver<super::handle::Outbound>;

/// How long the login (TCP connect, stream header, handshake) may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for queued stanzas and the stream close.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Most queued items written before one flush.
const WRITE_BATCH: usize = 512;
/// The writer's buffer: small stanzas are gathered into writes of up to this size.
const WRITE_BUFFER: usize = 64 * 1024;
/// The reader's buffer: one read takes up to this much of what the server has sent.
const READ_BUFFER: usize = 64 * 1024;
/// Most stanzas handed to the presence service in one burst.
const BURST_MAX: usize = 256;
const SNAPSHOT_ID_PREFIX: &str = "herald-snapshot-";
const KEEPALIVE_ID_PREFIX: &str = "herald-keepalive-";
const SERVER_INFO_ID_PREFIX: &str = "herald-serverinfo-";

/// What the connection tells the rest of herald, in stream order.
#[derive(Debug)]
pub enum ConnectionEvent {
    /// Logged in; `epoch` counts successful logins from 1.
    Up { epoch: u64 },
    /// A privilege advertisement (one per server domain, at every login).
    Privileges(Advertisement),
    /// A forwarded presence of a user resource.
    Presence {
        from: String,
        update: Update,
        delayed: bool,
    },
    /// The advertising server's software, from its disco#info identity (e.g. `Prosody`).
    ServerSoftware { domain: String, name: String },
    /// Everything the server sent with its advertisement of `epoch` has been delivered.
    SnapshotDone { epoch: u64 },
    /// The stream is gone; herald will reconnect.
    Down,
}

/// Why the connection task ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("the server at {server} rejected the component secret for {jid} ({condition}{text}); check component.secret and the server's component_secret")]
    BadSecret {
        server: String,
        jid: String,
        condition: String,
        text: String,
    },
    #[error("the server at {server} refused the component {jid} ({condition}{text}); check component.jid and the server's Component section for that name")]
    Refused {
        server: String,
        jid: String,
        condition: String,
        text: String,
    },
}

/// Why one login attempt failed.
#[derive(Debug, thiserror::Error)]
enum LoginError {
    #[error("the server rejected the handshake: {condition}{text}")]
    Rejected { condition: String, text: String },
    #[error("component name already connected (conflict{text}): another herald or component is using this name")]
    Conflict { text: String },
    #[error("{0}")]
    Io(String),
}

/// Runs until `shutdown` is cancelled (after draining) or the secret is wrong on the first try.
///
/// `events`: connection → presence service, bounded. When full, reading pauses (TCP pushes back
/// to the server) while queued outbound stanzas keep flowing, so the two can never deadlock.
pub async fn run(
    settings: ComponentSettings,
    tracker: IqTracker,
    outbound: Outbound,
    events: mpsc::Sender<Vec<ConnectionEvent>>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError> {
    // Each connection's writer task holds the lock while it runs; the queue outlives connections,
    // so what was queued while disconnected goes out after the reconnect.
    let outbound = Arc::new(tokio::sync::Mutex::new(outbound));
    let jid = settings.jid.to_string();
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut epoch = 0u64;
    let mut events = Some(events);
    let mut ever_connected = false;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(LOGIN_TIMEOUT, login(&settings)) => r
                .unwrap_or_else(|_| Err(LoginError::Io("login timed out".into()))),
        };
        let delay = match attempt {
            Ok((stream, write_half)) => {
                epoch += 1;
                ever_connected = true;
                info!(server = %settings.server, jid = %jid, epoch, "connected to the server");
                let started = Instant::now();
                let (control, control_rx) = mpsc::unbounded_channel();
                let writer_stop = CancellationToken::new();
                let writer = tokio::spawn(write_loop(
                    write_half,
                    control_rx,
                    outbound.clone(),
                    tracker.generation(),
                    writer_stop.clone(),
                ));
                let mut session = Session {
                    settings: &settings,
                    stream,
                    control: Some(control),
                    writer,
                    writer_stop,
                    tracker: &tracker,
                    events: &mut events,
                    pending: Vec::new(),
                    epoch,
                    server_domain: parent_domain(&jid),
                    counter: 0,
                    last_snapshot_ping: None,
                    advertised: false,
                };
                let end = session.run(&shutdown).await;
                drop(session);
                tracker.fail_all(IqError::Disconnected);
                if let Some(tx) = events.as_ref() {
                    let _ = tx.send(vec![ConnectionEvent::Down]).await;
                }
                match end {
                    SessionEnd::Shutdown => return Ok(()),
                    SessionEnd::Lost(reason) => {
                        warn!(server = %settings.server, reason = %reason, "connection lost; reconnecting");
                    }
                }
                if started.elapsed() >= settings.stable_after {
                    backoff.reset();
                }
                backoff.next_delay()
            }
            // On the first attempt a refusal is a configuration error: stop and say so.
            Err(LoginError::Rejected { condition, text }) if !ever_connected => {
                let server = settings.server.clone();
                return Err(if condition == "not-authorized" {
                    ConnectionError::BadSecret {
                        server,
                        jid,
                        condition,
                        text,
                    }
                } else {
                    ConnectionError::Refused {
                        server,
                        jid,
                        condition,
                        text,
                    }
                });
            }
            // Later (the server's configuration changed under a running herald): an operator
            // must act, but herald keeps trying so it recovers once they have.
            Err(e @ LoginError::Rejected { .. }) => {
                let d = backoff.next_delay();
                error!(server = %settings.server, jid = %jid, retry_in = ?d, "{e}; check component.secret and component.jid");
                d
            }
            Err(e @ LoginError::Conflict { .. }) => {
                error!(server = %settings.server, jid = %jid, "{e}; retrying slowly");
                settings.reconnect_max
            }
            Err(e) => {
                let d = backoff.next_delay();
                warn!(server = %settings.server, retry_in = ?d, "cannot connect: {e}");
                d
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tracker.fail_all(IqError::Closed);
    if let Ok(outbound) = outbound.try_lock() {
        if !outbound.is_empty() {
            warn!(
                queued = outbound.len(),
                "shutting down while disconnected: queued stanzas were not sent"
            );
        }
    }
    Ok(())
}

/// Connects and logs in; returns the stream (for reading) and the socket's write half.
async fn login(settings: &ComponentSettings) -> Result<(Stream, OwnedWriteHalf), LoginError> {
    let timeouts = Timeouts {
        read_timeout: settings.read_timeout,
        response_timeout: settings.request_timeout,
    };
    let tcp = TcpStream::connect(settings.server.as_str())
        .await
        .map_err(|e| LoginError::Io(e.to_string()))?;
    // herald gathers its writes itself (see `write_loop`).
    let _ = tcp.set_nodelay(true);
    let (rd, wr) = tcp.into_split();
    let write_slot = Arc::new(Mutex::new(Some(wr)));
    let io = LoginIo {
        rd: GuardedReader::with_capacity(
            READ_BUFFER,
            rd,
            Limits::new(settings.max_stanza_bytes),
            PoisonMemory::global(),
        ),
        wr: write_slot.clone(),
    };
    let header = StreamHeader {
        to: Some(Cow::Borrowed(settings.jid.as_str())),
        from: None,
        id: None,
    };
    let mut pending = initiate_stream(io, NS_COMPONENT, header, timeouts)
        .await
        .map_err(|e| LoginError::Io(e.to_string()))?;
    let header = pending.take_header();
    let stream_id = header
        .id
        .ok_or_else(|| LoginError::Io("the server sent no stream id".into()))?;
    let mut stream: Stream = pending.skip_features();
    let handshake =
        Handshake::from_stream_id_and_password(stream_id.into_owned(), settings.secret.expose());
    stream
        .send(&handshake)
        .await
        .map_err(|e| LoginError::Io(e.to_string()))?;
    loop {
        match stream.next().await {
            Some(Ok(Stanza::Other(el))) if el.name() == "handshake" && el.ns() == NS_COMPONENT => {
                let write_half = lock(&write_slot)
                    .take()
                    .ok_or_else(|| LoginError::Io("the socket's write half is gone".into()))?;
                return Ok((stream, write_half));
            }
            Some(Ok(stanza)) => {
                return Err(match classify(&stanza) {
                    Inbound::StreamError { condition, text } => {
                        let text = text.map(|t| format!(": {t}")).unwrap_or_default();
                        if condition == "conflict" {
                            LoginError::Conflict { text }
                        } else {
                            LoginError::Rejected { condition, text }
                        }
                    }
                    _ => {
                        LoginError::Io(format!("unexpected {} during handshake", describe(&stanza)))
                    }
                })
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(LoginError::Io(e.to_string())),
            None => return Err(LoginError::Io("the server closed the stream".into())),
        }
    }
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

struct Session<'a> {
    settings: &'a ComponentSettings,
    stream: Stream,
    /// The session's own stanzas (IQ answers, pings) to the writer; `None` once draining.
    control: Option<mpsc::UnboundedSender<Bytes>>,
    writer: JoinHandle<io::Result<()>>,
    /// Tells the writer to stop after the item it is writing and close the stream.
    writer_stop: CancellationToken,
    tracker: &'a IqTracker,
    events: &'a mut Option<mpsc::Sender<Vec<ConnectionEvent>>>,
    /// Events read but not yet handed to the presence service.
    pending: Vec<ConnectionEvent>,
    epoch: u64,
    /// Where keepalive pings go: the advertising server, else the component's parent domain.
    server_domain: String,
    counter: u64,
    /// Id of the ping sent after the latest privilege advertisement, until it is answered.
    last_snapshot_ping: Option<String>,
    /// A privilege advertisement arrived on this connection (or its absence was reported).
    advertised: bool,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A lost connection: the writer may be stuck on a dead socket. Stopping it releases
        // the outbound queue for the next connection's writer.
        self.writer.abort();
    }
}

impl Session<'_> {
    async fn run(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        self.emit(ConnectionEvent::Up { epoch: self.epoch });
        if let Err(end) = self.flush_events().await {
            return end;
        }
        let mut keepalive = tokio::time::interval(self.settings.keepalive);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        keepalive.reset();
        let advert_deadline = tokio::time::sleep(self.settings.read_timeout);
        tokio::pin!(advert_deadline);
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.drain_and_close().await,
                ended = &mut self.writer => return SessionEnd::Lost(writer_ended(ended)),
                read = self.stream.next() => {
                    // Whatever else is already buffered goes to the presence service in the
                    // same burst: one hand-over per burst instead of one per stanza.
                    let mut step = self.on_read(read);
                    let mut n = 1;
                    while step.is_ok() && n < BURST_MAX {
                        let Some(read) = self.stream.next().now_or_never() else {
                            break;
                        };
                        step = self.on_read(read);
                        n += 1;
                    }
                    let flushed = self.flush_events().await;
                    step.and(flushed)
                }
                _ = keepalive.tick() => self.keepalive(),
                _ = &mut advert_deadline, if !self.advertised => {
                    self.advertised = true;
                    error!(jid = %self.settings.jid, "the server sent no XEP-0356 privilege advertisement: herald sees no presence. Grant the component presence permission (see the README, 'Server configuration')");
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Acts on one read from the stream.
    fn on_read(&mut self, read: Option<Result<Stanza, ReadError>>) -> Result<(), SessionEnd> {
        match read {
            Some(Ok(el)) => self.handle(el),
            Some(Err(ReadError::SoftTimeout)) => {
                debug!("stream silent for read_timeout; pinging the server");
                self.keepalive()
            }
            Some(Err(ReadError::ParseError(e))) => {
                warn!(error = %e, "skipping an element herald could not parse");
                Ok(())
            }
            Some(Err(ReadError::StreamFooterReceived)) => {
                Err(SessionEnd::Lost("the server closed the stream".into()))
            }
            Some(Err(ReadError::HardError(e))) => Err(SessionEnd::Lost(e.to_string())),
            None => Err(SessionEnd::Lost("end of stream".into())),
        }
    }

    /// Dispatches one inbound stanza.
    fn handle(&mut self, stanza: Stanza) -> Result<(), SessionEnd> {
        match classify(&stanza) {
            Inbound::ForwardedPresence {
                from,
                update,
                delayed,
            } => {
                let from = from.to_owned();
                self.emit(ConnectionEvent::Presence {
                    from,
                    update,
                    delayed,
                });
                Ok(())
            }
            Inbound::IqResponse { id } => {
                if id.starts_with(SNAPSHOT_ID_PREFIX) {
                    // Several domains may advertise, each followed by its snapshot: only the
                    // answer to the ping after the last advertisement closes the snapshot.
                    if self.last_snapshot_ping.as_deref() == Some(id) {
                        self.last_snapshot_ping = None;
                        let epoch = self.epoch;
                        self.emit(ConnectionEvent::SnapshotDone { epoch });
                    }
                    return Ok(());
                }
                if id.starts_with(SERVER_INFO_ID_PREFIX) {
                    return match element(&stanza).and_then(server_software) {
                        Some((domain, name)) => {
                            self.emit(ConnectionEvent::ServerSoftware { domain, name });
                            Ok(())
                        }
                        None => Ok(()),
                    };
                }
                if id.starts_with(KEEPALIVE_ID_PREFIX) {
                    return Ok(());
                }
                if let Stanza::Other(el) = stanza {
                    if !self.tracker.resolve(el) {
                        debug!("ignoring an IQ answer nobody waits for");
                    }
                }
                Ok(())
            }
            Inbound::IqRequest => match element(&stanza) {
                Some(el) => {
                    let answer = disco::answer(el, self.settings.jid.as_str());
                    self.write(&answer)
                }
                None => Ok(()),
            },
            Inbound::Privileges(adv) => {
                self.advertised = true;
                self.server_domain = adv.server.clone();
                let n = self.next_counter();
                // Asked before the snapshot ping, so answered before it too.
                let info = stanza::disco_info_query(
                    &format!("{SERVER_INFO_ID_PREFIX}{n}"),
                    self.settings.jid.as_str(),
                    &adv.server,
                );
                self.write(&info)?;
                let id = format!("{SNAPSHOT_ID_PREFIX}{}-{n}", self.epoch);
                let snapshot_ping = stanza::ping(&id, self.settings.jid.as_str(), &adv.server);
                self.last_snapshot_ping = Some(id);
                self.emit(ConnectionEvent::Privileges(adv));
                self.write(&snapshot_ping)
            }
            Inbound::BadPrivileges(e) => {
                error!(error = %e, "the server's privilege advertisement could not be parsed");
                Ok(())
            }
            Inbound::StreamError { condition, text } => Err(SessionEnd::Lost(format!(
                "stream error {condition}{}",
                text.map(|t| format!(": {t}")).unwrap_or_default()
            ))),
            Inbound::Other(what) => {
                debug!(what, "ignoring inbound stanza");
                Ok(())
            }
        }
    }

    /// Adds an event to the burst for the presence service ([`Session::flush_events`]).
    fn emit(&mut self, event: ConnectionEvent) {
        if self.events.is_some() {
            self.pending.push(event);
        }
    }

    /// Hands the burst to the presence service. When its queue is full, reading pauses (TCP
    /// pushes back on the server); the writer goes on, so the two directions cannot deadlock.
    async fn flush_events(&mut self) -> Result<(), SessionEnd> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let burst = std::mem::take(&mut self.pending);
        let Some(tx) = self.events.as_ref() else {
            return Ok(());
        };
        if tx.send(burst).await.is_err() {
            *self.events = None;
        }
        Ok(())
    }

    /// Queues one of the session's own stanzas for the writer, ahead of the handles' traffic.
    fn write(&mut self, el: &Element) -> Result<(), SessionEnd> {
        let Some(control) = self.control.as_ref() else {
            return Ok(());
        };
        control
            .send(Bytes::from(String::from(el)))
            .map_err(|_| SessionEnd::Lost("the writer stopped".into()))
    }

    fn keepalive(&mut self) -> Result<(), SessionEnd> {
        let id = format!("{KEEPALIVE_ID_PREFIX}{}", self.next_counter());
        let ping = stanza::ping(&id, self.settings.jid.as_str(), &self.server_domain);
        self.write(&ping)
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Shutdown: stop dispatching inbound traffic (dropping the event sender ends the presence
    /// service once it has drained), let the writer send what the sinks queue until every handle
    /// is gone (it then closes the stream), and meanwhile keep routing IQ answers: the XMPP sinks
    /// await a ping answer as their acknowledgement.
    async fn drain_and_close(&mut self) -> SessionEnd {
        *self.events = None;
        self.control = None;
        let deadline = Instant::now() + DRAIN_DEADLINE;
        loop {
            tokio::select! {
                ended = &mut self.writer => {
                    match ended {
                        Ok(Ok(())) => break,
                        other => {
                            warn!(reason = %writer_ended(other), "connection lost while flushing queued stanzas");
                            return SessionEnd::Shutdown;
                        }
                    }
                }
                read = self.stream.next() => match read {
                    Some(Ok(Stanza::Other(el))) => {
                        if let Inbound::IqResponse { .. } = classify_element(&el) {
                            self.tracker.resolve(el);
                        }
                    }
                    Some(Ok(Stanza::Presence(_) | Stanza::Rejected(_))) => {}
                    Some(Err(ReadError::SoftTimeout)) | Some(Err(ReadError::ParseError(_))) => {}
                    _ => {
                        warn!("the server closed the stream while herald was flushing");
                        return SessionEnd::Shutdown;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("queued stanzas not flushed within the shutdown deadline; closing the stream");
                    self.writer_stop.cancel();
                    match tokio::time::timeout(Duration::from_secs(1), &mut self.writer).await {
                        Ok(Ok(Ok(()))) => break,
                        _ => return SessionEnd::Shutdown,
                    }
                }
            }
        }
        // The writer sent the stream footer; wait (briefly) for the server's.
        let server_closed = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(_))
                    | Some(Err(ReadError::SoftTimeout))
                    | Some(Err(ReadError::ParseError(_))) => {}
                    _ => return,
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), server_closed).await {
            Ok(()) => info!("stream closed"),
            Err(_) => debug!("the server did not close its side in time"),
        }
        SessionEnd::Shutdown
    }
}

fn writer_ended(ended: Result<io::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "the writer stopped".into(),
        Ok(Err(e)) => format!("write failed: {e}"),
        Err(e) => format!("the writer failed: {e}"),
    }
}

/// The writer task of one connection: writes the session's own stanzas (first) and what the
/// handles queue, gathering everything already queued into one flush. Items queued for an older
/// connection (`generation` below this one's) are dropped: what they belong to failed with it.
/// Once the session drains (drops `control`) and every handle is gone, or when `stop` is
/// cancelled, it writes the stream footer and shuts its side.
async fn write_loop(
    wr: OwnedWriteHalf,
    mut control: mpsc::UnboundedReceiver<Bytes>,
    outbound: Arc<tokio::sync::Mutex<Outbound>>,
    generation: u64,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut outbound = outbound.lock().await;
    let mut wr = BufWriter::with_capacity(WRITE_BUFFER, wr);
    let (mut control_open, mut outbound_open) = (true, true);
    let current =
        |item: super::handle::Outbound| (item.generation >= generation).then_some(item.xml);
    while control_open || outbound_open {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            c = control.recv(), if control_open => match c {
                Some(b) => b,
                None => {
                    control_open = false;
                    continue;
                }
            },
            o = outbound.recv(), if outbound_open => match o {
                Some(item) => match current(item) {
                    Some(b) => b,
                    None => continue,
                },
                None => {
                    outbound_open = false;
                    continue;
                }
            },
        };
        wr.write_all(&first).await?;
        for _ in 1..WRITE_BATCH {
            let next = match control.try_recv() {
                Ok(b) => b,
                Err(_) => match outbound.try_recv() {
                    Ok(item) => match current(item) {
                        Some(b) => b,
                        None => continue,
                    },
                    Err(_) => break,
                },
            };
            wr.write_all(&next).await?;
        }
        wr.flush().await?;
    }
    wr.write_all(b"</stream:stream>").await?;
    wr.flush().await?;
    wr.shutdown().await
}

/// The login I/O of tokio-xmpp's stream: reads through herald's limit-checking reader; writes go
/// to the socket's write half, which the writer task takes over once the handshake is done.
struct LoginIo {
    rd: GuardedReader<OwnedReadHalf>,
    wr: Arc<Mutex<Option<OwnedWriteHalf>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_half_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the writer task owns the socket")
}

impl AsyncRead for LoginIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.rd).poll_read(cx, buf)
    }
}

impl AsyncBufRead for LoginIo {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().rd).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.rd).consume(amt)
    }
}

impl AsyncWrite for LoginIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.wr).as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(write_half_gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.wr).as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Err(write_half_gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.wr).as_mut() {
            Some(w) => Pin::new(w).poll_shutdown(cx),
            None => Poll::Ready(Err(write_half_gone())),
        }
    }
}

/// The element of a stanza that is not a presence.
fn element(stanza: &Stanza) -> Option<&Element> {
    match stanza {
        Stanza::Presence(_) | Stanza::Rejected(_) => None,
        Stanza::Other(el) => Some(el),
    }
}

/// `<name/>` of a stanza, for messages.
fn describe(stanza: &Stanza) -> String {
    match stanza {
        Stanza::Presence(_) => "<presence/>".into(),
        Stanza::Other(el) => format!("<{}/>", el.name()),
        Stanza::Rejected(r) => format!("rejected stanza ({})", r.limit),
    }
}

/// `(server domain, software name)` from a disco#info result: the `server` identity's name.
fn server_software(iq: &Element) -> Option<(String, String)> {
    let query = iq.get_child("query", stanza::NS_DISCO_INFO)?;
    let name = query
        .children()
        .filter(|c| c.name() == "identity")
        .find(|c| c.attr("category") == Some("server"))
        .and_then(|c| c.attr("name"))?;
    Some((
        iq.attr("from").unwrap_or_default().to_owned(),
        name.to_owned(),
    ))
}

/// `herald.example.org` → `example.org`: the usual host of a component's server.
fn parent_domain(jid: &str) -> String {
    match jid.split_once('.') {
        Some((_, rest)) if rest.contains('.') || rest == "localhost" => rest.to_owned(),
        _ => jid.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_software_reads_the_server_identity() {
        let prosody: minidom::Element = "<iq xmlns='jabber:component:accept' type='result' from='localhost' id='herald-serverinfo-1'><query xmlns='http://jabber.org/protocol/disco#info'><identity type='pep' category='pubsub'/><identity type='im' name='Prosody' category='server'/><feature var='urn:xmpp:ping'/></query></iq>".parse().unwrap();
        assert_eq!(
            super::server_software(&prosody),
            Some(("localhost".into(), "Prosody".into()))
        );
        let bare: minidom::Element =
            "<iq xmlns='jabber:component:accept' type='error' from='localhost' id='x'/>"
                .parse()
                .unwrap();
        assert_eq!(super::server_software(&bare), None);
    }

    #[tokio::test]
    async fn the_writer_drops_what_was_queued_for_a_lost_connection() {
        use crate::xmpp::handle::Outbound;
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_rd, wr) = client.unwrap().into_split();
        let (mut peer, _) = server.unwrap();

        let (out_tx, out_rx) = mpsc::channel(16);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let item = |generation, xml: &'static str| Outbound {
            generation,
            xml: Bytes::from_static(xml.as_bytes()),
        };
        out_tx.send(item(1, "<old-a/>")).await.unwrap();
        out_tx.send(item(2, "<new-a/>")).await.unwrap();
        out_tx.send(item(1, "<old-b/>")).await.unwrap();
        out_tx.send(item(2, "<new-b/>")).await.unwrap();
        control_tx.send(Bytes::from_static(b"<own/>")).unwrap();
        // Draining: the session's own channel closes, then every handle goes.
        drop(control_tx);
        drop(out_tx);
        let outbound = Arc::new(tokio::sync::Mutex::new(out_rx));
        write_loop(wr, control_rx, outbound, 2, CancellationToken::new())
            .await
            .unwrap();
        let mut text = String::new();
        peer.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "<own/><new-a/><new-b/></stream:stream>");
    }

    #[tokio::test]
    async fn a_stopped_writer_closes_the_stream_with_items_still_queued() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_rd, wr) = client.unwrap().into_split();
        let (mut peer, _) = server.unwrap();
        // A handle stays open (the shutdown deadline passed with a sink still sending).
        let (_out_tx, out_rx) = mpsc::channel::<crate::xmpp::handle::Outbound>(16);
        let (_control_tx, control_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        stop.cancel();
        let outbound = Arc::new(tokio::sync::Mutex::new(out_rx));
        write_loop(wr, control_rx, outbound, 0, stop).await.unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut peer, &mut text)
            .await
            .unwrap();
        assert_eq!(text, "</stream:stream>");
    }

    #[test]
    fn parent_domain_strips_the_first_label() {
        assert_eq!(parent_domain("herald.example.org"), "example.org");
        assert_eq!(parent_domain("herald.localhost"), "localhost");
        assert_eq!(parent_domain("localhost"), "localhost");
    }
}
