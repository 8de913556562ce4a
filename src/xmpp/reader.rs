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

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

use super::limits::{self, Limits};

/// The namespace of the marker attribute on a rejection element.
pub const NS_REJECTED: &str = "urn:x-herald:rejected";
/// The marker attribute's local name; its value is the name of the limit.
pub const REJECTED_ATTR: &str = "limit";
/// The prefix the reader binds to [`NS_REJECTED`].
const PREFIX: &[u8] = b"herald-rejected";

/// How much the reader asks the socket for at a time, by default.
pub const DEFAULT_READ_SIZE: usize = 64 * 1024;

/// Stanza bytes that made the XML parser end a stream, for the life of the process (or of the
/// value): see the module documentation. Cheap to clone; clones share the memory. While it is
/// empty (the normal case), the reader does no extra work per stanza.
#[derive(Clone)]
pub struct PoisonMemory(Arc<PoisonInner>);

struct PoisonInner {
    len: AtomicUsize,
    hasher: RandomState,
    set: Mutex<PoisonSet>,
}

#[derive(Default)]
struct PoisonSet {
    hashes: HashSet<u64>,
    order: VecDeque<u64>,
}

impl PoisonMemory {
    /// Most stanzas remembered; the oldest is forgotten first.
    pub const CAPACITY: usize = 1024;

    /// An empty memory of its own.
    pub fn new() -> PoisonMemory {
        PoisonMemory(Arc::new(PoisonInner {
            len: AtomicUsize::new(0),
            hasher: RandomState::new(),
            set: Mutex::new(PoisonSet::default()),
        }))
    }

    /// The process-wide memory the component connection uses across its reconnects.
    pub fn global() -> PoisonMemory {
        static GLOBAL: OnceLock<PoisonMemory> = OnceLock::new();
        GLOBAL.get_or_init(PoisonMemory::new).clone()
    }

    /// Stanzas remembered.
    pub fn len(&self) -> usize {
        self.0.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether these exact stanza bytes are remembered.
    pub fn contains(&self, stanza: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        let h = self.0.hasher.hash_one(stanza);
        self.lock().hashes.contains(&h)
    }

    /// Remembers these stanza bytes; `false` if they already were.
    pub fn remember(&self, stanza: &[u8]) -> bool {
        let h = self.0.hasher.hash_one(stanza);
        let mut set = self.lock();
        if !set.hashes.insert(h) {
            return false;
        }
        set.order.push_back(h);
        if set.order.len() > Self::CAPACITY {
            if let Some(old) = set.order.pop_front() {
                set.hashes.remove(&old);
            }
        }
        self.0.len.store(set.hashes.len(), Ordering::Relaxed);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoisonSet> {
        self.0
            .set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for PoisonMemory {
    fn default() -> Self {
        PoisonMemory::new()
    }
}

impl std::fmt::Debug for PoisonMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoisonMemory")
            .field("len", &self.len())
            .finish()
    }
}

/// An `AsyncBufRead` over `R` that hands the XML parser only stanzas within [`Limits`] (see the
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

/// Where the scanner is, between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the stream header: everything passes.
    Prolog,
    /// Just after a `<` in the prolog.
    PrologLt,
    /// In the XML declaration (`decl`) or the stream header's start tag; `quote` is the open
    /// quote, or 0.
    PrologMarkup {
        decl: bool,
        quote: u8,
        slash: bool,
    },
    /// Between stanzas: only whitespace passes.
    Stream,
    /// After the stream footer: everything passes.
    Closed,
    /// Just after a `<` (in a stanza, or starting one).
    Lt,
    StartName,
    /// In a start tag, where an attribute, `/>` or `>` may come.
    Tag,
    /// Right after an attribute value: whitespace, `/>` or `>` must come.
    AfterValue,
    AttrName,
    /// After an attribute name: `=` must come.
    AttrEq,
    /// After `=`: a quote must come.
    AttrQuote,
    AttrValue(u8),
    /// After the `/` of `/>`.
    EmptyEnd,
    EndName,
    /// After an end tag's name: `>` must come.
    EndTail,
    /// Text inside a stanza.
    Text,
    /// After `<!`.
    Bang,
    /// After `<!-`.
    BangDash,
    /// After `<![`, `<![C`…: how many bytes of `[CDATA[` matched.
    CdataOpen(u8),
    /// In a CDATA section; how many `]` just passed (at most 2).
    Cdata(u8),
    /// In a comment; how many `-` just passed (at most 2).
    Comment(u8),
    /// In a processing instruction; whether a `?` just passed.
    Pi(bool),
    /// In another `<!…>` declaration.
    Decl,
}

const CDATA_OPEN: &[u8] = b"[CDATA[";

/// One top-level element (or piece of junk between stanzas) being scanned.
#[derive(Debug, Default)]
struct Unit {
    /// Offset of its `<` in the buffer.
    start: usize,
    /// Open elements.
    depth: usize,
    /// Over a limit: its bytes are dropped as they are scanned; its replacement (possibly empty)
    /// lies at `start..keep`.
    over: Option<&'static str>,
    keep: usize,
    /// End of the stanza's start tag in the buffer, once it has passed.
    top_tag_end: Option<usize>,
    /// Start of the name, value or text being scanned.
    tok: usize,
    /// The current start tag's name: offset from `start`, length.
    name: (usize, usize),
    attrs: usize,
    elements: usize,
    /// Names (offset from `start`, length) and child counts of the open elements; kept while
    /// the unit is within its limits.
    open: Vec<(usize, usize, usize)>,
}

/// A released element the parser has not read to its end yet.
#[derive(Debug, Clone, Copy)]
struct Released {
    start: usize,
    end: usize,
    /// A rejection with no part of the original: never remembered as poison.
    constant: bool,
}

/// The reader without I/O: the buffer and the scanner.
///
/// `buf[pos..released]` is what the parser may read, `buf[released..end]` is held (the element
/// being scanned), `buf[at..end]` is not scanned yet.
pub(crate) struct Guard {
    buf: Vec<u8>,
    end: usize,
    pos: usize,
    released: usize,
    at: usize,
    state: State,
    unit: Unit,
    in_unit: bool,
    limits: Limits,
    poison: PoisonMemory,
    units: VecDeque<Released>,
    read_size: usize,
    /// The stream header's start tag, as received (for [`parser_fails_on`]).
    header: Vec<u8>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Guard {
    pub(crate) fn new(limits: Limits, poison: PoisonMemory, read_size: usize) -> Guard {
        Guard {
            buf: vec![0; read_size],
            end: 0,
            pos: 0,
            released: 0,
            at: 0,
            state: State::Prolog,
            unit: Unit::default(),
            in_unit: false,
            limits: limits.capped(),
            poison,
            units: VecDeque::new(),
            read_size,
            header: Vec::new(),
        }
    }

    pub(crate) fn has_released(&self) -> bool {
        self.pos < self.released
    }

    pub(crate) fn released(&self) -> &[u8] {
        &self.buf[self.pos..self.released]
    }

    pub(crate) fn has_unscanned(&self) -> bool {
        self.at < self.end
    }

    pub(crate) fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.released);
        // An element read to its very end stays until the parser asks for more (see Drop).
        while self.units.front().is_some_and(|u| u.end < self.pos) {
            self.units.pop_front();
        }
    }

    pub(crate) fn parser_returned(&mut self) {
        while self.units.front().is_some_and(|u| u.end <= self.pos) {
            self.units.pop_front();
        }
    }

    /// Room for at least `min` more bytes, after what is already there. Called only once the
    /// parser has read everything released (so nothing it is in the middle of moves).
    pub(crate) fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.pos == self.released && self.released > 0 {
            self.compact();
        }
        if self.end == 0 && self.buf.len() > 4 * self.read_size {
            // After a large stanza: give the memory back.
            self.buf = vec![0; self.read_size];
        }
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        &mut self.buf[self.end..]
    }

    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// At end of file: the parser gets whatever is held.
    pub(crate) fn release_all(&mut self) {
        self.at = self.end;
        self.released = self.end;
        self.in_unit = false;
        self.state = State::Closed;
    }

    /// Moves the held bytes to the front of the buffer.
    fn compact(&mut self) {
        let d = self.released;
        self.buf.copy_within(d..self.end, 0);
        self.end -= d;
        self.at -= d;
        self.pos = 0;
        self.released = 0;
        // Everything released was read and the parser is back for more.
        self.units.clear();
        if self.in_unit {
            // (Only the stream footer is released while it is being scanned; nothing of it is
            // used after that.)
            let u = &mut self.unit;
            u.start = u.start.saturating_sub(d);
            u.keep = u.keep.saturating_sub(d);
            u.tok = u.tok.saturating_sub(d);
            u.top_tag_end = u.top_tag_end.map(|t| t.saturating_sub(d));
        }
    }

    /// Scans everything not scanned yet, releasing what is complete.
    pub(crate) fn scan(&mut self) {
        while self.at < self.end {
            self.step();
        }
        if self.in_unit
            && self.unit.depth == 0
            && matches!(self.state, State::EndName | State::EndTail)
        {
            // The stream footer: the parser gets it as it comes, unchecked.
            self.released = self.at;
        } else if self.in_unit {
            self.check_partial();
            if self.unit.over.is_some() {
                // Nothing of a unit over a limit is kept beyond its replacement.
                let keep = self.unit.keep;
                self.remove(keep, self.at);
                self.at = keep;
            }
        } else {
            match self.state {
                State::Prolog
                | State::PrologLt
                | State::PrologMarkup { .. }
                | State::Stream
                | State::Closed => self.released = self.at,
                _ => {}
            }
        }
    }

    /// Limits on what a partly received unit already shows.
    fn check_partial(&mut self) {
        if self.unit.over.is_some() {
            return;
        }
        let l = self.limits;
        let tok_len = self.at - self.unit.tok;
        let over = match self.state {
            State::StartName | State::AttrName | State::EndName => tok_len > l.max_name_bytes,
            State::AttrValue(_) => tok_len > l.max_attr_value_bytes,
            State::Text | State::Cdata(_) => tok_len > l.max_text_bytes,
            _ => false,
        };
        if over {
            let limit = match self.state {
                State::AttrValue(_) => limits::VALUE_SIZE,
                State::Text | State::Cdata(_) => limits::TEXT_SIZE,
                _ => limits::NAME_SIZE,
            };
            self.reject(limit);
        } else if self.at - self.unit.start > l.max_stanza_bytes {
            self.reject(limits::STANZA_SIZE);
        }
    }

    /// Processes the byte at `self.at` (and, on the fast paths, the run it starts).
    ///
    /// Positions: `self.at` is always just past the byte being processed. [`Guard::reject`]
    /// moves the bytes of the unit, and `self.at` with them, so after anything that may reject,
    /// only `self.at` is a valid position; token lengths are computed only while the unit is
    /// within its limits (nothing has moved then).
    fn step(&mut self) {
        let i = self.at;
        let b = self.buf[i];
        self.at = i + 1;
        match self.state {
            State::Prolog => match memchr::memchr(b'<', &self.buf[i..self.end]) {
                Some(j) => {
                    self.at = i + j + 1;
                    self.state = State::PrologLt;
                }
                None => self.at = self.end,
            },
            State::PrologLt => {
                self.header.clear();
                if b != b'?' {
                    self.header.extend_from_slice(&[b'<', b]);
                }
                self.state = if b == b'>' {
                    State::Prolog
                } else {
                    State::PrologMarkup {
                        decl: b == b'?',
                        quote: 0,
                        slash: false,
                    }
                };
            }
            State::PrologMarkup { decl, quote, slash } => {
                if !decl && self.header.len() < MAX_HEADER {
                    self.header.push(b);
                }
                self.state = if quote != 0 {
                    State::PrologMarkup {
                        decl,
                        quote: if b == quote { 0 } else { quote },
                        slash: false,
                    }
                } else if b == b'\'' || b == b'"' {
                    State::PrologMarkup {
                        decl,
                        quote: b,
                        slash: false,
                    }
                } else if b == b'>' {
                    if decl {
                        State::Prolog
                    } else if slash {
                        // A self-closed stream header is the whole stream.
                        State::Closed
                    } else {
                        State::Stream
                    }
                } else {
                    State::PrologMarkup {
                        decl,
                        quote,
                        slash: b == b'/',
                    }
                };
            }
            State::Closed => self.at = self.end,
            State::Stream => {
                if b == b'<' {
                    self.released = i;
                    self.begin_unit(i);
                    self.state = State::Lt;
                } else if !is_space(b) {
                    // Text between stanzas ends a tokio-xmpp stream.
                    self.buf[i] = b' ';
                }
            }
            State::Lt => match b {
                b'/' => {
                    self.unit.tok = self.at;
                    self.state = State::EndName;
                    self.scan_end_name();
                }
                b'!' => self.state = State::Bang,
                b'?' => {
                    self.state = State::Pi(false);
                    self.restricted();
                }
                _ => {
                    // The name starts at this byte: scan it again as part of the name.
                    self.at = i;
                    self.unit.tok = i;
                    self.unit.attrs = 0;
                    self.state = State::StartName;
                    if is_space(b) || b == b'>' || b == b'/' {
                        // `<` and no name.
                        self.malformed();
                    }
                    self.scan_start_name();
                }
            },
            State::StartName => {
                self.at = i;
                self.scan_start_name();
            }
            State::Tag | State::AfterValue => {
                self.at = i;
                self.scan_tag_rest();
            }
            State::AttrName => {
                self.at = i;
                self.scan_attr_name();
            }
            State::AttrEq => {
                if b == b'=' {
                    self.state = State::AttrQuote;
                } else if !is_space(b) {
                    self.malformed();
                    self.tag_byte(b);
                }
            }
            State::AttrQuote => {
                if b == b'\'' || b == b'"' {
                    self.unit.tok = self.at;
                    self.state = State::AttrValue(b);
                } else if !is_space(b) {
                    self.malformed();
                    self.tag_byte(b);
                }
            }
            State::AttrValue(q) => {
                self.at = i;
                self.scan_value(q);
                self.scan_tag_rest();
            }
            State::EmptyEnd => {
                if b == b'>' {
                    self.close_empty();
                } else {
                    self.malformed();
                    self.tag_byte(b);
                }
            }
            State::EndName => {
                self.at = i;
                self.scan_end_name();
            }
            State::EndTail => {
                if b == b'>' {
                    let (tok, len) = self.unit.name;
                    self.close_end(tok, len);
                } else if !is_space(b) && self.unit.depth > 0 {
                    self.malformed();
                }
            }
            State::Text => match memchr::memchr(b'<', &self.buf[i..self.end]) {
                Some(j) => {
                    self.at = i + j + 1;
                    self.state = State::Lt;
                    if self.unit.over.is_none()
                        && i + j - self.unit.tok > self.limits.max_text_bytes
                    {
                        self.reject(limits::TEXT_SIZE);
                    }
                    if self.at < self.end && self.state == State::Lt {
                        self.step();
                    }
                }
                None => self.at = self.end,
            },
            State::Bang => match b {
                b'-' => self.state = State::BangDash,
                b'[' => self.state = State::CdataOpen(1),
                _ => {
                    self.state = State::Decl;
                    self.restricted();
                    if b == b'>' {
                        self.end_markup();
                    }
                }
            },
            State::BangDash => {
                self.state = if b == b'-' {
                    State::Comment(0)
                } else {
                    State::Decl
                };
                self.restricted();
                if b == b'>' {
                    self.end_markup();
                }
            }
            State::CdataOpen(n) => {
                if b == CDATA_OPEN[n as usize] {
                    if n as usize + 1 == CDATA_OPEN.len() {
                        self.unit.tok = self.at;
                        self.state = State::Cdata(0);
                        if self.unit.depth == 0 {
                            // Text between stanzas.
                            self.junk();
                        }
                    } else {
                        self.state = State::CdataOpen(n + 1);
                    }
                } else {
                    self.state = State::Decl;
                    self.restricted();
                    if b == b'>' {
                        self.end_markup();
                    }
                }
            }
            State::Cdata(n) => {
                if b == b'>' && n == 2 {
                    if self.unit.over.is_none()
                        && (i - 2).saturating_sub(self.unit.tok) > self.limits.max_text_bytes
                    {
                        self.reject(limits::TEXT_SIZE);
                    }
                    self.end_markup();
                } else if b == b']' {
                    self.state = State::Cdata((n + 1).min(2));
                } else {
                    self.state = State::Cdata(0);
                    self.at = match memchr::memchr(b']', &self.buf[i..self.end]) {
                        Some(j) => i + j,
                        None => self.end,
                    };
                }
            }
            State::Comment(n) => {
                if b == b'>' && n == 2 {
                    self.end_markup();
                } else if b == b'-' {
                    self.state = State::Comment((n + 1).min(2));
                } else {
                    self.state = State::Comment(0);
                }
            }
            State::Pi(q) => {
                if b == b'>' && q {
                    self.end_markup();
                } else {
                    self.state = State::Pi(b == b'?');
                }
            }
            State::Decl => {
                if b == b'>' {
                    self.end_markup();
                }
            }
        }
    }

    fn begin_unit(&mut self, start: usize) {
        self.in_unit = true;
        let mut open = std::mem::take(&mut self.unit.open);
        open.clear();
        self.unit = Unit {
            start,
            keep: start,
            tok: start,
            open,
            ..Unit::default()
        };
    }

    /// A start tag's name, from `self.at`, up to its end or the end of the data.
    fn scan_start_name(&mut self) {
        while self.at < self.end {
            let b = self.buf[self.at];
            self.at += 1;
            if is_space(b) || b == b'/' || b == b'>' {
                if self.unit.over.is_none() {
                    let len = self.at - 1 - self.unit.tok;
                    self.unit.name = (self.unit.tok - self.unit.start, len);
                    if len > self.limits.max_name_bytes {
                        self.reject(limits::NAME_SIZE);
                    }
                }
                match b {
                    b'>' => self.close_start(),
                    b'/' => self.empty_end(),
                    _ => {
                        self.state = State::Tag;
                        self.scan_tag_rest();
                    }
                }
                return;
            }
            if b == b'<' || b == b'\'' || b == b'"' || b == b'=' {
                self.malformed();
            }
        }
    }

    /// An attribute value, from `self.at`, up to its closing quote or the end of the data.
    fn scan_value(&mut self, q: u8) {
        let i = self.at;
        match memchr::memchr2(q, b'<', &self.buf[i..self.end]) {
            Some(j) if self.buf[i + j] == q => {
                self.at = i + j + 1;
                self.state = State::AfterValue;
                if self.unit.over.is_none()
                    && i + j - self.unit.tok > self.limits.max_attr_value_bytes
                {
                    self.reject(limits::VALUE_SIZE);
                }
            }
            Some(j) => {
                // `<` in a value.
                self.at = i + j + 1;
                self.malformed();
            }
            None => self.at = self.end,
        }
    }

    /// The rest of a start tag from `self.at` (in state `Tag` or `AfterValue`): whitespace and
    /// attributes, up to its `>`, something unusual, or the end of the data.
    fn scan_tag_rest(&mut self) {
        while self.at < self.end && matches!(self.state, State::Tag | State::AfterValue) {
            let b = self.buf[self.at];
            self.at += 1;
            if is_space(b) {
                self.state = State::Tag;
                continue;
            }
            if self.state == State::AfterValue && b != b'/' && b != b'>' {
                // No space between two attributes.
                self.malformed();
            }
            self.tag_byte(b);
        }
    }

    /// After the `/` of `/>`.
    fn empty_end(&mut self) {
        self.state = State::EmptyEnd;
        if self.at < self.end && self.buf[self.at] == b'>' {
            self.at += 1;
            self.close_empty();
        }
    }

    /// The byte just processed, where an attribute, `/>` or `>` may come.
    fn tag_byte(&mut self, b: u8) {
        match b {
            b'>' => self.close_start(),
            b'/' => self.empty_end(),
            _ if is_space(b) => self.state = State::Tag,
            b'\'' | b'"' | b'=' | b'<' => {
                self.state = State::Tag;
                self.malformed();
            }
            _ => {
                self.unit.tok = self.at - 1;
                self.unit.attrs += 1;
                self.state = State::AttrName;
                if self.unit.attrs > self.limits.max_attrs {
                    self.reject(limits::ATTRIBUTES);
                }
                self.scan_attr_name();
            }
        }
    }

    /// An attribute name, from `self.at`, up to its end or the end of the data; then, on the
    /// usual `='`, its value.
    fn scan_attr_name(&mut self) {
        let mut j = self.at;
        while j < self.end {
            let c = self.buf[j];
            if is_space(c) || matches!(c, b'=' | b'/' | b'>' | b'<' | b'\'' | b'"') {
                break;
            }
            j += 1;
        }
        self.at = j;
        if j == self.end {
            return;
        }
        let c = self.buf[j];
        self.at = j + 1;
        if is_space(c) || c == b'=' {
            self.state = if c == b'=' {
                State::AttrQuote
            } else {
                State::AttrEq
            };
            if self.unit.over.is_none() && j - self.unit.tok > self.limits.max_name_bytes {
                self.reject(limits::NAME_SIZE);
            }
            if c == b'=' && self.at < self.end {
                let q = self.buf[self.at];
                if q == b'\'' || q == b'"' {
                    self.at += 1;
                    self.unit.tok = self.at;
                    self.state = State::AttrValue(q);
                    self.scan_value(q);
                }
            }
        } else if c == b'/' || c == b'>' {
            // An attribute without a value.
            self.malformed();
            self.tag_byte(c);
        } else {
            // `<` or a quote in a name.
            self.malformed();
        }
    }

    /// An end tag's name, from `self.at`, up to its end or the end of the data. At the stream's
    /// level it is the stream footer: that goes to the parser as it is.
    fn scan_end_name(&mut self) {
        let mut j = self.at;
        while j < self.end {
            let c = self.buf[j];
            if is_space(c) || c == b'>' {
                break;
            }
            if matches!(c, b'<' | b'/' | b'\'' | b'"' | b'=') && self.unit.depth > 0 {
                self.at = j + 1;
                self.malformed();
                j = self.at;
                continue;
            }
            j += 1;
        }
        self.at = j;
        if j == self.end {
            return;
        }
        let c = self.buf[j];
        self.at = j + 1;
        let (tok, len) = (self.unit.tok, j.saturating_sub(self.unit.tok));
        // (An over-long stream footer is the server's business.)
        if self.unit.over.is_none() && self.unit.depth > 0 && len > self.limits.max_name_bytes {
            self.reject(limits::NAME_SIZE);
        }
        if c == b'>' {
            self.close_end(tok, len);
        } else {
            self.unit.name = (tok, len);
            self.state = State::EndTail;
        }
    }

    /// Counts a new element (at the `>` of its start tag).
    fn count_element(&mut self) {
        let l = self.limits;
        let u = &mut self.unit;
        u.elements += 1;
        let limit = if u.depth + 1 > l.max_depth {
            Some(limits::DEPTH)
        } else if u.elements > l.max_elements {
            Some(limits::ELEMENTS)
        } else {
            match u.open.last_mut() {
                Some(parent) => {
                    parent.2 += 1;
                    (parent.2 > l.max_children).then_some(limits::CHILDREN)
                }
                None => None,
            }
        };
        if let Some(limit) = limit {
            self.reject(limit);
        }
    }

    /// The `>` of a start tag.
    fn close_start(&mut self) {
        self.count_element();
        let at = self.at;
        let u = &mut self.unit;
        if u.over.is_none() {
            u.open.push((u.name.0, u.name.1, 0));
            if u.depth == 0 {
                u.top_tag_end = Some(at);
            }
        }
        u.depth += 1;
        u.tok = at;
        self.state = State::Text;
    }

    /// The `>` of an empty-element tag.
    fn close_empty(&mut self) {
        self.count_element();
        if self.unit.depth == 0 {
            self.complete();
        } else {
            self.unit.tok = self.at;
            self.state = State::Text;
        }
    }

    /// The `>` of an end tag whose name is at `tok` (absolute; valid while the unit is within
    /// its limits), `len` bytes.
    fn close_end(&mut self, tok: usize, len: usize) {
        if self.unit.depth == 0 {
            // At the stream's level: the stream footer.
            self.in_unit = false;
            self.released = self.at;
            self.state = State::Closed;
            return;
        }
        if self.unit.over.is_none() {
            let start = self.unit.start;
            let matches = match self.unit.open.last() {
                Some(&(off, n, _)) => {
                    n == len && self.buf[start + off..start + off + n] == self.buf[tok..tok + len]
                }
                None => false,
            };
            if !matches {
                self.malformed();
            }
        }
        self.unit.open.pop();
        self.unit.depth -= 1;
        if self.unit.depth == 0 {
            self.complete();
        } else {
            self.unit.tok = self.at;
            self.state = State::Text;
        }
    }

    /// The `>` ending a comment, CDATA section, processing instruction or declaration.
    fn end_markup(&mut self) {
        if self.unit.depth == 0 {
            self.complete();
        } else {
            self.unit.tok = self.at;
            self.state = State::Text;
        }
    }

    /// The unit ends just before `self.at`: release it (or its replacement).
    fn complete(&mut self) {
        if self.unit.over.is_none() && self.at - self.unit.start > self.limits.max_stanza_bytes {
            self.reject(limits::STANZA_SIZE);
        }
        let start = self.unit.start;
        let mut constant = false;
        let end = match self.unit.over {
            None => {
                if self.poison.contains(&self.buf[start..self.at]) {
                    let synth = constant_rejection(limits::UNPARSEABLE);
                    self.replace(start, self.at, &synth);
                    constant = true;
                    start + synth.len()
                } else {
                    self.at
                }
            }
            Some(_) => {
                let keep = self.unit.keep;
                self.remove(keep, self.at);
                constant = self.unit.top_tag_end.is_none();
                keep
            }
        };
        self.in_unit = false;
        self.at = end;
        self.released = end;
        self.state = State::Stream;
        if end > start {
            self.units.push_back(Released {
                start,
                end,
                constant,
            });
        }
    }

    /// Comments, processing instructions, declarations: rxml ends the stream on them. Between
    /// stanzas they are dropped; in a stanza they reject it.
    fn restricted(&mut self) {
        if self.unit.depth == 0 {
            self.junk();
        } else {
            self.reject(limits::RESTRICTED_XML);
        }
    }

    fn malformed(&mut self) {
        self.reject(limits::MALFORMED);
    }

    /// The unit is markup between stanzas: drop it, with nothing in its place.
    fn junk(&mut self) {
        if self.unit.over.is_none() {
            self.unit.top_tag_end = None;
            self.unit.over = Some(limits::RESTRICTED_XML);
            let start = self.unit.start;
            self.remove(start, self.at);
            self.at = start;
            self.unit.keep = start;
        }
    }

    /// The unit is over `limit`: from here on its bytes are dropped as they are scanned, and
    /// what has been scanned of it (`start..at`) is replaced by its rejection element.
    fn reject(&mut self, limit: &'static str) {
        if self.unit.over.is_some() {
            return;
        }
        self.unit.over = Some(limit);
        let start = self.unit.start;
        let synth = match self.unit.top_tag_end {
            Some(t) if memchr::memmem::find(&self.buf[start..t], PREFIX).is_none() => {
                let mut s = Vec::with_capacity(t - start + 96);
                s.extend_from_slice(&self.buf[start..t - 1]);
                push_marker(&mut s, limit);
                s.extend_from_slice(b"/>");
                if self.poison.contains(&s) {
                    self.unit.top_tag_end = None;
                    constant_rejection(limits::UNPARSEABLE)
                } else {
                    s
                }
            }
            _ => {
                self.unit.top_tag_end = None;
                constant_rejection(limit)
            }
        };
        self.replace(start, self.at, &synth);
        self.at = start + synth.len();
        self.unit.keep = self.at;
        self.unit.open.clear();
    }

    /// `buf[from..to]` becomes `with`; what follows moves.
    fn replace(&mut self, from: usize, to: usize, with: &[u8]) {
        let new_end = self.end - (to - from) + with.len();
        if new_end > self.buf.len() {
            self.buf.resize(new_end, 0);
        }
        self.buf.copy_within(to..self.end, from + with.len());
        self.buf[from..from + with.len()].copy_from_slice(with);
        self.end = new_end;
    }

    fn remove(&mut self, from: usize, to: usize) {
        if to > from {
            self.replace(from, to, &[]);
        }
    }
}

impl Drop for Guard {
    /// The stream is gone. If the parser stopped inside or at the end of a released element
    /// without coming back for more, it may have failed on it: parse the element again, alone
    /// after the stream's header, with the same parser and options. If that fails, remember the
    /// element so the next connections skip it.
    fn drop(&mut self) {
        let pos = self.pos;
        let Some(u) = self
            .units
            .iter()
            .find(|u| u.start < pos && pos <= u.end)
            .copied()
        else {
            return;
        };
        let unit = &self.buf[u.start..u.end];
        if u.constant || !parser_fails_on(&self.header, unit) {
            return;
        }
        if self.poison.remember(unit) {
            warn!(
                bytes = unit.len(),
                "a stanza made the XML parser end the stream; if the server sends it again, herald skips it"
            );
        }
    }
}

/// Longest stream header start tag kept for [`parser_fails_on`].
const MAX_HEADER: usize = 4096;

/// Whether rxml, at its defaults (as tokio-xmpp runs it), fails on `unit` as the first element
/// inside a stream that starts with `header` (a default component stream header if that is
/// empty or was too long to keep).
pub(crate) fn parser_fails_on(header: &[u8], unit: &[u8]) -> bool {
    const DEFAULT_HEADER: &[u8] = b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>";
    let header = if header.is_empty() || header.len() >= MAX_HEADER || header.last() != Some(&b'>')
    {
        DEFAULT_HEADER
    } else {
        header
    };
    let mut doc = Vec::with_capacity(header.len() + unit.len());
    doc.extend_from_slice(header);
    doc.extend_from_slice(unit);
    let mut reader = rxml::Reader::new(&doc[..]);
    let mut depth = 0usize;
    loop {
        match reader.read() {
            Ok(Some(rxml::Event::StartElement(..))) => depth += 1,
            Ok(Some(rxml::Event::EndElement(..))) => {
                depth = depth.saturating_sub(1);
                if depth <= 1 {
                    return false;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// ` xmlns:herald-rejected='urn:x-herald:rejected' herald-rejected:limit='LIMIT'`
fn push_marker(s: &mut Vec<u8>, limit: &str) {
    s.extend_from_slice(b" xmlns:");
    s.extend_from_slice(PREFIX);
    s.extend_from_slice(b"='");
    s.extend_from_slice(NS_REJECTED.as_bytes());
    s.extend_from_slice(b"' ");
    s.extend_from_slice(PREFIX);
    s.extend_from_slice(b":");
    s.extend_from_slice(REJECTED_ATTR.as_bytes());
    s.extend_from_slice(b"='");
    s.extend_from_slice(limit.as_bytes());
    s.extend_from_slice(b"'");
}

/// `<herald-rejected:stanza xmlns:herald-rejected='urn:x-herald:rejected' herald-rejected:limit='LIMIT'/>`
fn constant_rejection(limit: &str) -> Vec<u8> {
    let mut s = Vec::with_capacity(128);
    s.push(b'<');
    s.extend_from_slice(PREFIX);
    s.extend_from_slice(b":stanza");
    push_marker(&mut s, limit);
    s.extend_from_slice(b"/>");
    s
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
    use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts};

    use super::*;
    use crate::xmpp::inbound::{RejectedStanza, Stanza};
    use crate::xmpp::limits::PARSER_TOKEN_LIMIT;
    use crate::xmpp::stanza::{error_condition, NS_COMPONENT};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='herald.localhost'>";
    const FOOTER: &str = "</stream:stream>";
    /// The valid stanza every test sends after the hostile one.
    const AFTER: &str = "<presence from='ok@localhost/r' id='after'><show>away</show></presence>";

    #[derive(Debug, PartialEq, Eq)]
    enum End {
        Footer,
        Hard(String),
        Eof,
    }

    struct Read {
        stanzas: Vec<Stanza>,
        end: End,
        /// Most bytes the reader's buffer ever had allocated.
        max_buffer: usize,
    }

    /// `body` as the server's side of a component stream (after its header, before its footer),
    /// written in pieces of `chunk` bytes and read the way the connection reads it: tokio-xmpp's
    /// `XmlStream<_, Stanza>` (set up as `login()` does) over the guarded reader.
    async fn read_stream(body: &[u8], limits: Limits, poison: &PoisonMemory, chunk: usize) -> Read {
        let io =
            GuardedReader::with_capacity(4096, client(body, chunk, true), limits, poison.clone());
        read_with(io, |io| io.guard.buf.len()).await
    }

    /// `body` without the footer, then the connection closes.
    async fn read_cut(body: &[u8], poison: &PoisonMemory) -> Read {
        let io = GuardedReader::new(client(body, 4096, false), Limits::default(), poison.clone());
        read_with(io, |io| io.guard.buf.len()).await
    }

    /// The same stream, read without the guard (tokio's BufReader, as before).
    async fn read_unguarded(body: &[u8]) -> Read {
        let io = BufReader::with_capacity(4096, client(body, 4096, true));
        read_with(io, |_| 0).await
    }

    fn client(body: &[u8], chunk: usize, footer: bool) -> DuplexStream {
        let (client, server) = tokio::io::duplex(chunk.max(1));
        let (mut server_rd, mut server_wr) = tokio::io::split(server);
        let mut all = HEADER.as_bytes().to_vec();
        all.extend_from_slice(body);
        if footer {
            all.extend_from_slice(FOOTER.as_bytes());
        }
        // What herald writes (its stream header) is read and dropped, so it never blocks.
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut server_rd, &mut sink).await;
        });
        tokio::spawn(async move {
            for piece in all.chunks(chunk.max(1)) {
                if server_wr.write_all(piece).await.is_err() {
                    return;
                }
            }
            if footer {
                // The server's side stays open: the stream ends with the footer.
                std::future::pending::<()>().await;
            }
            let _ = server_wr.shutdown().await;
        });
        client
    }

    async fn read_with<Io>(io: Io, buffer: impl Fn(&Io) -> usize) -> Read
    where
        Io: AsyncBufRead + AsyncWrite + Unpin,
    {
        let timeouts = Timeouts {
            read_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(60),
        };
        let header = StreamHeader {
            to: Some(Cow::Borrowed("herald.localhost")),
            from: None,
            id: None,
        };
        let mut pending = initiate_stream(io, NS_COMPONENT, header, timeouts)
            .await
            .unwrap();
        assert_eq!(pending.take_header().id.as_deref(), Some("s1"));
        let mut stream = pending.skip_features::<Stanza>();
        let mut stanzas = Vec::new();
        let mut max_buffer = buffer(stream.get_stream());
        let end = loop {
            let next = stream.next().await;
            max_buffer = max_buffer.max(buffer(stream.get_stream()));
            match next {
                Some(Ok(s)) => stanzas.push(s),
                Some(Err(ReadError::StreamFooterReceived)) => break End::Footer,
                Some(Err(ReadError::HardError(e))) => break End::Hard(e.to_string()),
                Some(Err(e)) => panic!("unexpected read error: {e}"),
                None => break End::Eof,
            }
        };
        Read {
            stanzas,
            end,
            max_buffer,
        }
    }

    async fn read(body: &str) -> Read {
        read_stream(
            body.as_bytes(),
            Limits::default(),
            &PoisonMemory::new(),
            4096,
        )
        .await
    }

    /// The stream went on: it ended with the server's footer, and the last stanza is [`AFTER`].
    fn assert_went_on(r: &Read) {
        assert_eq!(r.end, End::Footer);
        match r.stanzas.last() {
            Some(Stanza::Presence(p)) => {
                assert_eq!(p.from.as_deref(), Some("ok@localhost/r"));
                assert_eq!(p.show.as_deref(), Some("away"));
            }
            other => panic!("the stanza after was not read: {other:?}"),
        }
    }

    /// The stream was exactly `[rejection, AFTER]`; returns the rejection.
    fn rejection(r: &Read) -> &RejectedStanza {
        assert_went_on(r);
        assert_eq!(r.stanzas.len(), 2, "{:?}", r.stanzas);
        match &r.stanzas[0] {
            Stanza::Rejected(rej) => rej,
            other => panic!("not rejected: {other:?}"),
        }
    }

    fn nested(name: &str, depth: usize) -> String {
        format!(
            "{}{}",
            format!("<{name}>").repeat(depth),
            format!("</{name}>").repeat(depth)
        )
    }

    #[tokio::test]
    async fn deep_nesting_is_rejected_in_every_kind_of_stanza() {
        let deep = nested("x", 5_000);
        for (open, close, name, kind) in [
            (
                "<presence from='a@localhost/r' id='p1'>",
                "</presence>",
                "presence",
                None,
            ),
            (
                "<message from='a@localhost/r' id='m1' type='chat'>",
                "</message>",
                "message",
                Some("chat"),
            ),
            (
                "<iq from='a@localhost/r' id='i1' type='get'>",
                "</iq>",
                "iq",
                Some("get"),
            ),
            (
                "<unknown from='a@localhost/r' id='u1'>",
                "</unknown>",
                "unknown",
                None,
            ),
        ] {
            let r = read(&format!("{open}{deep}{close}{AFTER}")).await;
            let rej = rejection(&r);
            assert_eq!(rej.limit, limits::DEPTH, "{name}");
            assert_eq!(rej.name.as_deref(), Some(name));
            assert_eq!(rej.ns.as_deref(), Some(NS_COMPONENT));
            assert_eq!(rej.from.as_deref(), Some("a@localhost/r"));
            assert_eq!(rej.kind.as_deref(), kind);
            assert!(rej.id.is_some());
        }
    }

    #[tokio::test]
    async fn a_rejected_iq_request_gets_a_policy_violation_answer() {
        let r = read(&format!(
            "<iq from='a@localhost/r' to='herald.localhost' id='i1' type='set'>{}</iq>{AFTER}",
            nested("q", 100)
        ))
        .await;
        let rej = rejection(&r);
        assert!(rej.is_iq_request());
        let answer = rej.error_reply("herald.localhost").unwrap();
        assert_eq!(answer.attr("type"), Some("error"));
        assert_eq!(answer.attr("id"), Some("i1"));
        assert_eq!(answer.attr("to"), Some("a@localhost/r"));
        assert_eq!(answer.attr("from"), Some("herald.localhost"));
        assert_eq!(error_condition(&answer), Some("policy-violation"));
        // Nothing else is answered.
        let msg = RejectedStanza {
            name: Some("message".into()),
            ns: Some(NS_COMPONENT.into()),
            ..RejectedStanza::default()
        };
        assert!(msg.error_reply("herald.localhost").is_none());
    }

    #[tokio::test]
    async fn the_depth_limit_is_exact() {
        // The message and 63 levels below it: 64.
        let r = read(&format!(
            "<message id='m'>{}</message>{AFTER}",
            nested("x", 63)
        ))
        .await;
        assert_went_on(&r);
        let Stanza::Other(el) = &r.stanzas[0] else {
            panic!("{:?}", r.stanzas[0]);
        };
        let mut depth = 1;
        let mut at = el;
        while let Some(child) = at.children().next() {
            depth += 1;
            at = child;
        }
        assert_eq!(depth, 64);
        let r = read(&format!(
            "<message id='m'>{}</message>{AFTER}",
            nested("x", 64)
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::DEPTH);
        // An empty element at depth 65 counts too.
        let r = read(&format!(
            "<message id='m'>{}<y/>{}</message>{AFTER}",
            "<x>".repeat(63),
            "</x>".repeat(63)
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::DEPTH);
    }

    #[tokio::test]
    async fn rxml_takes_values_up_to_the_cap_and_ends_the_stream_beyond() {
        // Why the reader caps names and values at PARSER_TOKEN_LIMIT: without it, one byte more
        // ends the stream.
        let at = format!("<message id='{}'/>{AFTER}", "v".repeat(PARSER_TOKEN_LIMIT));
        assert_went_on(&read_unguarded(at.as_bytes()).await);
        let over = format!(
            "<message id='{}'/>{AFTER}",
            "v".repeat(PARSER_TOKEN_LIMIT + 1)
        );
        let r = read_unguarded(over.as_bytes()).await;
        assert!(
            matches!(&r.end, End::Hard(e) if e.contains("long name")),
            "{:?}",
            r.end
        );
        // With it: the first is read, the second rejected, and the stream goes on.
        let r = read(&at).await;
        assert_went_on(&r);
        assert!(
            matches!(&r.stanzas[0], Stanza::Other(el) if el.attr("id").map(str::len) == Some(PARSER_TOKEN_LIMIT))
        );
        assert_eq!(rejection(&read(&over).await).limit, limits::VALUE_SIZE);
    }

    #[tokio::test]
    async fn over_long_values_and_names_are_rejected() {
        let long = "a".repeat(20_000);
        // A value in the stanza's own start tag: nothing of that tag is trusted.
        let r = read(&format!("<presence from='{long}@localhost/r'/>{AFTER}")).await;
        let rej = rejection(&r);
        assert_eq!(rej.limit, limits::VALUE_SIZE);
        assert_eq!(rej.name, None);
        assert_eq!(rej.from, None);
        // Deeper: the start tag is known.
        let r = read(&format!(
            "<presence from='a@localhost/r' type='unavailable'><status v='{long}'/></presence>{AFTER}"
        ))
        .await;
        let rej = rejection(&r);
        assert_eq!(rej.limit, limits::VALUE_SIZE);
        assert_eq!(rej.name.as_deref(), Some("presence"));
        assert_eq!(rej.from.as_deref(), Some("a@localhost/r"));
        assert_eq!(rej.kind.as_deref(), Some("unavailable"));
        // Element names, top-level and nested, and attribute names.
        let r = read(&format!("<{long} from='a@localhost/r'/>{AFTER}")).await;
        assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
        let r = read(&format!(
            "<message from='a@localhost/r'><{long}/></message>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
        let r = read(&format!(
            "<message from='a@localhost/r'><x>t</x  ><b {long}='1'/></message>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
        // An end tag's name can only be over the limit if it does not match; still rejected.
        let r = read(&format!("<message><x></{long}></message>{AFTER}")).await;
        assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
    }

    #[tokio::test]
    async fn huge_text_too_many_children_attributes_and_elements_are_rejected() {
        let text = "t".repeat(300 * 1024);
        let r = read(&format!(
            "<message from='a@localhost/r'><body>{text}</body></message>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::TEXT_SIZE);
        let r = read(&format!(
            "<message from='a@localhost/r'><![CDATA[{text}]]></message>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::TEXT_SIZE);
        // 256 KiB of text is fine.
        let ok = "t".repeat(256 * 1024);
        let r = read(&format!(
            "<message from='a@localhost/r'><body>{ok}</body></message>{AFTER}"
        ))
        .await;
        assert_went_on(&r);
        assert!(
            matches!(&r.stanzas[0], Stanza::Other(el) if el.children().next().map(|b| b.text().len()) == Some(ok.len()))
        );

        let children = "<item/>".repeat(1025);
        let r = read(&format!(
            "<iq type='result' id='r1'><query xmlns='q'>{children}</query></iq>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::CHILDREN);
        let children = "<item/>".repeat(1024);
        let r = read(&format!(
            "<iq type='result' id='r1'><query xmlns='q'>{children}</query></iq>{AFTER}"
        ))
        .await;
        assert_went_on(&r);

        let attrs: String = (0..65).map(|i| format!(" a{i}='v'")).collect();
        let r = read(&format!(
            "<message from='a@localhost/r'><x{attrs}/></message>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::ATTRIBUTES);
        let r = read(&format!("<message{attrs}/>{AFTER}")).await;
        let rej = rejection(&r);
        assert_eq!((rej.limit, rej.name.as_deref()), (limits::ATTRIBUTES, None));

        let many = format!("<x>{}</x>", "<y/>".repeat(1000)).repeat(17);
        let r = read(&format!(
            "<message from='a@localhost/r'>{many}</message>{AFTER}"
        ))
        .await;
        assert_eq!(rejection(&r).limit, limits::ELEMENTS);
    }

    #[tokio::test]
    async fn a_stanza_over_max_stanza_bytes_is_skipped_without_being_held() {
        let small = Limits::new(64 * 1024);
        // 2 MB in 200 children of 10 kB each, within every other limit: only the size is wrong.
        let big = format!(
            "<message from='a@localhost/r' id='big'><x>{}</x></message>{AFTER}",
            format!("<y>{}</y>", "z".repeat(10_000)).repeat(200)
        );
        let r = read_stream(big.as_bytes(), small, &PoisonMemory::new(), 4096).await;
        let rej = rejection(&r);
        assert_eq!(rej.limit, limits::STANZA_SIZE);
        assert_eq!(rej.id.as_deref(), Some("big"));
        assert!(
            r.max_buffer <= 64 * 1024 + 2 * 4096,
            "the reader held {} bytes",
            r.max_buffer
        );
        // One byte under the limit passes, one over does not.
        let fill = |n: usize| {
            let open = "<message id='s'>";
            let close = "</message>";
            format!(
                "{open}{}{close}{AFTER}",
                "z".repeat(n - open.len() - close.len())
            )
        };
        let tiny = Limits::new(4096);
        let r = read_stream(fill(4096).as_bytes(), tiny, &PoisonMemory::new(), 100).await;
        assert_went_on(&r);
        assert_eq!(r.stanzas.len(), 2);
        assert!(matches!(r.stanzas[0], Stanza::Other(_)));
        let r = read_stream(fill(4097).as_bytes(), tiny, &PoisonMemory::new(), 100).await;
        assert_eq!(rejection(&r).limit, limits::STANZA_SIZE);
    }

    #[tokio::test]
    async fn comments_and_processing_instructions_reject_the_stanza_and_are_dropped_between() {
        let r = read(&format!("<message id='c'><!-- hi --></message>{AFTER}")).await;
        assert_eq!(rejection(&r).limit, limits::RESTRICTED_XML);
        let r = read(&format!("<message id='c'><?pi x?></message>{AFTER}")).await;
        assert_eq!(rejection(&r).limit, limits::RESTRICTED_XML);
        // Between stanzas: text, a comment, a CDATA section, a processing instruction. Each
        // would end a tokio-xmpp stream.
        let r = read(&format!(
            "\n text &amp; <!-- c --> <![CDATA[ d ]]> <?pi x?> {AFTER}"
        ))
        .await;
        assert_went_on(&r);
        assert_eq!(r.stanzas.len(), 1);
        assert!(matches!(read_unguarded(b"text").await.end, End::Hard(_)));
    }

    #[tokio::test]
    async fn malformed_nesting_is_rejected_before_the_parser_ends_the_stream() {
        let r = read(&format!("<message id='m'><a><b></a></b></message>{AFTER}")).await;
        assert_eq!(rejection(&r).limit, limits::MALFORMED);
        let r = read(&format!("<message id='m'><a v='1<2'/></message>{AFTER}")).await;
        assert_eq!(rejection(&r).limit, limits::MALFORMED);
    }

    #[tokio::test]
    async fn an_end_tag_between_stanzas_is_the_footer_and_goes_to_the_parser_as_it_is() {
        // Whatever it looks like (even over the name limit, arriving in pieces), it is the
        // stream's end: nothing of it is rejected, nothing after it is touched.
        for footer in [
            "</stream:stream >",
            &format!("</{}>", "s".repeat(2000)),
            "</x\0<message id='c'>",
        ] {
            let body = format!("{AFTER}{footer}");
            for chunk in [1, 3, 4096] {
                let io = GuardedReader::with_capacity(
                    512,
                    client(body.as_bytes(), chunk, false),
                    Limits::default(),
                    PoisonMemory::new(),
                );
                let r = read_with(io, |_| 0).await;
                assert_eq!(r.stanzas.len(), 1, "{footer:?} in pieces of {chunk}");
                assert!(
                    !matches!(&r.end, End::Hard(e) if e.contains("non-whitespace") || e.contains("restricted")),
                    "{footer:?} in pieces of {chunk}: {:?}",
                    r.end
                );
                if footer.starts_with("</stream:stream") {
                    assert_eq!(r.end, End::Footer);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_start_tag_that_uses_the_marker_prefix_is_not_kept() {
        let r = read(&format!(
            "<message xmlns:herald-rejected='urn:other' herald-rejected:limit='x'>{}</message>{AFTER}",
            nested("x", 70)
        ))
        .await;
        let rej = rejection(&r);
        assert_eq!((rej.limit, rej.name.as_deref()), (limits::DEPTH, None));
    }

    #[tokio::test]
    async fn a_kept_start_tag_is_read_as_the_parser_would() {
        let r = read(&format!(
            "<iq xml:lang='en' from=\"o'hara&amp;co@localhost/r\" id = 'q&lt;1' type='get'>{}</iq>{AFTER}",
            nested("x", 70)
        ))
        .await;
        let rej = rejection(&r);
        assert_eq!(rej.from.as_deref(), Some("o'hara&co@localhost/r"));
        assert_eq!(rej.id.as_deref(), Some("q<1"));
        assert!(rej.is_iq_request());
    }

    /// What herald's own traffic and the server's look like, in every syntax the reader has to
    /// follow: it must hand these over unchanged.
    const ORDINARY: &str = "<handshake/>\
        <message from='localhost' to='herald.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='presence' type='managed_entity'/></privilege></message>\n\
        <presence id='6e1a' xml:lang='en' to='herald.localhost' from='carol@localhost/harness'><show>dnd</show><status>carol &amp; &#x1F3AE; &lt;was&gt; online</status><c hash='sha-1' ver='x=' node='n' xmlns='http://jabber.org/protocol/caps'/><x xmlns='vcard-temp:x:update'><photo/></x><delay from='localhost' xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>\
        <presence from='bob@localhost/harness' to='herald.localhost' type='unavailable' />  \r\n\t\
        <iq type = \"result\" id=\"herald-serverinfo-1\" from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Prosody &gt; 13'/></query ></iq>\
        <message from='room@muc.localhost/bob' type='groupchat'><body><![CDATA[a <b> & ]] > c]]></body><x xmlns:p='urn:p' p:a='&quot;'/></message>\
        <stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";

    #[tokio::test]
    async fn ordinary_traffic_passes_unchanged_whatever_the_pieces() {
        let body = format!("{ORDINARY}{AFTER}");
        let unguarded = read_unguarded(body.as_bytes()).await;
        assert_went_on(&unguarded);
        let want = format!("{:?}", unguarded.stanzas);
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let r = read_stream(
                body.as_bytes(),
                Limits::default(),
                &PoisonMemory::new(),
                chunk,
            )
            .await;
            assert_went_on(&r);
            assert_eq!(format!("{:?}", r.stanzas), want, "pieces of {chunk}");
        }
    }

    #[tokio::test]
    async fn rejections_are_the_same_whatever_the_pieces() {
        let body = format!(
            "{ORDINARY}<message id='1'>{}</message>{ORDINARY}<presence from='{}'/><!-- c -->{ORDINARY}{AFTER}",
            nested("x", 80),
            "v".repeat(9000)
        );
        let whole = read_stream(
            body.as_bytes(),
            Limits::default(),
            &PoisonMemory::new(),
            1 << 16,
        )
        .await;
        assert_went_on(&whole);
        let rejected: Vec<_> = whole
            .stanzas
            .iter()
            .filter_map(|s| match s {
                Stanza::Rejected(r) => Some(r.limit),
                _ => None,
            })
            .collect();
        assert_eq!(rejected, [limits::DEPTH, limits::VALUE_SIZE]);
        let want = format!("{:?}", whole.stanzas);
        for chunk in [1, 5, 333] {
            let r = read_stream(
                body.as_bytes(),
                Limits::default(),
                &PoisonMemory::new(),
                chunk,
            )
            .await;
            assert_eq!(format!("{:?}", r.stanzas), want, "pieces of {chunk}");
        }
    }

    #[tokio::test]
    async fn a_stanza_the_parser_fails_on_ends_one_stream_and_is_skipped_on_the_next() {
        // Within every limit, but not namespace-well-formed: the parser ends the stream.
        let bad = "<message from='a@localhost/r' id='bad'><u:x/></message>";
        let body = format!("{AFTER}{bad}{AFTER}");
        let poison = PoisonMemory::new();
        let first = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
        assert!(matches!(first.end, End::Hard(_)), "{:?}", first.end);
        assert_eq!(first.stanzas.len(), 1);

        assert_eq!(poison.len(), 1);
        assert!(poison.contains(bad.as_bytes()));
        // The server sends it again after the reconnect: skipped, and the stream goes on.
        let second = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
        assert_went_on(&second);
        assert_eq!(second.stanzas.len(), 3);
        match &second.stanzas[1] {
            Stanza::Rejected(r) => {
                assert_eq!((r.limit, r.name.as_deref()), (limits::UNPARSEABLE, None))
            }
            other => panic!("{other:?}"),
        }
        // A stream that merely ends (no failure) poisons nothing.
        let poison = PoisonMemory::new();
        let cut = format!("{AFTER}<message id='cut'>");
        let r = read_cut(cut.as_bytes(), &poison).await;
        assert!(matches!(r.end, End::Hard(_)), "{:?}", r.end);
        assert_eq!(r.stanzas.len(), 1);
        assert!(poison.is_empty());
        let r = read_stream(AFTER.as_bytes(), Limits::default(), &poison, 4096).await;
        assert_went_on(&r);
        assert!(poison.is_empty());
    }

    #[tokio::test]
    async fn a_rejection_the_parser_fails_on_is_replaced_by_a_bare_one_next_time() {
        // The kept start tag is fine for the reader but not for the parser (undeclared prefix).
        let bad = format!("<message u:a='1' id='bad'>{}</message>", nested("x", 70));
        let body = format!("{bad}{AFTER}");
        let poison = PoisonMemory::new();
        let first = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
        assert!(matches!(first.end, End::Hard(_)), "{:?}", first.end);
        assert_eq!(poison.len(), 1);
        let second = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
        let rej = rejection(&second);
        assert_eq!(
            (rej.limit, rej.name.as_deref()),
            (limits::UNPARSEABLE, None)
        );
    }

    #[test]
    fn the_poison_memory_forgets_the_oldest_beyond_its_capacity() {
        let p = PoisonMemory::new();
        for i in 0..PoisonMemory::CAPACITY + 10 {
            assert!(p.remember(format!("<s{i}/>").as_bytes()));
        }
        assert!(!p.remember(b"<s20/>"));
        assert_eq!(p.len(), PoisonMemory::CAPACITY);
        assert!(!p.contains(b"<s0/>"));
        assert!(p.contains(format!("<s{}/>", PoisonMemory::CAPACITY + 9).as_bytes()));
        // The process-wide memory is one memory.
        let before = PoisonMemory::global().len();
        PoisonMemory::global().remember(b"<global-test/>");
        assert_eq!(PoisonMemory::global().len(), before + 1);
    }
}
