//! The presence API: who is online now, with the `seq` that places the answer in the event
//! stream.
//!
//! - `GET /v1/presence`: `{"seq": N, "resources": [R, …]}`, every online resource.
//! - `GET /v1/presence/{bare JID}`: `{"seq": N, "jid": "<bare>", "resources": [R, …]}`; 404 with
//!   `{"seq": N, "jid": …, "error": "offline"}` when the user has no online resource.
//!
//! `R` is `{"jid": full JID, "show": …, "status": …, "priority": n, "since": RFC 3339}` (`show`
//! and `status` are left out when the resource has none).
//!
//! **Combining with the events.** An answer reflects exactly the events with `seq` ≤ N and
//! none after. A backend that starts late subscribes to events first (or keeps what its webhook
//! receives), then queries, applies the answer as its table, and applies only the events with
//! `seq` > N, in order, dropping those ≤ N: no gap, no duplicate.
//!
//! Only with `Authorization: Bearer <http.token>`; without a configured token every presence
//! route answers 404, a missing or wrong token 401 (logged with the client's address, never
//! with what it sent).
//!
//! The whole table is copied by the presence owner between two commits (see
//! [`crate::presence::query`]); its JSON is written here, [`CHUNK`] resources at a time, as the
//! client reads it, so a large table neither stalls the presence service nor builds the whole
//! body in memory.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::warn;

use super::HttpContext;
use crate::events::format_millis;
use crate::presence::query::{ResourceView, TableView};

/// Resources serialised per body chunk.
pub const CHUNK: usize = 1000;

#[derive(Serialize)]
struct ResourceJson<'a> {
    jid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    show: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    priority: i8,
    since: String,
}

fn write_resource(out: &mut Vec<u8>, r: &ResourceView) {
    let json = ResourceJson {
        jid: &r.jid,
        show: r.show.as_deref(),
        status: r.status.as_deref(),
        priority: r.priority,
        since: format_millis(r.since_ms),
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &json);
}

/// Checks the bearer token; `Err` is the response to send.
fn authorize(
    ctx: &HttpContext,
    headers: &HeaderMap,
    peer: SocketAddr,
    path: &str,
) -> Result<(), Response> {
    let Some(token) = &ctx.token else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let why = match given {
        None => "missing bearer token",
        Some(t) if constant_time_eq(t.as_bytes(), token.expose().as_bytes()) => return Ok(()),
        Some(_) => "wrong bearer token",
    };
    warn!(peer = %peer, path = %path, why, "presence API request refused");
    Err((
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer realm=\"herald\"")],
        "401 Unauthorized: send Authorization: Bearer <http.token>\n",
    )
        .into_response())
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "503: the presence service has stopped\n",
    )
        .into_response()
}

pub(super) async fn table(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&ctx, &headers, peer, "/v1/presence") {
        return r;
    }
    match ctx.presence.table().await {
        Ok(view) => streamed(view),
        Err(_) => unavailable(),
    }
}

/// The body of `GET /v1/presence`, written [`CHUNK`] resources at a time as it is read.
pub fn streamed(view: TableView) -> Response {
    let TableView { seq, resources } = view;
    let head = Bytes::from(format!("{{\"seq\":{seq},\"resources\":["));
    let chunks = futures::stream::unfold(
        (Some(head), resources, 0usize),
        |(head, resources, at)| async move {
            if let Some(head) = head {
                return Some((Ok::<_, std::convert::Infallible>(head), (None, resources, at)));
            }
            if at > resources.len() {
                return None;
            }
            if at == resources.len() {
                return Some((Ok(Bytes::from_static(b"]}\n")), (None, resources, at + 1)));
            }
            let end = (at + CHUNK).min(resources.len());
            let mut out = Vec::with_capacity((end - at) * 128);
            for (i, r) in resources[at..end].iter().enumerate() {
                if at + i > 0 {
                    out.push(b',');
                }
                write_resource(&mut out, r);
            }
            Some((Ok(Bytes::from(out)), (None, resources, end)))
        },
    );
    ([(CONTENT_TYPE, "application/json")], Body::from_stream(chunks)).into_response()
}

pub(super) async fn user(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(jid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&ctx, &headers, peer, "/v1/presence/{jid}") {
        return r;
    }
    if jid.is_empty() || jid.contains('/') || !jid.contains('@') {
        return (
            StatusCode::BAD_REQUEST,
            "400: give a bare user JID, e.g. /v1/presence/alice@example.org\n",
        )
            .into_response();
    }
    let bare = jid.to_lowercase();
    let view = match ctx.presence.user(&bare).await {
        Ok(view) => view,
        Err(_) => return unavailable(),
    };
    let mut out = Vec::with_capacity(64 + view.resources.len() * 128);
    let jid_json = serde_json::Value::String(bare).to_string();
    let code = if view.resources.is_empty() {
        out.extend_from_slice(
            format!(
                "{{\"seq\":{},\"jid\":{jid_json},\"error\":\"offline\"}}\n",
                view.seq
            )
            .as_bytes(),
        );
        StatusCode::NOT_FOUND
    } else {
        out.extend_from_slice(
            format!("{{\"seq\":{},\"jid\":{jid_json},\"resources\":[", view.seq).as_bytes(),
        );
        for (i, r) in view.resources.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_resource(&mut out, r);
        }
        out.extend_from_slice(b"]}\n");
        StatusCode::OK
    };
    (code, [(CONTENT_TYPE, "application/json")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(i: usize) -> ResourceView {
        ResourceView {
            jid: format!("u{i}@example.org/r\"{i}"),
            show: (i % 2 == 0).then(|| "away".to_owned()),
            status: Some(format!("s {i} ☃")),
            priority: (i % 5) as i8,
            since_ms: 1_700_000_000_000 + i as i64,
        }
    }

    async fn body_of(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_streamed_table_is_one_valid_json_document_in_order() {
        for n in [0, 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7] {
            let view = TableView {
                seq: 42,
                resources: (0..n).map(resource).collect(),
            };
            let json = body_of(streamed(view)).await;
            assert_eq!(json["seq"], 42);
            let rs = json["resources"].as_array().unwrap();
            assert_eq!(rs.len(), n);
            for (i, r) in rs.iter().enumerate() {
                assert_eq!(r["jid"], format!("u{i}@example.org/r\"{i}"));
                assert_eq!(r["priority"], (i % 5) as i64);
                assert_eq!(r.get("show").is_some(), i % 2 == 0);
            }
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
    }
}
