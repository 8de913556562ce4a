//! A scriptable HTTP/1.1 webhook endpoint for integration tests, written with tokio only.
//!
//! [`WebhookReceiver::start`] listens on `127.0.0.1:0` (with `SO_REUSEADDR`, so the same port can
//! be bound again after [`WebhookReceiver::go_down`]). Every request (request line, headers, a
//! `Content-Length` body) is recorded as a [`Request`] with its arrival time and what the receiver
//! did with it, *before* the answer is written. Answers come from a queue ([`WebhookReceiver::script`])
//! and then from a default ([`WebhookReceiver::set_default`], initially `200`):
//!
//! - [`Reply::status`]: a status, optional headers (e.g. `Retry-After`) and body;
//! - [`Reply::Hang`]: never answer (the client's timeout fires; the connection is kept until the
//!   client closes it);
//! - [`Reply::Close`]: close the connection without answering.
//!
//! "Connection refused" is a state, not a reply: [`WebhookReceiver::go_down`] drops the listener
//! and every open (keep-alive) connection, [`WebhookReceiver::come_up`] binds the same port again.
//! A request that still reaches the receiver while it is down (a race on a connection being torn
//! down) is recorded as [`Answer::Dropped`] and never answered.
//!
//! With [`WebhookReceiver::set_secret`] the receiver checks `X-Herald-Signature: sha256=<hex
//! HMAC-SHA256(secret, body)>` on every request like a real endpoint would (its own HMAC, not
//! herald's), records the outcome in [`Request::signature_valid`], and answers `401` to a bad one.
//!
//! For long runs (the benchmarks in `examples/`), [`WebhookReceiver::observe`] hands every request
//! to a callback as it is recorded, and [`WebhookReceiver::keep_bodies`]`(false)` records requests
//! without their bodies, so that memory stays flat however many events arrive.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Largest request head (request line + headers) the receiver accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body the receiver accepts.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the receiver does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer with `status`, extra `headers` and `body` (a `Content-Length` is always added).
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Never answer; keep the connection open until the client gives up and closes it.
    Hang,
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// `status` with no extra header and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header to an [`Reply::Answer`] (ignored for the others).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Answer { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Sets the body of an [`Reply::Answer`] (ignored for the others).
    pub fn body(mut self, text: &str) -> Reply {
        if let Reply::Answer { body, .. } = &mut self {
            *body = text.to_owned();
        }
        self
    }

    fn answer(&self) -> Answer {
        match self {
            Reply::Answer { status, .. } => Answer::Status(*status),
            Reply::Hang => Answer::Hang,
            Reply::Close => Answer::Close,
        }
    }
}

/// What the receiver did with a recorded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    Hang,
    Close,
    /// It arrived while the receiver was going down: not answered.
    Dropped,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Position among every request this receiver got (0-based).
    pub index: usize,
    /// Which TCP connection carried it (counted from 0 over the receiver's life).
    pub conn: u64,
    /// When its last body byte had been read.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Empty once recorded if bodies are not kept (see [`WebhookReceiver::keep_bodies`]).
    pub body: Vec<u8>,
    pub answer: Answer,
    /// `Some(valid)` when a secret was set (see [`WebhookReceiver::set_secret`]).
    pub signature_valid: Option<bool>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as a JSON array of events; panics (with the body) if it is not one.
    pub fn events(&self) -> Vec<Value> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Array(events)) => events,
            other => panic!(
                "request #{} body is not a JSON array ({other:?}): {}",
                self.index,
                String::from_utf8_lossy(&self.body)
            ),
        }
    }

    /// The `seq` of every event of the body, in body order.
    pub fn seqs(&self) -> Vec<u64> {
        self.events()
            .iter()
            .map(|e| {
                e["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("event without a numeric seq: {e}"))
            })
            .collect()
    }

    /// `X-Herald-Batch`.
    pub fn batch_id(&self) -> Option<&str> {
        self.header("x-herald-batch")
    }

    /// Answered with a 2xx: the batch counts as accepted by the endpoint.
    pub fn accepted(&self) -> bool {
        matches!(self.answer, Answer::Status(s) if (200..300).contains(&s))
    }

    /// Whether `X-Herald-Signature` is `sha256=<hex HMAC-SHA256(secret, body)>`.
    pub fn signature_ok(&self, secret: &[u8]) -> bool {
        signature_matches(secret, &self.body, self.header("x-herald-signature"))
    }
}

/// Checks a signature header against the body, in constant time (as an endpoint should).
pub fn signature_matches(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_mac) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    // Lowercase hex is the contract: reject anything else.
    if hex_mac.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let Ok(mac_bytes) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&mac_bytes).is_ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called with every request, on its connection's task, as it is recorded (before it is answered).
pub type Observer = Arc<dyn Fn(&Request) + Send + Sync>;

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    secret: Mutex<Option<Vec<u8>>>,
    observer: Mutex<Option<Observer>>,
    keep_bodies: AtomicBool,
    requests: Mutex<Vec<Request>>,
    /// Bumped after every recorded request.
    changed: watch::Sender<usize>,
    /// Set while the receiver is down (between `go_down` and `come_up`).
    down: AtomicBool,
    next_conn: AtomicU64,
}

impl Shared {
    fn next_reply(&self) -> Reply {
        let queued = lock(&self.script).pop_front();
        queued.unwrap_or_else(|| lock(&self.default).clone())
    }
}

/// The listener and its connections, while up.
struct Running {
    stop: CancellationToken,
    acceptor: JoinHandle<()>,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(r) = self.running.get_mut().take() {
            r.stop.cancel();
            r.acceptor.abort();
        }
    }
}

impl WebhookReceiver {
    /// Listens on `127.0.0.1:0`; answers 200 until scripted otherwise.
    pub async fn start() -> WebhookReceiver {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind the webhook receiver on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::status(200)),
            secret: Mutex::new(None),
            observer: Mutex::new(None),
            keep_bodies: AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
            changed,
            down: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
        });
        let running = spawn_acceptor(listener, shared.clone());
        WebhookReceiver {
            addr,
            shared,
            running: tokio::sync::Mutex::new(Some(running)),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues the answer to the next unscripted request.
    pub fn script(&self, reply: Reply) {
        lock(&self.shared.script).push_back(reply);
    }

    /// Queues several answers, in order.
    pub fn script_all(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.script).extend(replies);
    }

    /// Drops the queued answers that were not used yet.
    pub fn clear_script(&self) {
        lock(&self.shared.script).clear();
    }

    /// The answer once the queue is empty (initially `200`).
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.shared.default) = reply;
    }

    /// Verify `X-Herald-Signature` with `secret` from now on (answer 401 to a bad signature).
    pub fn set_secret(&self, secret: &[u8]) {
        *lock(&self.shared.secret) = Some(secret.to_vec());
    }

    /// Hands every request from now on to `observer` (see [`Observer`]), replacing an earlier one.
    pub fn observe(&self, observer: impl Fn(&Request) + Send + Sync + 'static) {
        *lock(&self.shared.observer) = Some(Arc::new(observer));
    }

    /// Whether requests are recorded with their bodies (initially true). The observer always
    /// gets the body.
    pub fn keep_bodies(&self, keep: bool) {
        self.shared.keep_bodies.store(keep, Ordering::SeqCst);
    }

    /// Stops listening and closes every open connection: from now on connecting is refused.
    pub async fn go_down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        let running = self.running.lock().await.take();
        if let Some(r) = running {
            r.stop.cancel();
            r.acceptor.abort();
            // Once the acceptor is gone, so is the listening socket.
            let _ = r.acceptor.await;
        }
    }

    /// Listens again on the same port (retrying for a while if the port is briefly busy).
    pub async fn come_up(&self) {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "webhook receiver: re-binding {} failed ({e}); retrying",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot re-bind the webhook receiver on {}: {e}", self.addr),
            }
        };
        self.shared.down.store(false, Ordering::SeqCst);
        *running = Some(spawn_acceptor(listener, self.shared.clone()));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// The events of every accepted (2xx) request, in arrival order (duplicates included).
    pub fn accepted_events(&self) -> Vec<Value> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.accepted())
            .flat_map(Request::events)
            .collect()
    }

    /// Waits until `pred` holds on the requests so far; false after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Request]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.shared.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if pred(&lock(&self.shared.requests)) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `shared`, which we hold: only a timeout ends the wait.
                Ok(Err(_)) | Err(_) => return pred(&lock(&self.shared.requests)),
            }
        }
    }

    /// Waits until the accepted events hold `n` distinct `seq`s; false after `timeout`.
    pub async fn wait_for_accepted_seqs(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |reqs| {
            let mut seqs: Vec<u64> = reqs
                .iter()
                .filter(|r| r.accepted())
                .flat_map(Request::seqs)
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            seqs.len() >= n
        })
        .await
    }

    /// Waits until no request has arrived for `quiet` (e.g. to check that nothing more comes).
    pub async fn wait_quiet(&self, quiet: Duration) {
        let mut changed = self.shared.changed.subscribe();
        changed.borrow_and_update();
        while let Ok(Ok(())) = tokio::time::timeout(quiet, changed.changed()).await {
            changed.borrow_and_update();
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so that the port can be bound again right after the
/// previous listener on it was closed (its connections may linger in TIME_WAIT).
async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn spawn_acceptor(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let stop = CancellationToken::new();
    let acceptor = tokio::spawn({
        let stop = stop.clone();
        async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.cancelled() => return,
                };
                match accepted {
                    Ok((socket, _)) => {
                        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                        let (shared, stop) = (shared.clone(), stop.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = serve(shared, socket, id) => {}
                                // Dropping the connection's future closes its socket.
                                _ = stop.cancelled() => {}
                            }
                        });
                    }
                    Err(e) => {
                        eprintln!("webhook receiver: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    });
    Running { stop, acceptor }
}

/// Serves one keep-alive connection: request after request until the client closes it.
async fn serve(shared: Arc<Shared>, socket: TcpStream, conn: u64) {
    let _ = socket.set_nodelay(true);
    let (rd, mut wr) = socket.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let head = match read_head(&mut rd).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => return eprintln!("webhook receiver: bad request on connection {conn}: {e}"),
        };
        let length = head
            .headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.trim().parse::<usize>());
        let length = match length {
            None => 0,
            Some(Ok(n)) if n <= MAX_BODY => n,
            Some(_) => {
                return eprintln!("webhook receiver: bad Content-Length on connection {conn}")
            }
        };
        if head
            .headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && !v.eq_ignore_ascii_case("identity"))
        {
            return eprintln!(
                "webhook receiver: chunked bodies are not supported (connection {conn})"
            );
        }
        let mut body = vec![0; length];
        if let Err(e) = rd.read_exact(&mut body).await {
            return eprintln!("webhook receiver: body cut short on connection {conn}: {e}");
        }
        let at = Instant::now();

        let secret = lock(&shared.secret).clone();
        let signature_valid = secret.as_ref().map(|s| {
            let header = head
                .headers
                .iter()
                .find(|(n, _)| n == "x-herald-signature")
                .map(|(_, v)| v.as_str());
            signature_matches(s, &body, header)
        });
        let reply = if shared.down.load(Ordering::SeqCst) {
            None
        } else if signature_valid == Some(false) {
            Some(Reply::status(401).body("bad X-Herald-Signature"))
        } else {
            Some(shared.next_reply())
        };
        let answer = reply.as_ref().map_or(Answer::Dropped, Reply::answer);
        let close_requested = head
            .headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        {
            let observer = lock(&shared.observer).clone();
            let mut requests = lock(&shared.requests);
            let index = requests.len();
            let mut request = Request {
                index,
                conn,
                at,
                method: head.method,
                path: head.path,
                headers: head.headers,
                body,
                answer,
                signature_valid,
            };
            if let Some(observe) = observer {
                observe(&request);
            }
            if !shared.keep_bodies.load(Ordering::SeqCst) {
                request.body = Vec::new();
            }
            requests.push(request);
            shared.changed.send_replace(index + 1);
        }
        match reply {
            None | Some(Reply::Close) => return,
            Some(Reply::Hang) => {
                // Keep the socket open, reading (and ignoring) until the client closes it.
                let mut sink = [0u8; 1024];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Some(Reply::Answer {
                status,
                headers,
                body,
            }) => {
                let reason = reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Whatever");
                let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
                for (n, v) in &headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str(&format!(
                    "content-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                ));
                if wr.write_all(out.as_bytes()).await.is_err() || close_requested {
                    return;
                }
            }
        }
    }
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// Reads a request line and headers; `None` at a clean end of the connection.
async fn read_head(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    let mut total = 0;
    // Tolerate empty lines before a request (RFC 9112 §2.2).
    loop {
        line.clear();
        let n = rd.read_line(&mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("unsupported version in {line:?}")));
    }
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = rd.read_line(&mut line).await?;
        total += n;
        if n == 0 {
            return Err(invalid("connection closed inside the request head"));
        }
        if total > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(invalid(format!("bad header line {text:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        method,
        path,
        headers,
    }))
}

fn invalid(e: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
