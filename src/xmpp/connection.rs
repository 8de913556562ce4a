//! The connection task: the only owner of the XEP-0114 stream.
//!
//! It logs in (`<handshake>` = hex(sha1(stream id + secret)), done by tokio-xmpp), reads every
//! inbound element, classifies it ([`super::router`]) and hands it to its owner, writes what the
//! [`XmppHandle`](super::XmppHandle)s queue, and keeps the stream alive:
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

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::connect::{DnsConfig, ServerConnector, TcpServerConnector};
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::xmlstream::{ReadError, Timeouts, XmlStream};
use tracing::{debug, error, info, warn};

use super::disco;
use super::iq_tracker::{IqError, IqTracker};
use super::router::{classify, Inbound};
use super::stanza::{self, NS_COMPONENT};
use crate::backoff::Backoff;
use crate::config::ComponentSettings;
use crate::presence::tracker::Update;
use crate::xep::privilege::Advertisement;

type Stream = XmlStream<<TcpServerConnector as ServerConnector>::Stream, Element>;

/// How long the login (TCP connect, stream header, handshake) may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for queued stanzas and the stream close.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Outbound stanzas written before one flush.
const WRITE_BATCH: usize = 512;
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
    mut outbound: mpsc::Receiver<Element>,
    events: mpsc::Sender<ConnectionEvent>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError> {
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
            Ok(stream) => {
                epoch += 1;
                ever_connected = true;
                info!(server = %settings.server, jid = %jid, epoch, "connected to the server");
                let started = Instant::now();
                let mut session = Session {
                    settings: &settings,
                    stream,
                    tracker: &tracker,
                    outbound: &mut outbound,
                    events: &mut events,
                    epoch,
                    server_domain: parent_domain(&jid),
                    counter: 0,
                    last_snapshot_ping: None,
                    advertised: false,
                };
                let end = session.run(&shutdown).await;
                tracker.fail_all(IqError::Disconnected);
                if let Some(tx) = events.as_ref() {
                    let _ = tx.send(ConnectionEvent::Down).await;
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
    if !outbound.is_empty() {
        warn!(
            queued = outbound.len(),
            "shutting down while disconnected: queued stanzas were not sent"
        );
    }
    Ok(())
}

async fn login(settings: &ComponentSettings) -> Result<Stream, LoginError> {
    let timeouts = Timeouts {
        read_timeout: settings.read_timeout,
        response_timeout: settings.request_timeout,
    };
    let connector = TcpServerConnector::from(DnsConfig::addr(&settings.server));
    let jid = tokio_xmpp::jid::Jid::from(settings.jid.clone());
    let (mut pending, _) = connector
        .connect(&jid, NS_COMPONENT, timeouts)
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
            Some(Ok(el)) if el.name() == "handshake" && el.ns() == NS_COMPONENT => {
                return Ok(stream)
            }
            Some(Ok(el)) => {
                return Err(match classify(&el) {
                    Inbound::StreamError { condition, text } => {
                        let text = text.map(|t| format!(": {t}")).unwrap_or_default();
                        if condition == "conflict" {
                            LoginError::Conflict { text }
                        } else {
                            LoginError::Rejected { condition, text }
                        }
                    }
                    _ => LoginError::Io(format!("unexpected <{}/> during handshake", el.name())),
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
    tracker: &'a IqTracker,
    outbound: &'a mut mpsc::Receiver<Element>,
    events: &'a mut Option<mpsc::Sender<ConnectionEvent>>,
    epoch: u64,
    /// Where keepalive pings go: the advertising server, else the component's parent domain.
    server_domain: String,
    counter: u64,
    /// Id of the ping sent after the latest privilege advertisement, until it is answered.
    last_snapshot_ping: Option<String>,
    /// A privilege advertisement arrived on this connection (or its absence was reported).
    advertised: bool,
}

impl Session<'_> {
    async fn run(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        if let Err(end) = self.emit(ConnectionEvent::Up { epoch: self.epoch }).await {
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
                out = self.outbound.recv() => match out {
                    Some(el) => self.write(el).await,
                    // Every handle is gone: nothing more can be sent.
                    None => return self.drain_and_close().await,
                },
                read = self.stream.next() => match read {
                    Some(Ok(el)) => self.handle(el).await,
                    Some(Err(ReadError::SoftTimeout)) => {
                        debug!("stream silent for read_timeout; pinging the server");
                        self.keepalive().await
                    }
                    Some(Err(ReadError::ParseError(e))) => {
                        warn!(error = %e, "skipping an element herald could not parse");
                        Ok(())
                    }
                    Some(Err(ReadError::StreamFooterReceived)) => Err(SessionEnd::Lost("the server closed the stream".into())),
                    Some(Err(ReadError::HardError(e))) => Err(SessionEnd::Lost(e.to_string())),
                    None => Err(SessionEnd::Lost("end of stream".into())),
                },
                _ = keepalive.tick() => self.keepalive().await,
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

    /// Dispatches one inbound element.
    async fn handle(&mut self, el: Element) -> Result<(), SessionEnd> {
        match classify(&el) {
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
                })
                .await
            }
            Inbound::IqResponse { id } => {
                if id.starts_with(SNAPSHOT_ID_PREFIX) {
                    // Several domains may advertise, each followed by its snapshot: only the
                    // answer to the ping after the last advertisement closes the snapshot.
                    if self.last_snapshot_ping.as_deref() == Some(id) {
                        self.last_snapshot_ping = None;
                        let epoch = self.epoch;
                        return self.emit(ConnectionEvent::SnapshotDone { epoch }).await;
                    }
                    return Ok(());
                }
                if id.starts_with(SERVER_INFO_ID_PREFIX) {
                    return match server_software(&el) {
                        Some((domain, name)) => {
                            self.emit(ConnectionEvent::ServerSoftware { domain, name })
                                .await
                        }
                        None => Ok(()),
                    };
                }
                if id.starts_with(KEEPALIVE_ID_PREFIX) {
                    return Ok(());
                }
                if !self.tracker.resolve(el) {
                    debug!("ignoring an IQ answer nobody waits for");
                }
                Ok(())
            }
            Inbound::IqRequest => {
                let answer = disco::answer(&el, self.settings.jid.as_str());
                self.write(answer).await
            }
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
                self.write(info).await?;
                let id = format!("{SNAPSHOT_ID_PREFIX}{}-{n}", self.epoch);
                let snapshot_ping = stanza::ping(&id, self.settings.jid.as_str(), &adv.server);
                self.last_snapshot_ping = Some(id);
                self.emit(ConnectionEvent::Privileges(adv)).await?;
                self.write(snapshot_ping).await
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

    /// Sends an event to the presence service without blocking the outbound direction.
    async fn emit(&mut self, event: ConnectionEvent) -> Result<(), SessionEnd> {
        let Some(tx) = self.events.clone() else {
            return Ok(());
        };
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    match permit {
                        Ok(p) => p.send(event),
                        Err(_) => *self.events = None,
                    }
                    return Ok(());
                }
                out = self.outbound.recv() => match out {
                    Some(el) => self.write(el).await?,
                    None => return Err(SessionEnd::Shutdown),
                }
            }
        }
    }

    /// Writes one stanza and whatever else is already queued, then flushes once.
    async fn write(&mut self, first: Element) -> Result<(), SessionEnd> {
        let lost = |e: std::io::Error| SessionEnd::Lost(format!("write failed: {e}"));
        self.stream.feed(&first).await.map_err(lost)?;
        for _ in 1..WRITE_BATCH {
            match self.outbound.try_recv() {
                Ok(el) => self.stream.feed(&el).await.map_err(lost)?,
                Err(_) => break,
            }
        }
        SinkExt::<&Element>::flush(&mut self.stream)
            .await
            .map_err(lost)
    }

    async fn keepalive(&mut self) -> Result<(), SessionEnd> {
        let id = format!("{KEEPALIVE_ID_PREFIX}{}", self.next_counter());
        let ping = stanza::ping(&id, self.settings.jid.as_str(), &self.server_domain);
        self.write(ping).await
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Shutdown: stop dispatching inbound traffic (dropping the event sender ends the presence
    /// service once it has drained), keep writing what the sinks queue and keep routing IQ
    /// answers (the XMPP sinks await a ping answer as their acknowledgement), until every handle
    /// is gone; then close the stream.
    async fn drain_and_close(&mut self) -> SessionEnd {
        *self.events = None;
        let deadline = Instant::now() + DRAIN_DEADLINE;
        loop {
            tokio::select! {
                out = self.outbound.recv() => match out {
                    Some(el) => {
                        if self.write(el).await.is_err() {
                            warn!("connection lost while flushing queued stanzas");
                            return SessionEnd::Shutdown;
                        }
                    }
                    None => break,
                },
                read = self.stream.next() => match read {
                    Some(Ok(el)) => {
                        if let Inbound::IqResponse { .. } = classify(&el) {
                            self.tracker.resolve(el);
                        }
                    }
                    Some(Err(ReadError::SoftTimeout)) | Some(Err(ReadError::ParseError(_))) => {}
                    _ => {
                        warn!("the server closed the stream while herald was flushing");
                        return SessionEnd::Shutdown;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("queued stanzas not flushed within the shutdown deadline");
                    break;
                }
            }
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            SinkExt::<&Element>::close(&mut self.stream),
        )
        .await
        {
            Ok(Ok(())) => info!("stream closed"),
            Ok(Err(e)) => debug!(error = %e, "closing the stream"),
            Err(_) => debug!("the server did not close its side in time"),
        }
        SessionEnd::Shutdown
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
    use super::parent_domain;

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

    #[test]
    fn parent_domain_strips_the_first_label() {
        assert_eq!(parent_domain("herald.example.org"), "example.org");
        assert_eq!(parent_domain("herald.localhost"), "localhost");
        assert_eq!(parent_domain("localhost"), "localhost");
    }
}
