//! The webhook sink: `POST`s each batch of events, as a JSON array in `seq` order, to one HTTP
//! endpoint, and says what the answer means for the batch.
//!
//! A request carries:
//! - `Content-Type: application/json` and the body `[{event}, {event}, …]`;
//! - `X-Herald-Batch: <batch id>`: the worker retries a batch with the same id, so the endpoint
//!   can recognise a batch it already processed (e.g. when its acknowledgement was lost);
//! - `X-Herald-Signature: sha256=<hex HMAC-SHA256(secret, body)>` when the sink has a secret
//!   (see [`sign`]); the endpoint recomputes it over the raw body to authenticate herald;
//! - the sink's configured `headers` (authentication), and `User-Agent: herald/<version>`.
//!
//! What the answer means is decided by [`retry::classify`](super::retry::classify). Redirects are
//! not followed: a `POST` must not silently change target (nor turn into a `GET`), so a 3xx is a
//! dead letter that tells the operator to fix the URL. For retries and dead letters the reason
//! ends with a short excerpt of the endpoint's answer, which usually says what is wrong.
//!
//! Logs name the sink by its `name` only: the URL (whose path or query may hold a token), the
//! secret and the header values never appear in them.

use std::error::Error as _;
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Url};
use sha2::Sha256;

use super::retry::{self, Attempt};
use crate::config::{Secret, WebhookSinkSettings};
use crate::outbox::{Batch, Transport, Verdict};

/// Header carrying the batch id, stable across retries.
pub const BATCH_HEADER: &str = "x-herald-batch";
/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` when the sink has a secret.
pub const SIGNATURE_HEADER: &str = "x-herald-signature";
/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));
/// Most characters of the endpoint's answer quoted in a retry or dead-letter reason.
pub const EXCERPT_CHARS: usize = 200;
/// Most bytes read from an answer's body: enough for the excerpt, and small bodies are read to
/// the end so the connection can be reused; a larger body is not downloaded.
const BODY_READ_LIMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook sink {name}: cannot build its HTTP client: {source}")]
    Client {
        name: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Delivers batches to one endpoint; one HTTP client (connection pool) per sink.
pub struct WebhookSink {
    name: String,
    url: Url,
    secret: Option<Secret>,
    client: Client,
}

impl WebhookSink {
    /// The sink for `settings`. The client ignores `HTTP(S)_PROXY` from the environment (a
    /// proxy must be an explicit decision), follows no redirects and gives up on an attempt
    /// after `settings.timeout`, from connecting to the end of the answer.
    pub fn new(settings: &WebhookSinkSettings) -> Result<Self, WebhookError> {
        let client = Client::builder()
            .timeout(settings.timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .default_headers(settings.headers.clone())
            .build()
            .map_err(|source| WebhookError::Client {
                name: settings.name.clone(),
                source,
            })?;
        Ok(WebhookSink {
            name: settings.name.clone(),
            url: settings.url.clone(),
            secret: settings.secret.clone(),
            client,
        })
    }

    /// The sink's name (its id in the store and in logs).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Transport for WebhookSink {
    fn describe(&self) -> String {
        format!("webhook {}", self.name)
    }

    async fn deliver(&self, batch: &Batch) -> Verdict {
        let body = batch.json_array();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(BATCH_HEADER, batch.id.as_str());
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, sign(secret.expose().as_bytes(), &body));
        }
        match request.body(body).send().await {
            Ok(mut response) => {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let verdict = retry::classify(
                    Attempt::Answered {
                        status: response.status().as_u16(),
                        retry_after: retry_after.as_deref(),
                    },
                    SystemTime::now(),
                );
                let answer = read_head(&mut response).await;
                with_excerpt(verdict, &answer)
            }
            Err(error) => retry::classify(attempt_of(&error), SystemTime::now()),
        }
    }
}

/// The `X-Herald-Signature` value: `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed
/// with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of every length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a failed request (no answer) was, for [`retry::classify`].
fn attempt_of(error: &reqwest::Error) -> Attempt<'static> {
    if error.is_timeout() {
        Attempt::TimedOut
    } else if error.is_connect() {
        Attempt::ConnectFailed(causes(error))
    } else {
        Attempt::OtherError(causes(error))
    }
}

/// The causes of `error`, outermost first, joined by `: `. reqwest's own message names the URL,
/// so it is left out unless there is nothing else to say.
fn causes(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        // Only reached for errors without a cause (e.g. a bad header), whose text names no URL
        // once it is stripped.
        return error.to_string();
    }
    parts.join(": ")
}

/// Up to [`BODY_READ_LIMIT`] bytes of the answer's body; whatever arrived before an error.
async fn read_head(response: &mut reqwest::Response) -> Vec<u8> {
    let mut head = Vec::new();
    while head.len() < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    head
}

/// Appends an excerpt of the answer to the reason of a retry or a dead letter.
fn with_excerpt(verdict: Verdict, answer: &[u8]) -> Verdict {
    let excerpt = excerpt(answer);
    if excerpt.is_empty() {
        return verdict;
    }
    match verdict {
        Verdict::Delivered => Verdict::Delivered,
        Verdict::Retry { after, reason } => Verdict::Retry {
            after,
            reason: format!("{reason}: {excerpt}"),
        },
        Verdict::DeadLetter { reason } => Verdict::DeadLetter {
            reason: format!("{reason}: {excerpt}"),
        },
    }
}

/// At most [`EXCERPT_CHARS`] characters of `body` on one line: invalid UTF-8 replaced, control
/// characters (newlines, tabs, escape sequences) turned into spaces, runs of spaces squeezed, `…`
/// marking a cut.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    let line = words.join(" ");
    if line.chars().count() <= EXCERPT_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(EXCERPT_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use reqwest::header::{HeaderMap, HeaderName, AUTHORIZATION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::outbox::QueuedEvent;

    const KEY: &str = "hook-key";
    const TOKEN: &str = "Bearer t0ken";

    /// A request as the test server received it; header names lowercase.
    #[derive(Debug)]
    struct Received {
        request_line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// The scripted answer of the test server.
    #[derive(Clone)]
    enum Reply {
        /// Status, extra headers, body.
        Answer(u16, Vec<(&'static str, &'static str)>, String),
        /// Read the request, then never answer.
        Silence,
    }

    fn answer(status: u16, body: &str) -> Reply {
        Reply::Answer(status, vec![], body.to_owned())
    }

    /// A one-connection-at-a-time HTTP/1.1 server on `127.0.0.1:0` that gives `reply` to every
    /// request and reports each request on the returned channel.
    async fn server(reply: Reply) -> (SocketAddr, mpsc::Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        // Test server → test: one message per request; the tests send a handful.
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, reply) = (tx.clone(), reply.clone());
                tokio::spawn(serve(stream, reply, tx));
            }
        });
        (addr, rx)
    }

    async fn serve(mut stream: TcpStream, reply: Reply, tx: mpsc::Sender<Received>) {
        while let Some(request) = read_request(&mut stream).await {
            let _ = tx.send(request).await;
            let (status, headers, body) = match &reply {
                Reply::Answer(status, headers, body) => (status, headers, body),
                Reply::Silence => {
                    // Hold the connection open without answering.
                    let _ = stream.read(&mut [0; 1]).await;
                    return;
                }
            };
            let mut head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(body.as_bytes()).await.is_err()
            {
                return;
            }
        }
    }

    /// Reads the request line, the headers and a `content-length` body; `None` at end of stream.
    async fn read_request(stream: &mut TcpStream) -> Option<Received> {
        let mut buf = Vec::new();
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let request_line = lines.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let mut body = buf[end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Received {
            request_line,
            headers,
            body,
        })
    }

    fn settings(addr: SocketAddr, secret: Option<&str>) -> WebhookSinkSettings {
        let mut headers = HeaderMap::new();
        let mut token = HeaderValue::from_static(TOKEN);
        token.set_sensitive(true);
        headers.insert(AUTHORIZATION, token);
        headers.insert(
            HeaderName::from_static("x-tenant"),
            HeaderValue::from_static("blue"),
        );
        WebhookSinkSettings {
            url: Url::parse(&format!("http://{addr}/hooks/presence")).expect("url"),
            name: "game".to_owned(),
            secret: secret.map(|s| Secret::new(s.to_owned())),
            headers,
            timeout: Duration::from_millis(500),
            batch_max: 500,
            batch_delay: Duration::ZERO,
            max_backlog: 1_000,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }

    fn batch() -> Batch {
        Batch {
            id: "41-42".to_owned(),
            events: vec![
                QueuedEvent {
                    seq: 41,
                    json: br#"{"seq":41,"type":"PRESENCE_DID_CHANGE"}"#.as_slice().into(),
                },
                QueuedEvent {
                    seq: 42,
                    json: br#"{"seq":42,"type":"PRESENCE_DID_CHANGE"}"#.as_slice().into(),
                },
            ],
        }
    }

    async fn deliver_to(reply: Reply) -> (Verdict, Option<Received>) {
        let (addr, mut requests) = server(reply).await;
        let sink = WebhookSink::new(&settings(addr, Some(KEY))).expect("sink");
        let verdict = sink.deliver(&batch()).await;
        (verdict, requests.try_recv().ok())
    }

    #[test]
    fn sign_matches_rfc_4231_test_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn posts_the_signed_json_array_with_the_batch_id_and_extra_headers() {
        let (verdict, request) = deliver_to(answer(200, "")).await;
        assert_eq!(verdict, Verdict::Delivered);
        let request = request.expect("a request");
        assert_eq!(request.request_line, "POST /hooks/presence HTTP/1.1");
        let events: Vec<serde_json::Value> =
            serde_json::from_slice(&request.body).expect("a JSON array");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["seq"], 41);
        assert_eq!(events[1]["seq"], 42);
        assert_eq!(request.body, batch().json_array());
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header(BATCH_HEADER), Some("41-42"));
        let expected = sign(KEY.as_bytes(), &request.body);
        assert_eq!(request.header(SIGNATURE_HEADER), Some(expected.as_str()));
        assert_eq!(request.header("authorization"), Some(TOKEN));
        assert_eq!(request.header("x-tenant"), Some("blue"));
        assert_eq!(request.header("user-agent"), Some(USER_AGENT));
    }

    #[tokio::test]
    async fn without_a_secret_requests_are_not_signed() {
        let (addr, mut requests) = server(answer(204, "")).await;
        let sink = WebhookSink::new(&settings(addr, None)).expect("sink");
        assert_eq!(sink.deliver(&batch()).await, Verdict::Delivered);
        let request = requests.try_recv().expect("a request");
        assert_eq!(request.header(SIGNATURE_HEADER), None);
        assert_eq!(request.header(BATCH_HEADER), Some("41-42"));
    }

    #[tokio::test]
    async fn retries_keep_the_batch_id() {
        let (addr, mut requests) = server(answer(503, "")).await;
        let sink = WebhookSink::new(&settings(addr, Some(KEY))).expect("sink");
        let batch = batch();
        for _ in 0..2 {
            assert!(matches!(sink.deliver(&batch).await, Verdict::Retry { .. }));
        }
        let first = requests.try_recv().expect("first request");
        let second = requests.try_recv().expect("second request");
        assert_eq!(first.header(BATCH_HEADER), Some("41-42"));
        assert_eq!(second.header(BATCH_HEADER), first.header(BATCH_HEADER));
        assert_eq!(
            second.header(SIGNATURE_HEADER),
            first.header(SIGNATURE_HEADER)
        );
    }

    #[tokio::test]
    async fn server_error_is_retried_with_the_answer_in_the_reason() {
        let (verdict, _) = deliver_to(answer(500, "database\nis down")).await;
        assert_eq!(
            verdict,
            Verdict::Retry {
                after: None,
                reason: "HTTP 500 Internal Server Error: database is down".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn too_many_requests_honours_retry_after() {
        let reply = Reply::Answer(429, vec![("retry-after", "2")], String::new());
        let (verdict, _) = deliver_to(reply).await;
        assert_eq!(
            verdict,
            Verdict::Retry {
                after: Some(Duration::from_secs(2)),
                reason: "HTTP 429 Too Many Requests".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn bad_request_is_a_dead_letter_with_an_excerpt_of_the_answer() {
        let body = format!("{{\"error\":\"unknown field\"}}\n{}", "x".repeat(500));
        let (verdict, _) = deliver_to(answer(400, &body)).await;
        let Verdict::DeadLetter { reason } = verdict else {
            panic!("expected a dead letter, got {verdict:?}");
        };
        let excerpt = reason
            .strip_prefix("HTTP 400 Bad Request: ")
            .unwrap_or_else(|| panic!("{reason}"));
        assert!(
            excerpt.starts_with("{\"error\":\"unknown field\"} xxx"),
            "{excerpt}"
        );
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS);
        assert!(excerpt.ends_with('…'), "{excerpt}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let reply = Reply::Answer(302, vec![("location", "/elsewhere")], String::new());
        let (verdict, _) = deliver_to(reply).await;
        assert_eq!(
            verdict,
            Verdict::DeadLetter {
                reason: "HTTP 302 Found".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_is_retried_after_the_timeout() {
        let started = tokio::time::Instant::now();
        let (verdict, request) = deliver_to(Reply::Silence).await;
        assert!(request.is_some(), "the request was sent");
        assert_eq!(
            verdict,
            Verdict::Retry {
                after: None,
                reason: "timed out".to_owned()
            }
        );
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let sink = WebhookSink::new(&settings(addr, Some(KEY))).expect("sink");
        let verdict = sink.deliver(&batch()).await;
        let Verdict::Retry {
            after: None,
            reason,
        } = verdict
        else {
            panic!("expected a retry, got {verdict:?}");
        };
        assert!(reason.starts_with("connection failed: "), "{reason}");
        assert!(!reason.contains("127.0.0.1"), "no URL in {reason}");
    }

    #[test]
    fn describe_names_the_sink_only() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let sink = WebhookSink::new(&settings(addr, Some(KEY))).expect("sink");
        assert_eq!(sink.describe(), "webhook game");
        assert_eq!(sink.name(), "game");
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt(b""), "");
        assert_eq!(excerpt(b"  \r\n"), "");
        assert_eq!(excerpt(b"a\r\n\tb  \x1b[31mc"), "a b [31mc");
        assert_eq!(excerpt(&[b'o', b'k', 0xff]), "ok\u{fffd}");
        let exact = "y".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(exact.as_bytes()), exact);
        let long = excerpt("é".repeat(EXCERPT_CHARS + 1).as_bytes());
        assert_eq!(long.chars().count(), EXCERPT_CHARS);
        assert!(long.ends_with("é…"));
    }
}
