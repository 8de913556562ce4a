//! The operators' HTTP listener (`[http]`): one axum server on herald's tokio runtime.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`] names every series).
//! - `GET /healthz`: 200 while herald's tasks run, 503 once it is stopping or the presence owner
//!   has stopped.
//! - `GET /readyz`: 200 only when the stream is up, every server domain granted presence
//!   permission and this connection's presence snapshot is over; else 503. Either way a JSON
//!   body says what each check found and, for a failing one, what to do ([`probes`]).
//! - `GET /v1/presence` and `GET /v1/presence/{bare JID}`: the presence table as JSON with its
//!   `seq`, behind `Authorization: Bearer <http.token>`; 404 without a configured token
//!   ([`presence`]).
//!
//! The listener binds only where `http.listen` says (a loopback address unless
//! `http.allow_non_loopback`); with `listen = ""` nothing is bound.

pub mod presence;
pub mod probes;
pub mod scrape;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::outbox::worker::Lane;
use crate::presence::query::PresenceReader;
use crate::xmpp::routes::LinkStatus;

/// What the handlers read.
pub struct HttpContext {
    pub metrics: Metrics,
    pub presence: PresenceReader,
    pub status: watch::Receiver<LinkStatus>,
    /// One per sink, for the backlog gauges.
    pub lanes: Vec<Lane>,
    /// The store's directory, for its size on disk.
    pub store_path: PathBuf,
    /// `component.server_domains`: each must grant presence for `/readyz`.
    pub server_domains: Vec<String>,
    /// `http.token`; `None` turns the presence API off.
    pub token: Option<Secret>,
    /// Cancelled when herald begins to stop (`/healthz` then answers 503).
    pub stopping: CancellationToken,
    /// The last `/v1/presence` answer (start with the default).
    pub table_cache: presence::TableCache,
}

type Shared = Arc<HttpContext>;

/// Binds `listen`.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// The routes, over `ctx`.
pub fn router(ctx: HttpContext) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/v1/presence", get(presence::table))
        .route("/v1/presence/{jid}", get(presence::user))
        .with_state(Arc::new(ctx))
}

/// Serves `listener` until `shutdown` is cancelled; requests in progress then finish.
#[tracing::instrument(name = "http", skip_all)]
pub async fn serve(listener: TcpListener, ctx: HttpContext, shutdown: CancellationToken) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(listen = %addr, presence_api = ctx.token.is_some(), "HTTP listener started");
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        error!(error = %e, "the HTTP listener failed");
    }
}

async fn metrics(State(ctx): State<Shared>) -> impl IntoResponse {
    scrape::refresh(&ctx).await;
    (
        [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        ctx.metrics.render(),
    )
}
