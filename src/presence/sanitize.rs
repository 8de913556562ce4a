//! Makes the values of a forwarded presence harmless before they reach the table and the events.
//!
//! A presence's `from`, `<show/>` and `<status/>` are written by whoever sent the stanza. The
//! server stamps `from` for its own users, but herald must not trust that every server, or every
//! path a stanza takes, did so correctly: a JID that differs from the real user's only by case, an
//! empty localpart, an invisible character or a 3 000-byte localpart would otherwise become a
//! resource of its own, with its own events.
//!
//! All functions here are pure and cheap. The common case (an ASCII JID already in normal form,
//! such as `alice@example.org/phone`, one of the four `<show/>` values, a short status) allocates
//! nothing: it runs for every presence.
//!
//! # JIDs
//!
//! [`user_jid`] accepts only `localpart@domain/resource` with all three parts present, and
//! returns the JID in the form RFC 6122 (stringprep) prepares it, the form the jid crate uses and
//! servers stamp:
//! - **localpart**: nodeprep. ASCII letters are lowercased; space, `"&'/:<>@`, controls,
//!   bidirectional controls, private-use and other prohibited code points are refused, and so is
//!   text that mixes right-to-left and left-to-right letters (RFC 3454 §6). Compatibility forms
//!   are normalised (NFKC: `ｊｏｓé` → `josé`) and non-ASCII letters case-folded (`JOSÉ` →
//!   `josé`, `ß` → `ss`), as the server does when it prepares a JID.
//! - **domain**: lowercased (domains are case-insensitive); a non-ASCII or unusual one goes
//!   through the jid crate (IDNA check and nameprep).
//! - **resource**: resourceprep. Any printable ASCII is kept as is (spaces too); controls and
//!   prohibited code points are refused.
//! - each part is at most 1023 bytes, before and after preparation. A server sends prepared JIDs,
//!   so a longer one is refused before any work is spent on it.
//!
//! Two deliberate differences from plain stringprep:
//! - characters that stringprep *maps to nothing* (zero-width space and joiners, soft hyphen,
//!   variation selectors, U+FEFF) are refused rather than removed: a prepared JID never contains
//!   them, and removing them would let `al\u{200B}ice` pass as `alice`.
//! - stringprep knows Unicode 3.2 only and refuses every code point assigned since (emoji, recent
//!   scripts). Those are accepted when the rest of the part is already prepared (a server
//!   prepares with the same tables) and the character is, in today's Unicode, a lowercase or
//!   uncased letter, a mark or a digit (localpart), or any letter, mark, number, punctuation or
//!   symbol (resource, as RFC 7622 allows). Format characters added since 3.2, such as the
//!   bidirectional isolates U+2066..U+2069, stay refused. Such characters are kept as sent.
//!
//! # Texts
//!
//! [`show`] keeps only RFC 6121's four values. [`status`] drops control characters and cuts the
//! text to a configured length with [`cap_text`]. Bidirectional and other format characters are
//! kept in a status: right-to-left text needs them, and a status is free text shown to people,
//! never used as a key. Consumers that display it are responsible for isolating it.

use std::borrow::Cow;

use stringprep::tables;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
use xmpp_parsers::jid::DomainPart;

/// Longest localpart, domain or resource (RFC 7622 §3.2–3.4), in bytes.
pub const MAX_PART_BYTES: usize = 1023;

/// Why a forwarded presence's `from` is not a user's full JID.
///
/// [`JidProblem::as_str`] is short and stable, for a DEBUG line and a counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JidProblem {
    /// No `@` before the resource: a domain or service JID (`example.org/x`).
    #[error("no localpart")]
    NoLocalpart,
    /// `@example.org/x`.
    #[error("empty localpart")]
    EmptyLocalpart,
    /// A second `@` before the resource (`a@b@example.org/x`).
    #[error("more than one '@' before the resource")]
    TooManyAts,
    /// `alice@/x`.
    #[error("empty domain")]
    EmptyDomain,
    /// A bare JID (`alice@example.org`): presence always comes from a resource.
    #[error("no resource")]
    NoResource,
    /// `alice@example.org/`.
    #[error("empty resource")]
    EmptyResource,
    /// A localpart longer than 1023 bytes.
    #[error("localpart longer than 1023 bytes")]
    LocalpartTooLong,
    /// A domain longer than 1023 bytes.
    #[error("domain longer than 1023 bytes")]
    DomainTooLong,
    /// A resource longer than 1023 bytes.
    #[error("resource longer than 1023 bytes")]
    ResourceTooLong,
    /// A character nodeprep prohibits (space, `"&'/:<>@`, control, bidirectional control,
    /// zero-width…) or mixed-direction text.
    #[error("localpart not allowed by nodeprep")]
    BadLocalpart,
    /// Not a valid domain name (IDNA or nameprep refused it).
    #[error("domain not allowed by nameprep")]
    BadDomain,
    /// A character resourceprep prohibits (control, bidirectional control, zero-width…) or
    /// mixed-direction text.
    #[error("resource not allowed by resourceprep")]
    BadResource,
}

impl JidProblem {
    /// A short snake_case name: `no_localpart`, `bad_resource`…
    pub fn as_str(&self) -> &'static str {
        match self {
            JidProblem::NoLocalpart => "no_localpart",
            JidProblem::EmptyLocalpart => "empty_localpart",
            JidProblem::TooManyAts => "too_many_ats",
            JidProblem::EmptyDomain => "empty_domain",
            JidProblem::NoResource => "no_resource",
            JidProblem::EmptyResource => "empty_resource",
            JidProblem::LocalpartTooLong => "localpart_too_long",
            JidProblem::DomainTooLong => "domain_too_long",
            JidProblem::ResourceTooLong => "resource_too_long",
            JidProblem::BadLocalpart => "bad_localpart",
            JidProblem::BadDomain => "bad_domain",
            JidProblem::BadResource => "bad_resource",
        }
    }
}

/// A user's full JID in prepared form: `localpart@domain/resource`, all three non-empty.
///
/// Borrows the input when it already was in that form (the common case), so building one costs
/// no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserJid<'a> {
    full: Cow<'a, str>,
    /// Byte offset of the `@`.
    at: usize,
    /// Byte offset of the `/`.
    slash: usize,
}

impl<'a> UserJid<'a> {
    /// The full JID, `localpart@domain/resource`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `localpart@domain`.
    pub fn bare(&self) -> &str {
        &self.full[..self.slash]
    }

    /// The localpart (before the `@`).
    pub fn localpart(&self) -> &str {
        &self.full[..self.at]
    }

    /// The domain, lowercase.
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..self.slash]
    }

    /// The resource (after the first `/`; it may itself contain `@` and `/`).
    pub fn resource(&self) -> &str {
        &self.full[self.slash + 1..]
    }

    /// Whether the input was already in prepared form (nothing was allocated).
    pub fn is_unchanged(&self) -> bool {
        matches!(self.full, Cow::Borrowed(_))
    }

    /// The full JID, borrowed from the input when it was unchanged.
    pub fn into_cow(self) -> Cow<'a, str> {
        self.full
    }
}

impl std::fmt::Display for UserJid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

/// Validates and prepares a forwarded presence's `from` (see the module documentation).
///
/// Log a refused `from` with `?` (Debug), which escapes control and bidirectional characters.
pub fn user_jid(from: &str) -> Result<UserJid<'_>, JidProblem> {
    // The resource starts at the first '/', and may contain '@' and '/' itself.
    let (bare, resource) = match from.find('/') {
        Some(slash) => (&from[..slash], &from[slash + 1..]),
        None => (from, ""),
    };
    let Some(at) = bare.find('@') else {
        return Err(JidProblem::NoLocalpart);
    };
    if from.len() == bare.len() {
        // No '/': a bare JID. Checked after the '@' so that a domain reads as `no_localpart`.
        return Err(JidProblem::NoResource);
    }
    let (local, domain) = (&bare[..at], &bare[at + 1..]);
    if domain.contains('@') {
        return Err(JidProblem::TooManyAts);
    }
    let local = localpart(local)?;
    let domain = domain_part(domain)?;
    let resource = resource_part(resource)?;
    let at = local.len();
    let slash = at + 1 + domain.len();
    let full = match (&local, &domain, &resource) {
        (Cow::Borrowed(_), Cow::Borrowed(_), Cow::Borrowed(_)) => Cow::Borrowed(from),
        _ => {
            let mut full = String::with_capacity(slash + 1 + resource.len());
            for piece in [&*local, "@", &*domain, "/", &*resource] {
                full.push_str(piece);
            }
            Cow::Owned(full)
        }
    };
    Ok(UserJid { full, at, slash })
}

// Byte classes for the ASCII fast paths, OR-ed over a whole part in one branch-free pass.
/// Not ASCII: the part takes the stringprep path.
const NON_ASCII: u8 = 1;
/// Refused in this part.
const BAD: u8 = 2;
/// An uppercase letter, lowercased in a localpart.
const UPPER: u8 = 4;

const fn byte_classes(localpart: bool) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            0x80..=0xff => NON_ASCII,
            // Controls (C.2.1).
            0x00..=0x1f | 0x7f => BAD,
            // resourceprep keeps every printable ASCII character, space included.
            _ if !localpart => 0,
            b'A'..=b'Z' => UPPER,
            // Space (C.1.1) and the characters nodeprep adds to the prohibited ones.
            b' ' | b'"' | b'&' | b'\'' | b'/' | b':' | b'<' | b'>' | b'@' => BAD,
            _ => 0,
        };
        b += 1;
    }
    table
}

static LOCALPART_BYTES: [u8; 256] = byte_classes(true);
static RESOURCE_BYTES: [u8; 256] = byte_classes(false);

fn classes(s: &str, table: &[u8; 256]) -> u8 {
    s.bytes().fold(0, |acc, b| acc | table[usize::from(b)])
}

fn localpart(s: &str) -> Result<Cow<'_, str>, JidProblem> {
    check_len(s, JidProblem::EmptyLocalpart, JidProblem::LocalpartTooLong)?;
    let classes = classes(s, &LOCALPART_BYTES);
    if classes & NON_ASCII == 0 {
        // For ASCII, nodeprep is exactly: fold A-Z, refuse space, controls and `"&'/:<>@`.
        return if classes & BAD != 0 {
            Err(JidProblem::BadLocalpart)
        } else if classes & UPPER != 0 {
            Ok(Cow::Owned(s.to_ascii_lowercase()))
        } else {
            Ok(Cow::Borrowed(s))
        };
    }
    let prepared =
        prep(s, stringprep::nodeprep, localpart_new_char).ok_or(JidProblem::BadLocalpart)?;
    check_len(
        &prepared,
        JidProblem::EmptyLocalpart,
        JidProblem::LocalpartTooLong,
    )?;
    Ok(prepared)
}

fn resource_part(s: &str) -> Result<Cow<'_, str>, JidProblem> {
    check_len(s, JidProblem::EmptyResource, JidProblem::ResourceTooLong)?;
    let classes = classes(s, &RESOURCE_BYTES);
    if classes & NON_ASCII == 0 {
        // For ASCII, resourceprep keeps every printable character and refuses controls.
        return if classes & BAD != 0 {
            Err(JidProblem::BadResource)
        } else {
            Ok(Cow::Borrowed(s))
        };
    }
    let prepared =
        prep(s, stringprep::resourceprep, resource_new_char).ok_or(JidProblem::BadResource)?;
    check_len(
        &prepared,
        JidProblem::EmptyResource,
        JidProblem::ResourceTooLong,
    )?;
    Ok(prepared)
}

fn domain_part(s: &str) -> Result<Cow<'_, str>, JidProblem> {
    check_len(s, JidProblem::EmptyDomain, JidProblem::DomainTooLong)?;
    match ascii_host(s) {
        Some(false) => Ok(Cow::Borrowed(s)),
        Some(true) => Ok(Cow::Owned(s.to_ascii_lowercase())),
        // As in the other parts, characters that nameprep would silently drop are refused.
        None if s.chars().any(tables::commonly_mapped_to_nothing) => Err(JidProblem::BadDomain),
        // IP literals, a trailing dot, punycode, non-ASCII, anything unusual: the jid crate
        // decides (IDNA check, then nameprep).
        None => match DomainPart::new(s) {
            // Borrowed but shorter: the jid crate dropped a trailing dot.
            Ok(Cow::Borrowed(d)) if d.as_str() == s => Ok(Cow::Borrowed(s)),
            Ok(d) => {
                let d = d.as_str().to_owned();
                check_len(&d, JidProblem::EmptyDomain, JidProblem::DomainTooLong)?;
                Ok(Cow::Owned(d))
            }
            Err(_) => Err(JidProblem::BadDomain),
        },
    }
}

/// For an everyday ASCII host name (labels of letters, digits and inner hyphens, 1..=63 bytes,
/// at most 253 bytes in all, no `xn--`-style label), whether it has uppercase letters to fold.
/// `None`: not such a name, the slow path decides.
fn ascii_host(s: &str) -> Option<bool> {
    let bytes = s.as_bytes();
    if bytes.len() > 253 {
        return None;
    }
    let mut upper = false;
    let mut start = 0;
    // One pass; `i == len` closes the last label.
    for i in 0..=bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b'.');
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => {}
            b'A'..=b'Z' => upper = true,
            b'.' => {
                let label = &bytes[start..i];
                let (first, last) = (*label.first()?, *label.last()?);
                if label.len() > 63
                    || first == b'-'
                    || last == b'-'
                    || label.get(2..4) == Some(b"--")
                {
                    return None;
                }
                start = i + 1;
            }
            _ => return None,
        }
    }
    Some(upper)
}

fn check_len(s: &str, empty: JidProblem, too_long: JidProblem) -> Result<(), JidProblem> {
    if s.is_empty() {
        Err(empty)
    } else if s.len() > MAX_PART_BYTES {
        Err(too_long)
    } else {
        Ok(())
    }
}

/// Stringprep `profile` on a part that is not all ASCII, with the two differences the module
/// documentation describes. `None`: refused.
fn prep<'a>(
    s: &'a str,
    profile: fn(&str) -> Result<Cow<'_, str>, stringprep::Error>,
    new_char_allowed: fn(char) -> bool,
) -> Option<Cow<'a, str>> {
    if s.chars().any(tables::commonly_mapped_to_nothing) {
        return None;
    }
    if s.chars().any(tables::unassigned_code_point) {
        // Characters newer than Unicode 3.2: allowed ones are kept as sent, and the rest of the
        // part must already be prepared.
        let mut rest = String::with_capacity(s.len());
        for c in s.chars() {
            if !tables::unassigned_code_point(c) {
                rest.push(c);
            } else if !new_char_allowed(c) {
                return None;
            }
        }
        if rest.is_empty() {
            return Some(Cow::Borrowed(s));
        }
        return match profile(&rest) {
            Ok(prepared) if *prepared == *rest => Some(Cow::Borrowed(s)),
            _ => None,
        };
    }
    match profile(s).ok()? {
        // stringprep returns an owned copy even when nothing changed; keep borrowing then.
        Cow::Owned(prepared) if prepared != s => Some(Cow::Owned(prepared)),
        _ => Some(Cow::Borrowed(s)),
    }
}

/// A character assigned since Unicode 3.2 that may stand in a localpart: what RFC 7622's
/// IdentifierClass allows, less uppercase and titlecase letters (they would need case folding
/// that stringprep's tables do not know).
fn localpart_new_char(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::LowercaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
            | GeneralCategory::NonspacingMark
            | GeneralCategory::SpacingMark
            | GeneralCategory::DecimalNumber
    )
}

/// A character assigned since Unicode 3.2 that may stand in a resource: a letter, mark, number,
/// punctuation or symbol (RFC 7622's OpaqueString allows them), never a space, control or format
/// character.
fn resource_new_char(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Mark
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    )
}

/// A `<show/>` value: one of RFC 6121's four (`away`, `chat`, `dnd`, `xa`, surrounding
/// whitespace ignored, case-sensitive as the RFC defines them), or `None`, which means plain
/// available. Anything else is dropped rather than carried into the table and the events.
pub fn show(raw: Option<&str>) -> Option<&'static str> {
    match raw?.trim() {
        "away" => Some("away"),
        "chat" => Some("chat"),
        "dnd" => Some("dnd"),
        "xa" => Some("xa"),
        _ => None,
    }
}

/// The longest prefix of `text` that is at most `max_bytes` long and ends at a character
/// boundary: `text` itself when it fits, never a split UTF-8 sequence. With `max_bytes` below the
/// first character's length the result is empty.
pub fn cap_text(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `c` is dropped from a status: C0 controls other than tab, line feed and carriage
/// return, DEL, and C1 controls.
///
/// XML 1.0 already forbids C0 controls other than those three in a document, and the stream
/// parser enforces it, so on the wire only DEL and C1 (U+0080..U+009F, allowed but "discouraged"
/// by XML 1.0 §2.2) can occur. Dropping all of them here keeps the guarantee independent of the
/// parser, and keeps NUL, the presence table's separator, out of the stored text.
pub fn is_dropped_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// A `<status/>` text as herald keeps and forwards it: cut to `max_bytes` with [`cap_text`], with
/// the control characters of [`is_dropped_control`] removed. `None` when absent or when nothing
/// is left. Borrows the input unless a control character had to be removed.
pub fn status(raw: Option<&str>, max_bytes: usize) -> Option<Cow<'_, str>> {
    let text = cap_text(raw?, max_bytes);
    let text = if has_dropped_control(text) {
        Cow::Owned(text.chars().filter(|&c| !is_dropped_control(c)).collect())
    } else {
        Cow::Borrowed(text)
    };
    (!text.is_empty()).then_some(text)
}

/// Byte-level scan for [`is_dropped_control`]: C0 and DEL are single bytes, C1 is `C2 80..=9F`.
fn has_dropped_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    // A quick pass the compiler vectorises; most statuses have none of these bytes at all.
    if !bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    }) {
        return false;
    }
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0x00..=0x1f | 0x7f => true,
        0xc2 => bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)),
        _ => false,
    })
}

#[cfg(test)]
#[path = "sanitize_tests.rs"]
mod tests;
