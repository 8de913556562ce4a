//! Fuzzes the component stream's reading path exactly as the connection runs it: tokio-xmpp's
//! `XmlStream<_, herald::xmpp::inbound::Stanza>` over herald's `GuardedReader`, then
//! `herald::xmpp::router::classify` on every stanza read.
//!
//! Input: byte 0 picks the size of the pieces the bytes arrive in, byte 1 picks the limits
//! (tiny ones make every limit reachable with short inputs), the rest is what the server sends
//! after its stream header (the footer is appended).
//!
//! Checked, besides "no panic, no stack overflow, no hang":
//! - every element handed over is within the limits (depth, children, elements, attributes,
//!   value and name sizes);
//! - the guarded stream never ends on a parser restriction rxml would end a stream on (token
//!   length, comments, processing instructions) nor on text between stanzas;
//! - when nothing was rejected and the unguarded reader (tokio's `BufReader`) reads the same
//!   bytes to the footer, both read the same stanzas;
//! - when a stanza ends the guarded stream, reading the same bytes again with the same poison
//!   memory gets past it.

#![no_main]

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts};

use herald::xmpp::inbound::Stanza;
use herald::xmpp::limits::{Limits, MAX_DEPTH};
use herald::xmpp::reader::{GuardedReader, PoisonMemory};
use herald::xmpp::router::classify;

const NS_COMPONENT: &str = "jabber:component:accept";
const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='herald.localhost'>";
const FOOTER: &[u8] = b"</stream:stream>";

/// The server's bytes, handed out `chunk` at a time; writes are dropped.
struct Server {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl AsyncRead for Server {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, PartialEq)]
enum End {
    Footer,
    Eof,
    Hard(String),
    Parse(String),
}

struct Run {
    stanzas: Vec<Stanza>,
    end: End,
}

async fn read<Io: AsyncBufRead + AsyncWrite + Unpin>(io: Io) -> Run {
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(3600),
    };
    let header = StreamHeader {
        to: Some(Cow::Borrowed("herald.localhost")),
        from: None,
        id: None,
    };
    let mut pending = match initiate_stream(io, NS_COMPONENT, header, timeouts).await {
        Ok(p) => p,
        Err(e) => {
            return Run {
                stanzas: Vec::new(),
                end: End::Hard(e.to_string()),
            }
        }
    };
    let _ = pending.take_header();
    let mut stream = pending.skip_features::<Stanza>();
    let mut stanzas = Vec::new();
    let end = loop {
        match stream.next().await {
            Some(Ok(s)) => {
                // The router must take anything the reader hands over.
                let _ = classify(&s);
                stanzas.push(s);
            }
            Some(Err(ReadError::StreamFooterReceived)) => break End::Footer,
            Some(Err(ReadError::HardError(e))) => break End::Hard(e.to_string()),
            Some(Err(ReadError::ParseError(e))) => break End::Parse(e.to_string()),
            Some(Err(ReadError::SoftTimeout)) => continue,
            None => break End::Eof,
        }
    };
    Run { stanzas, end }
}

fn tiny() -> Limits {
    Limits {
        max_depth: 6,
        max_name_bytes: 24,
        max_attr_value_bytes: 48,
        max_attrs: 6,
        max_children: 8,
        max_elements: 40,
        max_text_bytes: 64,
        max_stanza_bytes: 4096,
    }
}

/// Every element within `limits` (sizes are decoded here, so never above the raw ones).
fn check_element(el: &minidom::Element, limits: &Limits) {
    let mut elements = 0usize;
    let mut stack = vec![(el, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        elements += 1;
        assert!(depth <= limits.max_depth.min(MAX_DEPTH), "depth {depth}");
        assert!(e.name().len() <= limits.max_name_bytes, "name size");
        assert!(e.attrs().len() <= limits.max_attrs, "attributes");
        for ((_, name), value) in e.attrs().iter() {
            assert!(
                name.as_str().len() <= limits.max_name_bytes,
                "attribute name size"
            );
            assert!(value.len() <= limits.max_attr_value_bytes, "value size");
        }
        let children: Vec<_> = e.children().collect();
        assert!(children.len() <= limits.max_children, "children");
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    assert!(elements <= limits.max_elements, "elements");
}

fn restricted(end: &End) -> bool {
    match end {
        End::Hard(e) => {
            e.contains("restricted xml") || e.contains("non-whitespace text content before XSO")
        }
        _ => false,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let (chunk, limits, body) = match data {
        [c, l, rest @ ..] => (
            1 + *c as usize % 97 + if *c >= 200 { 1 << 16 } else { 0 },
            if l & 1 == 1 {
                tiny()
            } else {
                Limits::default()
            },
            rest,
        ),
        _ => return,
    };
    let mut all = HEADER.to_vec();
    all.extend_from_slice(body);
    all.extend_from_slice(FOOTER);
    let server = |chunk| Server {
        data: all.clone(),
        at: 0,
        chunk,
    };
    runtime().block_on(async {
        let poison = PoisonMemory::new();
        let guarded = read(GuardedReader::with_capacity(
            1024,
            server(chunk),
            limits,
            poison.clone(),
        ))
        .await;
        for s in &guarded.stanzas {
            if let Stanza::Other(el) = s {
                check_element(el, &limits);
            }
        }
        assert!(!restricted(&guarded.end), "{:?}", guarded.end);

        let rejected = guarded
            .stanzas
            .iter()
            .any(|s| matches!(s, Stanza::Rejected(_)));
        let plain = read(BufReader::with_capacity(1024, server(chunk))).await;
        if !rejected && plain.end == End::Footer {
            assert_eq!(guarded.end, End::Footer);
            assert_eq!(
                format!("{:?}", guarded.stanzas),
                format!("{:?}", plain.stanzas)
            );
        }

        if !poison.is_empty() {
            let again = read(GuardedReader::with_capacity(
                1024,
                server(chunk),
                limits,
                poison.clone(),
            ))
            .await;
            assert!(
                again.stanzas.len() > guarded.stanzas.len() || again.end != guarded.end,
                "the poisoned stanza ended the stream again: {:?}",
                again.end
            );
        }
    });
});
