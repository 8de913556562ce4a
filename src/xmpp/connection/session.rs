//! One logged-in connection: reads, classifies once, routes each stanza to its owner, keeps the
//! stream alive, and on shutdown drains.

use std::io;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use minidom::Element;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::xmlstream::ReadError;
use tracing::{debug, info, warn};

use super::login::Stream;
use crate::config::ComponentSettings;
use crate::xmpp::handle::{Lane, XmppHandle};
use crate::xmpp::inbound::Stanza;
use crate::xmpp::iq_tracker::{IqTracker, Resolution};
use crate::xmpp::router::{classify, Inbound};
use crate::xmpp::routes::{PresenceInbound, RoomInbound, Routes};
use crate::xmpp::stanza;

/// Most stanzas handed to the presence owner in one burst.
const BURST_MAX: usize = 256;
/// How long a graceful shutdown waits for the sinks' last stanzas and the stream close.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

pub(super) enum SessionEnd {
    Shutdown,
    Lost(String),
}

pub(super) struct Session<'a> {
    pub settings: &'a ComponentSettings,
    pub stream: Stream,
    pub writer: JoinHandle<io::Result<()>>,
    /// Tells the writer to close the stream at once.
    pub writer_stop: CancellationToken,
    pub tracker: &'a IqTracker,
    pub handle: &'a XmppHandle,
    pub routes: &'a mut Routes,
    /// Presence traffic read but not yet handed to the presence owner.
    pub pending: Vec<PresenceInbound>,
    pub epoch: u64,
    /// Messages dropped because their owner's queue was full.
    pub dropped_messages: u64,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A lost connection: the writer may be stuck on a dead socket. Stopping it releases
        // the outbound queues for the next connection's writer.
        self.writer.abort();
    }
}

impl Session<'_> {
    pub async fn run(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        self.pending.push(PresenceInbound::Up { epoch: self.epoch });
        self.flush_presence().await;
        let mut keepalive = tokio::time::interval(self.settings.keepalive);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.drain_and_close().await,
                ended = &mut self.writer => return SessionEnd::Lost(writer_ended(ended)),
                read = self.stream.next() => {
                    // Whatever else is already buffered goes to the presence owner in the
                    // same burst: one hand-over per burst instead of one per stanza.
                    let mut step = self.on_read(read).await;
                    let mut n = 1;
                    while step.is_ok() && n < BURST_MAX {
                        let Some(read) = self.stream.next().now_or_never() else {
                            break;
                        };
                        step = self.on_read(read).await;
                        n += 1;
                    }
                    self.flush_presence().await;
                    step
                }
                _ = keepalive.tick() => {
                    self.keepalive().await;
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Acts on one read from the stream.
    async fn on_read(&mut self, read: Option<Result<Stanza, ReadError>>) -> Result<(), SessionEnd> {
        match read {
            Some(Ok(stanza)) => self.route(stanza).await,
            Some(Err(ReadError::SoftTimeout)) => {
                debug!("stream silent for read_timeout; pinging the server");
                self.keepalive().await;
                Ok(())
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

    /// Hands one inbound stanza to its owner.
    async fn route(&mut self, stanza: Stanza) -> Result<(), SessionEnd> {
        let kind = classify(&stanza);
        match (kind, stanza) {
            (Inbound::StreamError { condition, text }, _) => Err(SessionEnd::Lost(format!(
                "stream error {condition}{}",
                text.map(|t| format!(": {t}")).unwrap_or_default()
            ))),
            (Inbound::UserPresence, Stanza::Presence(p)) => {
                self.pending.push(PresenceInbound::Presence(p));
                Ok(())
            }
            (Inbound::Privileges(adv), _) => {
                self.pending.push(PresenceInbound::Privileges(adv));
                Ok(())
            }
            (Inbound::MucPresence, Stanza::Presence(p)) => {
                let _ = self.routes.rooms.send(RoomInbound::Presence(p)).await;
                Ok(())
            }
            (Inbound::Groupchat, Stanza::Other(el)) => {
                let _ = self.routes.rooms.send(RoomInbound::Groupchat(el)).await;
                Ok(())
            }
            (Inbound::Message, Stanza::Other(el)) => {
                self.route_message(el);
                Ok(())
            }
            (Inbound::IqRequest, Stanza::Other(el)) => {
                self.routes.iq.dispatch(el);
                Ok(())
            }
            (Inbound::IqResponse, Stanza::Other(el)) => {
                // Whatever the server sent before this answer reaches the presence owner first:
                // an owner that awaits it (the snapshot's end) then finds all of it queued.
                self.flush_presence().await;
                let (id, from) = (
                    el.attr("id").unwrap_or_default().to_owned(),
                    el.attr("from").unwrap_or_default().to_owned(),
                );
                match self.tracker.resolve(el) {
                    Resolution::Resolved => {}
                    Resolution::Unknown => {
                        debug!(id = %id, from = %from, "ignoring an IQ answer nobody waits for")
                    }
                    Resolution::WrongSender => {
                        debug!(id = %id, from = %from, "ignoring an IQ answer from a JID the request did not go to")
                    }
                }
                Ok(())
            }
            (Inbound::Rejected, Stanza::Rejected(r)) => {
                warn!(from = ?r.from.as_deref().unwrap_or_default(), stanza = r.name.as_deref().unwrap_or("?"), limit = r.limit, "skipped an inbound stanza over a limit (see the README, 'Limits')");
                if let Some(answer) = r.error_reply(self.settings.jid.as_str()) {
                    // Never waits: a flood of rejected IQs cannot stall reading.
                    if self.handle.try_send(Lane::Priority, &answer).is_err() {
                        warn!("outbound priority lane full; an IQ answer was dropped");
                    }
                }
                Ok(())
            }
            (Inbound::Other(what), _) => {
                debug!(what, "ignoring inbound stanza");
                Ok(())
            }
            (kind, _) => {
                debug!(kind = ?kind, "ignoring a stanza of an unexpected shape");
                Ok(())
            }
        }
    }

    fn route_message(&mut self, el: Element) {
        match self.routes.messages.try_send(el) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(el)) => {
                self.dropped_messages += 1;
                if self.dropped_messages.is_power_of_two() {
                    warn!(
                        from = el.attr("from").unwrap_or_default(),
                        dropped = self.dropped_messages,
                        "message queue full; dropping inbound messages"
                    );
                }
            }
        }
    }

    /// Hands the burst to the presence owner. When its queue is full, reading pauses (TCP
    /// pushes back on the server); the writer goes on, so the two directions cannot deadlock.
    async fn flush_presence(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let burst = std::mem::take(&mut self.pending);
        let Some(tx) = self.routes.presence.as_ref() else {
            return;
        };
        if tx.send(burst).await.is_err() {
            self.routes.presence = None;
        }
    }

    /// An XEP-0199 ping to the server, on the priority lane. Its answer proves nothing by
    /// itself: the traffic keeps the server's and tokio-xmpp's read timeouts from firing, and a
    /// dead stream ends in a read error.
    async fn keepalive(&mut self) {
        let to = self
            .settings
            .server_domains
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        let ping = stanza::ping("", self.settings.jid.as_str(), to);
        // The answer is not awaited; a late one finds its waiter gone, which is fine.
        let _ = self.handle.request(Lane::Priority, ping).await;
    }

    /// Shutdown: stop dispatching inbound traffic (dropping the presence sender ends the
    /// presence owner once it has drained), let the writer send what the sinks queue until herald
    /// closes the stream, and meanwhile keep routing IQ answers: the XMPP sinks await a ping
    /// answer as their acknowledgement.
    async fn drain_and_close(&mut self) -> SessionEnd {
        self.flush_presence().await;
        self.routes.presence = None;
        let deadline = Instant::now() + DRAIN_DEADLINE;
        loop {
            tokio::select! {
                biased;
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
                        if let Inbound::IqResponse = crate::xmpp::router::classify_element(&el) {
                            self.tracker.resolve(el);
                        }
                    }
                    Some(Ok(Stanza::Presence(_) | Stanza::Rejected(_))) => {}
                    Some(Err(ReadError::SoftTimeout)) | Some(Err(ReadError::ParseError(_))) => {}
                    _ => {
                        // The server's footer may answer the one the writer has just sent.
                        let writer = tokio::time::timeout(Duration::from_secs(1), &mut self.writer);
                        if !matches!(writer.await, Ok(Ok(Ok(())))) {
                            warn!("the server closed the stream while herald was flushing");
                        } else {
                            info!("stream closed");
                        }
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

pub(super) fn writer_ended(ended: Result<io::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "the writer stopped".into(),
        Ok(Err(e)) => format!("write failed: {e}"),
        Err(e) => format!("the writer failed: {e}"),
    }
}
