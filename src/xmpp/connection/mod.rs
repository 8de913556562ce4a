//! The connection: the only owner of the XEP-0114 stream, and a transport only.
//!
//! It logs in ([`login`]), reads every inbound element, classifies it once
//! ([`crate::xmpp::router`]) and hands it to its owner ([`crate::xmpp::routes`]), and keeps the
//! stream alive. Once logged in, a writer task ([`writer`]) takes over the socket's write half
//! and writes what the [`XmppHandle`]s queue, priority lane first, so reading and writing run
//! side by side. Presence logic (the snapshot and its end, the server's identity) belongs to the
//! presence owner, which sends its own IQs through a handle.
//!
//! - **Keepalive**: an XEP-0199 ping to the server (the first of `component.server_domains`)
//!   every `component.keepalive`, and one more when the stream has been silent for
//!   `component.read_timeout`; no traffic within `component.request_timeout` after that means
//!   the stream is dead.
//! - **Reconnect** forever with jittered exponential backoff (`reconnect_min` → `reconnect_max`),
//!   reset once a connection has stayed up for `stable_after`. A wrong secret on the very first
//!   attempt is fatal (the operator must fix the config); a `<conflict/>` (another herald holds
//!   the name) is logged at ERROR and retried at the slowest pace.
//! - **Reconnect is a state transition**: pending IQs fail with `Disconnected` (a new
//!   generation: stanzas queued for the lost connection are dropped), and every owner sees
//!   [`LinkStatus::Down`] then [`LinkStatus::Up`] with a new epoch.

mod login;
mod session;
mod writer;

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::login::{login, LoginError};
use self::session::{Session, SessionEnd};
use crate::backoff::Backoff;
use crate::config::ComponentSettings;
use crate::xmpp::handle::{OutboundQueues, XmppHandle};
use crate::xmpp::iq_tracker::{IqError, IqTracker};
use crate::xmpp::routes::{LinkStatus, PresenceInbound, Routes};

/// How long the login (TCP connect, stream header, handshake) may take.
const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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

/// The connection's parts.
pub struct Connection {
    pub settings: ComponentSettings,
    pub tracker: IqTracker,
    /// The writer's ends of the handles' lanes.
    pub queues: OutboundQueues,
    /// The connection's own handle (keepalive pings).
    pub handle: XmppHandle,
    pub routes: Routes,
}

/// Runs until `shutdown` is cancelled (after draining) or the secret is wrong on the first try.
///
/// `shutdown` stops reading (the connection then drains); `close` tells the writer to send what
/// is still queued and close the stream (herald cancels it once the sinks have stopped).
#[tracing::instrument(name = "connection", skip_all, fields(server = %connection.settings.server))]
pub async fn run(
    connection: Connection,
    shutdown: CancellationToken,
    close: CancellationToken,
) -> Result<(), ConnectionError> {
    let Connection {
        settings,
        tracker,
        queues,
        handle,
        mut routes,
    } = connection;
    // Each connection's writer task holds the lock while it runs; the queues outlive
    // connections, so what was queued while disconnected goes out after the reconnect.
    let queues = Arc::new(tokio::sync::Mutex::new(queues));
    let jid = settings.jid.to_string();
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut epoch = 0u64;
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
                let writer_stop = CancellationToken::new();
                let writer = tokio::spawn(writer::write_loop(
                    write_half,
                    queues.clone(),
                    tracker.generation(),
                    close.clone(),
                    writer_stop.clone(),
                ));
                routes.status.send_replace(LinkStatus::Up { epoch });
                let mut session = Session {
                    settings: &settings,
                    stream,
                    writer,
                    writer_stop,
                    tracker: &tracker,
                    handle: &handle,
                    routes: &mut routes,
                    pending: Vec::new(),
                    epoch,
                    dropped_messages: 0,
                };
                let end = session.run(&shutdown).await;
                drop(session);
                tracker.fail_all(IqError::Disconnected);
                routes.status.send_replace(LinkStatus::Down);
                if let Some(tx) = routes.presence.as_ref() {
                    let _ = tx.send(vec![PresenceInbound::Down]).await;
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
    if let Ok(queues) = queues.try_lock() {
        let queued = queues.priority.len() + queues.bulk.len();
        if queued > 0 {
            warn!(
                queued,
                "shutting down while disconnected: queued stanzas were not sent"
            );
        }
    }
    Ok(())
}
