//! The scanner: the reader's buffer and the state machine that follows XML's structure, holds
//! each top-level element until it is complete and within the limits, and rejects the rest.

use std::collections::VecDeque;

use tracing::warn;

use super::{PoisonMemory, NS_REJECTED, PREFIX, REJECTED_ATTR};
use crate::xmpp::limits::{self, Limits};

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
    pub(super) buf: Vec<u8>,
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
