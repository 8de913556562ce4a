//! Logging in: TCP connect, stream header, `<handshake>` = hex(sha1(stream id + secret)) (done
//! by tokio-xmpp), and the server's answer. Once logged in, the socket's write half goes to the
//! connection's writer task; tokio-xmpp's stream keeps the read half.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

use crate::config::ComponentSettings;
use crate::xmpp::inbound::Stanza;
use crate::xmpp::limits::Limits;
use crate::xmpp::reader::{GuardedReader, PoisonMemory};
use crate::xmpp::router::{classify, Inbound};
use crate::xmpp::stanza::NS_COMPONENT;

pub(super) type Stream = XmlStream<LoginIo, Stanza>;

/// The reader's buffer: one read takes up to this much of what the server has sent.
const READ_BUFFER: usize = 64 * 1024;

/// Why one login attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoginError {
    #[error("the server rejected the handshake: {condition}{text}")]
    Rejected { condition: String, text: String },
    #[error("component name already connected (conflict{text}): another herald or component is using this name")]
    Conflict { text: String },
    #[error("{0}")]
    Io(String),
}

/// Connects and logs in; returns the stream (for reading) and the socket's write half.
pub(super) async fn login(
    settings: &ComponentSettings,
) -> Result<(Stream, OwnedWriteHalf), LoginError> {
    let timeouts = Timeouts {
        read_timeout: settings.read_timeout,
        response_timeout: settings.request_timeout,
    };
    let tcp = TcpStream::connect(settings.server.as_str())
        .await
        .map_err(|e| LoginError::Io(e.to_string()))?;
    // herald gathers its writes itself (see `write_loop`).
    let _ = tcp.set_nodelay(true);
    let (rd, wr) = tcp.into_split();
    let write_slot = Arc::new(Mutex::new(Some(wr)));
    let io = LoginIo {
        rd: GuardedReader::with_capacity(
            READ_BUFFER,
            rd,
            Limits::new(settings.max_stanza_bytes),
            PoisonMemory::global(),
        ),
        wr: write_slot.clone(),
    };
    let header = StreamHeader {
        to: Some(Cow::Borrowed(settings.jid.as_str())),
        from: None,
        id: None,
    };
    let mut pending = initiate_stream(io, NS_COMPONENT, header, timeouts)
        .await
        .map_err(|e| LoginError::Io(e.to_string()))?;
    let header = pending.take_header();
    let stream_id = header
        .id
        .ok_or_else(|| LoginError::Io("the server sent no stream id".into()))?;
    let mut stream: Stream = pending.skip_features();
    let handshake =
        Handshake::from_stream_id_and_password(stream_id.into_owned(), settings.secret.expose());
    stream
        .send(&handshake)
        .await
        .map_err(|e| LoginError::Io(e.to_string()))?;
    loop {
        match stream.next().await {
            Some(Ok(Stanza::Other(el))) if el.name() == "handshake" && el.ns() == NS_COMPONENT => {
                let write_half = lock(&write_slot)
                    .take()
                    .ok_or_else(|| LoginError::Io("the socket's write half is gone".into()))?;
                return Ok((stream, write_half));
            }
            Some(Ok(stanza)) => {
                return Err(match classify(&stanza) {
                    Inbound::StreamError { condition, text } => {
                        let text = text.map(|t| format!(": {t}")).unwrap_or_default();
                        if condition == "conflict" {
                            LoginError::Conflict { text }
                        } else {
                            LoginError::Rejected { condition, text }
                        }
                    }
                    _ => {
                        LoginError::Io(format!("unexpected {} during handshake", describe(&stanza)))
                    }
                })
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(LoginError::Io(e.to_string())),
            None => return Err(LoginError::Io("the server closed the stream".into())),
        }
    }
}

/// The login I/O of tokio-xmpp's stream: reads through herald's limit-checking reader; writes go
/// to the socket's write half, which the writer task takes over once the handshake is done.
pub(super) struct LoginIo {
    rd: GuardedReader<OwnedReadHalf>,
    wr: Arc<Mutex<Option<OwnedWriteHalf>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_half_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the writer task owns the socket")
}

impl AsyncRead for LoginIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.rd).poll_read(cx, buf)
    }
}

impl AsyncBufRead for LoginIo {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().rd).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.rd).consume(amt)
    }
}

impl AsyncWrite for LoginIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.wr).as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(write_half_gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.wr).as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Err(write_half_gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.wr).as_mut() {
            Some(w) => Pin::new(w).poll_shutdown(cx),
            None => Poll::Ready(Err(write_half_gone())),
        }
    }
}

/// `<name/>` of a stanza, for messages.
fn describe(stanza: &Stanza) -> String {
    match stanza {
        Stanza::Presence(_) => "<presence/>".into(),
        Stanza::Other(el) => format!("<{}/>", el.name()),
        Stanza::Rejected(r) => format!("rejected stanza ({})", r.limit),
    }
}
