//! What herald accepts of one inbound stanza. The component stream's reader
//! ([`super::reader::GuardedReader`]) checks these on the raw bytes, before the XML parser sees
//! a stanza; a stanza over any of them is replaced by a
//! [`Stanza::Rejected`](super::inbound::Stanza::Rejected) and the stream goes on.
//!
//! Sizes are counted in bytes as they arrive (before entities are expanded, so never less than
//! the decoded size).

use crate::config::DEFAULT_MAX_STANZA_BYTES;

/// The names of the limits, as [`RejectedStanza::limit`](super::inbound::RejectedStanza::limit)
/// reports them.
pub const DEPTH: &str = "nesting depth";
pub const NAME_SIZE: &str = "name size";
pub const VALUE_SIZE: &str = "attribute value size";
pub const ATTRIBUTES: &str = "attributes per element";
pub const CHILDREN: &str = "children per element";
pub const ELEMENTS: &str = "elements per stanza";
pub const TEXT_SIZE: &str = "text size";
pub const STANZA_SIZE: &str = "stanza size";
/// Comments, processing instructions and document type declarations: RFC 6120 §11.1 forbids
/// them on a stream, and the XML parser would end the stream on them.
pub const RESTRICTED_XML: &str = "restricted xml";
/// Not well-formed as far as the reader can tell (e.g. mismatched end tag, `<` in a value).
pub const MALFORMED: &str = "malformed xml";
/// The same bytes made the XML parser end an earlier connection's stream.
pub const UNPARSEABLE: &str = "unparseable";

/// Every limit name above.
pub const ALL: [&str; 11] = [
    DEPTH,
    NAME_SIZE,
    VALUE_SIZE,
    ATTRIBUTES,
    CHILDREN,
    ELEMENTS,
    TEXT_SIZE,
    STANZA_SIZE,
    RESTRICTED_XML,
    MALFORMED,
    UNPARSEABLE,
];

/// The `&'static` name of a limit, from its text.
pub fn by_name(name: &str) -> Option<&'static str> {
    ALL.iter().copied().find(|l| *l == name)
}

/// Deepest nesting, the stanza element itself counting as 1. The stanza builder holds to it
/// too, so nothing deeper is ever built, walked or dropped recursively.
pub const MAX_DEPTH: usize = 64;

/// Longest attribute value or name the XML parser herald uses accepts (rxml's default
/// `max_token_length`; tokio-xmpp creates its parser with the defaults and offers no way to
/// change them): a longer one ends the stream. The reader's own size limits are capped to it.
pub const PARSER_TOKEN_LIMIT: usize = 8192;

/// The limits of the component stream's reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting, the stanza element counting as 1 (at most [`MAX_DEPTH`]).
    pub max_depth: usize,
    /// Longest element or attribute name, prefix included (at most [`PARSER_TOKEN_LIMIT`]).
    pub max_name_bytes: usize,
    /// Longest attribute value (at most [`PARSER_TOKEN_LIMIT`]).
    pub max_attr_value_bytes: usize,
    /// Most attributes on one element (namespace declarations included).
    pub max_attrs: usize,
    /// Most child elements of one element.
    pub max_children: usize,
    /// Most elements in one stanza, the stanza element included.
    pub max_elements: usize,
    /// Longest run of text between two tags (a CDATA section counts as its own run).
    pub max_text_bytes: usize,
    /// Largest stanza, from its `<` to its last `>`: `component.max_stanza_bytes`.
    pub max_stanza_bytes: usize,
}

impl Limits {
    /// The defaults, with `component.max_stanza_bytes`.
    pub fn new(max_stanza_bytes: usize) -> Limits {
        Limits {
            max_depth: MAX_DEPTH,
            // XMPP names are short; a JID (the longest value herald reads) is at most 3071 bytes.
            max_name_bytes: 1024,
            max_attr_value_bytes: PARSER_TOKEN_LIMIT,
            max_attrs: 64,
            max_children: 1024,
            max_elements: 16 * 1024,
            // Prosody's default c2s stanza limit: any text a client may send fits.
            max_text_bytes: 256 * 1024,
            max_stanza_bytes,
        }
    }

    /// These limits with the caps above applied.
    pub(crate) fn capped(self) -> Limits {
        Limits {
            max_depth: self.max_depth.min(MAX_DEPTH),
            max_name_bytes: self.max_name_bytes.min(PARSER_TOKEN_LIMIT),
            max_attr_value_bytes: self.max_attr_value_bytes.min(PARSER_TOKEN_LIMIT),
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(DEFAULT_MAX_STANZA_BYTES)
    }
}
