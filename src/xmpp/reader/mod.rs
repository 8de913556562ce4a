//! The component stream's byte reader: every stanza is checked against herald's [`Limits`]
//! before the XML parser sees any of it.
//!
//! tokio-xmpp's `XmlStream` parses with rxml at its default options, which herald cannot
//! change: a name or attribute value over 8 KiB ends the stream, and the server sends the same
//! presence again in its snapshot after the reconnect. Deep nesting is just as dangerous further
//! on (building and dropping a tree recurses once per level). So [`GuardedReader`] sits under
//! the parser, as its `AsyncBufRead`:
//!
//! - It scans the bytes with a small state machine that follows XML's structure (tags, quoted
//!   values, text, CDATA, comments, processing instructions) and holds each top-level element
//!   back until its end tag has arrived and it has passed every limit. Only then does the
//!   parser get it, in one piece.
//! - A stanza over a limit is dropped as it is scanned (its bytes are not kept) and replaced by
//!   one empty element the stanza builder turns into
//!   [`Stanza::Rejected`](super::inbound::Stanza::Rejected): the stanza's own start tag if that
//!   is within the limits, with an attribute `{urn:x-herald:rejected}limit` added and closed
//!   with `/>`, else `<herald-rejected:stanza …/>` with just that attribute. The stream goes on.
//! - Between stanzas, it blanks anything but whitespace (text, comments…) that would otherwise
//!   make tokio-xmpp or rxml end the stream.
//! - A stanza that passes the scan but still makes the parser fail (what the scan does not
//!   check: characters, entities, namespace prefixes, duplicate attributes) ends the stream as
//!   before. The reader then remembers its bytes in a [`PoisonMemory`] that outlives the
//!   connection; on the next connections, a stanza with the same bytes is replaced by a
//!   rejection (limit [`UNPARSEABLE`](super::limits::UNPARSEABLE)) instead, so the server
//!   re-sending it can end at most one more stream (its snapshot copy differs from the live
//!   one), never loop.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use super::limits::Limits;

/// The namespace of the marker attribute on a rejection element.
pub const NS_REJECTED: &str = "urn:x-herald:rejected";
/// The marker attribute's local name; its value is the name of the limit.
pub const REJECTED_ATTR: &str = "limit";
/// The prefix the reader binds to [`NS_REJECTED`].
const PREFIX: &[u8] = b"herald-rejected";

/// How much the reader asks the socket for at a time, by default.
pub const DEFAULT_READ_SIZE: usize = 64 * 1024;

mod poison;
mod scan;
#[cfg(test)]
mod tests;

pub use poison::PoisonMemory;
use scan::Guard;

/// module documentation). Writes pass through to `R` unchanged.
pub struct GuardedReader<R> {
    inner: R,
    guard: Guard,
    read_size: usize,
    eof: bool,
}

impl<R> GuardedReader<R> {
    /// Reads from `inner` in pieces of up to [`DEFAULT_READ_SIZE`].
    pub fn new(inner: R, limits: Limits, poison: PoisonMemory) -> Self {
        Self::with_capacity(DEFAULT_READ_SIZE, inner, limits, poison)
    }

    /// Reads from `inner` in pieces of up to `read_size` bytes.
    pub fn with_capacity(read_size: usize, inner: R, limits: Limits, poison: PoisonMemory) -> Self {
        let read_size = read_size.max(512);
        GuardedReader {
            inner,
            guard: Guard::new(limits, poison, read_size),
            read_size,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for GuardedReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        // The parser is back for more: it read every element it finished without failing.
        this.guard.parser_returned();
        loop {
            if this.guard.has_released() {
                return Poll::Ready(Ok(this.guard.released()));
            }
            if this.guard.has_unscanned() {
                this.guard.scan();
                continue;
            }
            if this.eof {
                // Whatever is held goes to the parser, which reports the truncated element.
                this.guard.release_all();
                if this.guard.has_released() {
                    continue;
                }
                return Poll::Ready(Ok(&[]));
            }
            let spare = this.guard.spare(this.read_size);
            let mut rb = ReadBuf::new(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                this.eof = true;
            } else {
                this.guard.filled(n);
            }
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().guard.consume(amt);
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for GuardedReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncWrite + Unpin> AsyncWrite for GuardedReader<R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
