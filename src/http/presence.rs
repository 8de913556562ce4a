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
//! **Cost.** The whole table is copied by the presence owner between two commits (see
//! [`crate::presence::query`]): tens of milliseconds for 100 000 resources, during which the
//! pipeline waits. So that polling clients cannot take the pipeline's time, a copy is made at
//! most once per [`COPY_SPACING`] × the last copy's duration as the owner measured it (at most
//! 1/20 of the presence owner's time; time spent waiting in its queue is not counted); a request in between gets the previous answer, rendered once and shared.
//! Such an answer is older, never inconsistent: its `seq` says exactly which events it
//! reflects, so the combination above stays exact. With a small table the spacing is a
//! fraction of a millisecond and every answer is fresh. The JSON is rendered off the async
//! workers, [`CHUNK`] resources per body chunk, and streamed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Write as _;
use tracing::warn;

use super::HttpContext;
use crate::events::format_millis;
use crate::presence::query::{ReaderClosed, ResourceView, TableView};
use std::time::Instant;

/// Resources serialised per body chunk.
pub const CHUNK: usize = 1000;
/// A whole-table copy is made at most once per this many times the last one's duration.
pub const COPY_SPACING: u32 = 20;

/// The last whole-table answer, rendered, and when the next copy may be made.
#[derive(Clone)]
pub struct Rendered {
    pub seq: u64,
    chunks: Arc<Vec<Bytes>>,
    next_copy: Instant,
}

/// Shared by the requests of one listener (see the module documentation).
#[derive(Default)]
pub struct TableCache {
    last: tokio::sync::Mutex<Option<Rendered>>,
}

impl TableCache {
    /// The current answer: the last one while copies are spaced out, else a new copy.
    async fn get(&self, ctx: &HttpContext) -> Result<Rendered, ReaderClosed> {
        let mut last = self.last.lock().await;
        if let Some(r) = last.as_ref().filter(|r| Instant::now() < r.next_copy) {
            return Ok(r.clone());
        }
        let view = ctx.presence.table().await?;
        let (seq, took) = (view.seq, view.copied_in);
        let chunks = tokio::task::spawn_blocking(move || render_chunks(view))
            .await
            .unwrap_or_default();
        let r = Rendered {
            seq,
            chunks: Arc::new(chunks),
            next_copy: Instant::now() + took * COPY_SPACING,
        };
        *last = Some(r.clone());
        Ok(r)
    }
}

/// Appends one resource's JSON object. Written by hand (a table is 100 000 of these): strings
/// through serde_json's escaping, `since` without a date library.
fn write_resource(out: &mut Vec<u8>, r: &ResourceView) {
    out.extend_from_slice(b"{\"jid\":");
    write_str(out, &r.jid);
    if let Some(show) = &r.show {
        out.extend_from_slice(b",\"show\":");
        write_str(out, show);
    }
    if let Some(status) = &r.status {
        out.extend_from_slice(b",\"status\":");
        write_str(out, status);
    }
    let _ = write!(out, ",\"priority\":{},\"since\":\"", r.priority);
    write_millis(out, r.since_ms);
    out.extend_from_slice(b"\"}");
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as [`format_millis`] writes it.
fn write_millis(out: &mut Vec<u8>, ms: i64) {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(format_millis(ms).as_bytes());
        return;
    }
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    );
}

/// Checks the bearer token; `Some` is the refusal to send.
fn refusal(
    ctx: &HttpContext,
    headers: &HeaderMap,
    peer: SocketAddr,
    path: &str,
) -> Option<Response> {
    let Some(token) = &ctx.token else {
        return Some(StatusCode::NOT_FOUND.into_response());
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
        Some(t) if constant_time_eq(t.as_bytes(), token.expose().as_bytes()) => return None,
        Some(_) => "wrong bearer token",
    };
    warn!(peer = %peer, path = %path, why, "presence API request refused");
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer realm=\"herald\"")],
            "401 Unauthorized: send Authorization: Bearer <http.token>\n",
        )
            .into_response(),
    )
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
    if let Some(r) = refusal(&ctx, &headers, peer, "/v1/presence") {
        return r;
    }
    match ctx.table_cache.get(&ctx).await {
        Ok(r) => streamed(r.chunks),
        Err(_) => unavailable(),
    }
}

/// The JSON of `GET /v1/presence`, [`CHUNK`] resources per chunk.
pub fn render_chunks(view: TableView) -> Vec<Bytes> {
    let TableView { seq, resources, .. } = view;
    let mut chunks = Vec::with_capacity(resources.len() / CHUNK + 3);
    chunks.push(Bytes::from(format!("{{\"seq\":{seq},\"resources\":[")));
    for (n, slice) in resources.chunks(CHUNK).enumerate() {
        let mut out = Vec::with_capacity(slice.len() * 128);
        for (i, r) in slice.iter().enumerate() {
            if n + i > 0 {
                out.push(b',');
            }
            write_resource(&mut out, r);
        }
        chunks.push(Bytes::from(out));
    }
    chunks.push(Bytes::from_static(b"]}\n"));
    chunks
}

/// A streamed body of `chunks` (shared, not copied).
pub fn streamed(chunks: Arc<Vec<Bytes>>) -> Response {
    let body = futures::stream::iter(
        (0..chunks.len()).map(move |i| Ok::<_, std::convert::Infallible>(chunks[i].clone())),
    );
    (
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

pub(super) async fn user(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(jid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&ctx, &headers, peer, "/v1/presence/{jid}") {
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
                copied_in: Default::default(),
            };
            let json = body_of(streamed(Arc::new(render_chunks(view)))).await;
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
    fn since_is_written_like_event_timestamps() {
        for ms in [
            0,
            951_782_400_000, // 2000-02-29
            1_700_000_000_123,
            4_102_444_799_999, // 2099-12-31T23:59:59.999
            -1,
            253_402_300_800_000, // year 10000: the library's answer
        ] {
            let mut out = Vec::new();
            write_millis(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), format_millis(ms), "{ms}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
    }
}
