//! Wires the tasks together. [`run`] takes the shutdown signal as a future, so tests run the
//! whole component in-process.
//!
//! Shutdown order: the connection stops reading and drops its event sender; the presence service
//! drains what it already received, publishes the resulting events, flushes the store and drops
//! its handles; the connection sends everything queued, closes the stream and returns.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Settings;
use crate::events::fanout::Fanout;
use crate::presence::service::PresenceService;
use crate::sinks::xmpp::XmppSink;
use crate::store::Store;
use crate::xmpp::connection::{self, ConnectionError};
use crate::xmpp::{IqTracker, XmppHandle};

/// Capacity of the outbound stanza queue (all producers → connection task).
const OUTBOUND_CAPACITY: usize = 4096;
/// Capacity of the connection → presence service queue.
const EVENTS_CAPACITY: usize = 8192;
/// The longest a graceful shutdown may take before herald gives up waiting.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("a herald task failed: {0}")]
    Task(String),
}

/// Runs herald until `shutdown` completes (then shuts down gracefully) or a fatal error occurs.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let store = Store::open(
        &settings.store.path,
        settings.store.flush_interval.as_millis() as u64,
        settings.store.cache_bytes,
    )?;
    let jid = settings.component.jid.to_string();
    let iq_tracker = IqTracker::new();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let handle = XmppHandle::new(
        out_tx,
        iq_tracker.clone(),
        &jid,
        settings.component.request_timeout,
    );
    let sinks = settings
        .xmpp_sinks
        .iter()
        .map(|s| XmppSink::new(handle.clone(), s.to.to_string()))
        .collect();
    // The connection ends its drain once every handle is gone: keep none here.
    drop(handle);
    let service = PresenceService::new(
        store.clone(),
        settings.presence.changes,
        Fanout::new(sinks),
        &jid,
    )?;
    let (ev_tx, ev_rx) = mpsc::channel(EVENTS_CAPACITY);
    let token = CancellationToken::new();
    let presence = tokio::spawn(service.run(ev_rx));
    let mut conn = tokio::spawn(connection::run(
        settings.component.clone(),
        iq_tracker,
        out_rx,
        ev_tx,
        token.clone(),
    ));
    info!(jid = %jid, server = %settings.component.server, sinks = settings.xmpp_sinks.len(), "herald started");

    let early = tokio::select! {
        _ = shutdown => None,
        r = &mut conn => Some(r),
    };
    token.cancel();
    let conn_result = match early {
        Some(r) => r,
        None => match tokio::time::timeout(SHUTDOWN_DEADLINE, &mut conn).await {
            Ok(r) => r,
            Err(_) => {
                error!("the connection did not close within the shutdown deadline");
                conn.abort();
                Ok(Ok(()))
            }
        },
    };
    match tokio::time::timeout(SHUTDOWN_DEADLINE, presence).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RunError::Task(e.to_string())),
        Err(_) => error!("the presence service did not stop within the shutdown deadline"),
    }
    store.flush().await?;
    match conn_result {
        Ok(r) => r?,
        Err(e) => return Err(RunError::Task(e.to_string())),
    }
    info!("herald stopped");
    Ok(())
}
