//! Wires the tasks together. [`run`] takes the shutdown signal as a future, so tests run the
//! whole component in-process.
//!
//! The owners: the connection (transport), the presence service (on a thread of its own), one
//! delivery worker per sink, the IQ handlers (registered by namespace), the rooms owner (it
//! joins the watched rooms and hands their messages on) and the push owner (group-chat pushes
//! from the rooms' messages, and app servers' remote disables from the other messages).
//!
//! Shutdown order: the connection stops dispatching inbound traffic and drops its presence
//! sender; the push owner decides and persists the room messages already handed to it, then
//! stops (pushes not answered yet stay in its outbox); the presence service drains what it
//! already received, persists the resulting events into the outbox and flushes the store; the
//! delivery workers send what is queued while deliveries succeed (what they cannot deliver stays
//! in the outbox); the rooms owner leaves every room (no ghost occupant stays behind); then the
//! connection writes what is still queued and closes the stream.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{LivenessMode, Settings};
use crate::events::fanout::Fanout;
use crate::http::HttpContext;
use crate::metrics::Metrics;
use crate::muc::{RoomsContext, RoomsView};
use crate::outbox::worker::{self, Lane, Policy};
use crate::presence::query::PresenceReader;
use crate::presence::service::{PresenceContext, PresenceService};
use crate::sinks::webhook::WebhookSink;
use crate::sinks::xmpp::{self as xmpp_sink, XmppSink};
use crate::store::Store;
use crate::xmpp::connection::{self, Connection, ConnectionError};
use crate::xmpp::iq_handlers::{IqDispatcher, IqHandlers};
use crate::xmpp::routes::{LinkStatus, PresenceInbound, Routes};
use crate::xmpp::{IqTracker, XmppHandle};
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
    events: mpsc::Receiver<Vec<PresenceInbound>>,
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

/// What an embedding (a test, a future owner) can observe of a running herald.
#[derive(Clone)]
pub struct Observers {
    /// The presence read handle.
    pub presence: PresenceReader,
    /// The connection status.
    pub status: tokio::sync::watch::Receiver<LinkStatus>,
    /// Each watched room's state.
    pub rooms: RoomsView,
    /// Where the HTTP listener is bound (`None`: `http.listen = ""`).
    pub http: Option<std::net::SocketAddr>,
    /// The store, for fault injection in tests ([`Store::fail_next_queue_writes`]).
    #[doc(hidden)]
    pub store: Store,
    /// The push registrations, for tests (the same handle the ad-hoc commands use).
    #[doc(hidden)]
    pub push: crate::push::Push,
    /// Where group-chat messages reach the push owner, for tests (the rooms owner holds the
    /// other end).
    #[doc(hidden)]
    pub room_messages: mpsc::Sender<crate::muc::RoomMessage>,
}

/// Runs herald until `shutdown` completes (then shuts down gracefully) or a fatal error occurs.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with(settings, IqHandlers::new(), shutdown, |_| {}).await
}

/// [`run`] with extra IQ handlers, and `started` called once with the [`Observers`].
pub async fn run_with(
    settings: Settings,
    handlers: IqHandlers,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(Observers),
) -> Result<(), RunError> {
    let store = Store::open(
        &settings.store.path,
        settings.store.flush_interval.as_millis() as u64,
        settings.store.cache_bytes,
    )?;
    let jid = settings.component.jid.to_string();
    let mut handlers = handlers;
    let metrics = Metrics::new();
    let push = crate::push::install(&mut handlers, &settings, &store, metrics.push())?;
    let push_outbox = store.push_outbox()?;
    let iq_tracker = IqTracker::new();
    let (handle, queues) = XmppHandle::new(iq_tracker.clone(), &jid);
    let (routes, inboxes) = Routes::new(IqDispatcher::new(handlers, handle.clone()));

    // A port that cannot be bound does not stop herald from delivering events: it runs without
    // the listener, says so, and its probes fail (nothing answers them).
    let http_listener = match settings.http.listen {
        Some(addr) => match crate::http::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                error!(listen = %addr, error = %e, "cannot listen on http.listen; herald runs without /metrics, /healthz, /readyz and the presence API");
                None
            }
        },
        None => None,
    };
    let workers_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    let mut lanes = Vec::new();
    for s in &settings.xmpp_sinks {
        let lane = Lane::new(store.sink_queue(&s.name)?).with_metrics(metrics.sink(&s.name));
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
        let lane = Lane::new(store.sink_queue(&s.name)?).with_metrics(metrics.sink(&s.name));
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
    // Liveness checks (presence.liveness): a task of their own, fed and stopped by the presence
    // service (it ends when the service drops its end of the channels).
    let liveness = (settings.presence.liveness != LivenessMode::Off).then(|| {
        let (link, task) = crate::presence::liveness::channel();
        tokio::spawn(crate::presence::liveness::run(
            handle.clone(),
            settings.presence.liveness_interval,
            task,
        ));
        link
    });
    let (service, reader) = PresenceService::new(
        store.clone(),
        PresenceContext {
            settings: settings.presence.clone(),
            server_domains: settings.component.server_domains.clone(),
            fanout: Fanout::new(lanes.clone()),
            handle: handle.clone(),
            metrics: metrics.presence(),
            liveness,
        },
    )?;
    let _ = push.presence.set(reader.clone());
    let presence = spawn_presence_thread(service, inboxes.presence).map_err(RunError::Thread)?;
    let (room_messages, room_messages_rx) =
        mpsc::channel(crate::push::owner::ROOM_MESSAGES_CAPACITY);
    let push_stop = CancellationToken::new();
    let push_owner = crate::push::owner::spawn(
        crate::push::owner::PushOwner {
            room_messages: room_messages_rx,
            messages: inboxes.messages,
            status: inboxes.status.clone(),
            handle: handle.clone(),
            push: push.push.clone(),
            outbox: push_outbox,
            presence: reader.clone(),
            settings: settings.push.clone(),
            jid: jid.clone(),
            metrics: metrics.push(),
        },
        push_stop.clone(),
    );
    let rooms_stop = CancellationToken::new();
    let (rooms_view, mut rooms) = crate::muc::spawn(
        RoomsContext {
            handle: handle.clone(),
            store: push.push.store().clone(),
            jid: jid.clone(),
            nick: settings.push.room_nick.clone(),
            messages: room_messages.clone(),
            metrics: metrics.rooms(),
            muc: settings.muc.clone(),
            presence: reader.clone(),
        },
        inboxes.rooms,
        inboxes.status.clone(),
        rooms_stop.clone(),
    );
    let _ = push.rooms.set(rooms_view.clone());
    let http_stopping = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let http = http_listener.map(|listener| {
        tokio::spawn(crate::http::serve(
            listener,
            HttpContext {
                metrics: metrics.clone(),
                presence: reader.clone(),
                status: inboxes.status.clone(),
                lanes: lanes.clone(),
                store_path: settings.store.path.clone(),
                server_domains: settings.component.server_domains.clone(),
                token: settings.http.token.clone(),
                stopping: http_stopping.clone(),
                table_cache: Default::default(),
            },
            http_stop.clone(),
        ))
    });
    started(Observers {
        presence: reader,
        status: inboxes.status,
        rooms: rooms_view,
        http: http_addr,
        store: store.clone(),
        push: push.push.clone(),
        room_messages,
    });
    let reader_stop = CancellationToken::new();
    let close = CancellationToken::new();
    let mut conn = tokio::spawn(connection::run(
        Connection {
            settings: settings.component.clone(),
            tracker: iq_tracker,
            queues,
            handle,
            routes,
        },
        reader_stop.clone(),
        close.clone(),
    ));
    info!(jid = %jid, server = %settings.component.server, sinks = workers.len(), "herald started");

    let early = tokio::select! {
        _ = shutdown => None,
        r = &mut conn => Some(r),
    };
    info!("shutting down");
    http_stopping.cancel();
    reader_stop.cancel();
    // The push owner persists the room messages handed to it; pushes not answered yet stay in
    // the outbox for the next start.
    push_stop.cancel();
    if tokio::time::timeout(STAGE_DEADLINE, push_owner)
        .await
        .is_err()
    {
        warn!("the push owner did not stop within the shutdown deadline");
    }
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
    // The leaves must be written before the stream closes.
    rooms_stop.cancel();
    if tokio::time::timeout(STAGE_DEADLINE, &mut rooms)
        .await
        .is_err()
    {
        warn!("the rooms owner did not leave the rooms within the shutdown deadline");
        rooms.abort();
    }
    close.cancel();
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
    http_stop.cancel();
    if let Some(mut http) = http {
        if tokio::time::timeout(STAGE_DEADLINE, &mut http)
            .await
            .is_err()
        {
            warn!("HTTP requests still in progress at shutdown were cut off");
            http.abort();
        }
    }
    store.flush().await?;
    match conn_result {
        Ok(r) => r?,
        Err(e) => return Err(RunError::Task(e.to_string())),
    }
    info!("herald stopped");
    Ok(())
}
