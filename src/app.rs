//! Wires the tasks together. [`run`] takes the shutdown signal as a future, so tests run the
//! whole component in-process.
//!
//! Shutdown order: the connection stops dispatching inbound traffic and drops its event sender;
//! the presence service drains what it already received, persists the resulting events into the
//! outbox and flushes the store; the delivery workers send what is queued while deliveries
//! succeed (what they cannot deliver stays in the outbox); once the last XMPP handle is gone the
//! connection closes the stream.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::events::fanout::Fanout;
use crate::outbox::worker::{self, Lane, Policy};
use crate::presence::service::PresenceService;
use crate::sinks::webhook::WebhookSink;
use crate::sinks::xmpp::{self as xmpp_sink, XmppSink};
use crate::store::Store;
use crate::xmpp::connection::{self, ConnectionError};
use crate::xmpp::{IqTracker, XmppHandle};

/// Capacity of the outbound stanza queue (all producers → connection task).
const OUTBOUND_CAPACITY: usize = 4096;
/// Capacity of the connection → presence service queue, in bursts of up to 256 events.
const EVENTS_CAPACITY: usize = 64;
/// How long each shutdown stage may take before herald stops waiting for it.
const STAGE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("a herald task failed: {0}")]
    Task(String),
    #[error("cannot set up a sink: {0}")]
    Sink(String),
    #[error("cannot start the presence service's thread: {0}")]
    Thread(std::io::Error),
}

/// Runs the presence service on a thread of its own, with a single-threaded runtime for its
/// timer. It does synchronous store writes, and on its own thread it works side by side with
/// the connection's reader instead of taking turns with it on one runtime worker. The returned
/// receiver completes when the service has stopped (after its final flush).
fn spawn_presence_thread(
    service: PresenceService,
    events: mpsc::Receiver<Vec<crate::xmpp::connection::ConnectionEvent>>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (done, stopped) = tokio::sync::oneshot::channel();
    // The thread logs where its caller logs (a test may have set a subscriber for its thread only).
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name("herald-presence".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                runtime.block_on(service.run(events));
            });
            let _ = done.send(());
        })?;
    Ok(stopped)
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
    let handle = XmppHandle::new(out_tx, iq_tracker.clone(), &jid);

    let workers_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    let mut lanes = Vec::new();
    for s in &settings.xmpp_sinks {
        let lane = Lane::new(store.sink_queue(&s.name)?);
        let sink = XmppSink::new(handle.clone(), s.to.to_string(), s.domain.clone());
        workers.spawn(worker::run_pipelined(
            lane.clone(),
            sink,
            xmpp_sink::policy(settings.component.request_timeout),
            workers_stop.clone(),
        ));
        lanes.push(lane);
    }
    for s in &settings.webhook_sinks {
        let lane = Lane::new(store.sink_queue(&s.name)?);
        let sink = WebhookSink::new(s).map_err(|e| RunError::Sink(e.to_string()))?;
        let policy = Policy {
            batch_max: s.batch_max,
            batch_delay: s.batch_delay,
            max_backlog: s.max_backlog,
            retry_min: s.retry_min,
            retry_max: s.retry_max,
            in_flight: s.batch_max,
            ack_timeout: s.timeout,
        };
        workers.spawn(worker::run(
            lane.clone(),
            sink,
            policy,
            workers_stop.clone(),
        ));
        lanes.push(lane);
    }
    // The connection closes the stream once every handle is gone, so this one is kept until the
    // workers have stopped: herald with webhook sinks only must stay connected too.
    let keep_open = handle;

    let service =
        PresenceService::new(store.clone(), &settings.presence, Fanout::new(lanes), &jid)?;
    let (ev_tx, ev_rx) = mpsc::channel(EVENTS_CAPACITY);
    let reader_stop = CancellationToken::new();
    let presence = spawn_presence_thread(service, ev_rx).map_err(RunError::Thread)?;
    let mut conn = tokio::spawn(connection::run(
        settings.component.clone(),
        iq_tracker,
        out_rx,
        ev_tx,
        reader_stop.clone(),
    ));
    info!(jid = %jid, server = %settings.component.server, sinks = workers.len(), "herald started");

    let early = tokio::select! {
        _ = shutdown => None,
        r = &mut conn => Some(r),
    };
    info!("shutting down");
    reader_stop.cancel();
    if tokio::time::timeout(STAGE_DEADLINE, presence)
        .await
        .is_err()
    {
        error!("the presence service did not stop within the shutdown deadline");
    }
    workers_stop.cancel();
    let workers_done = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(STAGE_DEADLINE, workers_done)
        .await
        .is_err()
    {
        warn!("delivery workers did not finish within the shutdown deadline; undelivered events stay in the outbox");
        workers.abort_all();
    }
    drop(keep_open);
    let conn_result = match early {
        Some(r) => r,
        None => match tokio::time::timeout(STAGE_DEADLINE, &mut conn).await {
            Ok(r) => r,
            Err(_) => {
                error!("the connection did not close within the shutdown deadline");
                conn.abort();
                Ok(Ok(()))
            }
        },
    };
    store.flush().await?;
    match conn_result {
        Ok(r) => r?,
        Err(e) => return Err(RunError::Task(e.to_string())),
    }
    info!("herald stopped");
    Ok(())
}
