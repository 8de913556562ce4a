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
mod tests {
    use super::*;

    fn ok(from: &str) -> UserJid<'_> {
        match user_jid(from) {
            Ok(jid) => jid,
            Err(e) => panic!("{from:?} refused: {e}"),
        }
    }

    fn err(from: &str) -> JidProblem {
        match user_jid(from) {
            Ok(jid) => panic!("{from:?} accepted as {jid}"),
            Err(e) => e,
        }
    }

    #[test]
    fn everyday_jids_are_borrowed_unchanged() {
        for from in [
            "carol@localhost/harness",
            "alice@localhost/phone",
            "user@example.org/Conversations.abcd",
            "bob@chat.example.org/gajim.X1Y2Z3",
            "a.b-c_d+e!#$%*=?^`{|}~@example.org/Monal-iOS.1a2b",
            "1@127.0.0.1/x",
            "alice@example.org/Alice's laptop (home)",
            "alice@example.org/res/with/slashes@and@ats",
        ] {
            let jid = ok(from);
            assert!(jid.is_unchanged(), "{from:?} was copied");
            assert_eq!(jid.as_str(), from);
        }
    }

    #[test]
    fn parts_are_split_at_the_first_at_and_slash() {
        let jid = ok("user@example.org/Conversations.abcd/x@y");
        assert_eq!(jid.localpart(), "user");
        assert_eq!(jid.domain(), "example.org");
        assert_eq!(jid.bare(), "user@example.org");
        assert_eq!(jid.resource(), "Conversations.abcd/x@y");
        assert_eq!(jid.to_string(), "user@example.org/Conversations.abcd/x@y");
    }

    #[test]
    fn case_is_folded_in_localpart_and_domain_not_resource() {
        let jid = ok("ALICE@LOCALHOST/Phone");
        assert_eq!(jid.as_str(), "alice@localhost/Phone");
        assert_eq!(jid.domain(), "localhost");
        assert_eq!(jid.bare(), "alice@localhost");
        assert!(!jid.is_unchanged());
        assert_eq!(
            ok("alice@Example.ORG/phone").as_str(),
            "alice@example.org/phone"
        );
    }

    #[test]
    fn non_ascii_localparts() {
        let jid = ok("josé@example.org/phone");
        assert_eq!(jid.as_str(), "josé@example.org/phone");
        assert!(jid.is_unchanged());
        // Uppercase non-ASCII is case-folded, as nodeprep does.
        assert_eq!(
            ok("JOSÉ@example.org/phone").as_str(),
            "josé@example.org/phone"
        );
        assert_eq!(ok("ÉLODIE@example.org/x").localpart(), "élodie");
        assert_eq!(ok("Straße@example.org/x").localpart(), "strasse");
        assert_eq!(ok("ДМИТРИЙ@example.org/x").localpart(), "дмитрий");
        // Decomposed é (e + U+0301) is composed (NFKC); fullwidth letters become ASCII.
        assert_eq!(ok("jose\u{301}@example.org/x").localpart(), "josé");
        assert_eq!(ok("ａｌｉｃｅ@example.org/x").localpart(), "alice");
        // Right-to-left text on its own is fine.
        assert!(ok("שלום@example.org/x").is_unchanged());
        assert!(ok("张伟@example.org/手机").is_unchanged());
    }

    #[test]
    fn hostile_localparts_are_refused() {
        assert_eq!(err("@localhost/x"), JidProblem::EmptyLocalpart);
        assert_eq!(err("al ice@localhost/x"), JidProblem::BadLocalpart);
        let long = format!("{}@localhost/x", "a".repeat(3000));
        assert_eq!(err(&long), JidProblem::LocalpartTooLong);
        assert_eq!(
            err(&format!("{}@localhost/x", "a".repeat(1024))),
            JidProblem::LocalpartTooLong
        );
        assert!(user_jid(&format!("{}@localhost/x", "a".repeat(1023))).is_ok());
        for bad in ['"', '&', '\'', ':', '<', '>', '\0', '\t', '\n', '\u{7f}'] {
            assert_eq!(
                err(&format!("al{bad}ice@localhost/x")),
                JidProblem::BadLocalpart,
                "{bad:?}"
            );
        }
        for bad in [
            "\u{202e}",  // right-to-left override
            "\u{200e}",  // left-to-right mark
            "\u{2067}",  // right-to-left isolate (newer than Unicode 3.2)
            "\u{200b}",  // zero-width space
            "\u{200d}",  // zero-width joiner
            "\u{feff}",  // zero-width no-break space
            "\u{ad}",    // soft hyphen
            "\u{85}",    // C1 control
            "\u{a0}",    // no-break space
            "\u{3000}",  // ideographic space
            "\u{e000}",  // private use
            "\u{fffd}",  // replacement character
            "\u{1f600}", // emoji: a symbol, not an identifier character
        ] {
            assert_eq!(
                err(&format!("al{bad}ice@localhost/x")),
                JidProblem::BadLocalpart,
                "{bad:?}"
            );
        }
        // A fullwidth '@' becomes a real '@' under NFKC, which a localpart cannot hold.
        assert_eq!(err("a\u{ff20}b@localhost/x"), JidProblem::BadLocalpart);
        // Mixed directions (RFC 3454 §6).
        assert_eq!(err("aשלום@localhost/x"), JidProblem::BadLocalpart);
    }

    #[test]
    fn structure_is_required() {
        assert_eq!(err("localhost/x"), JidProblem::NoLocalpart);
        assert_eq!(err("localhost"), JidProblem::NoLocalpart);
        assert_eq!(err(""), JidProblem::NoLocalpart);
        assert_eq!(err("localhost/alice@x"), JidProblem::NoLocalpart);
        assert_eq!(err("alice@localhost"), JidProblem::NoResource);
        assert_eq!(err("alice@localhost/"), JidProblem::EmptyResource);
        assert_eq!(err("alice@/x"), JidProblem::EmptyDomain);
        assert_eq!(err("a@b@localhost/x"), JidProblem::TooManyAts);
        assert_eq!(err("@/"), JidProblem::EmptyLocalpart);
    }

    #[test]
    fn hostile_domains_are_refused() {
        for bad in [
            "local host",
            "localhost..org",
            ".localhost",
            "-localhost",
            "localhost-",
            "loc<al>host",
            "xn--zz",
            "a\u{202e}b",
            "exa\u{200b}mple.org",
        ] {
            assert_eq!(
                err(&format!("alice@{bad}/x")),
                JidProblem::BadDomain,
                "{bad:?}"
            );
        }
        assert_eq!(
            err(&format!("alice@{}/x", "a".repeat(1024))),
            JidProblem::DomainTooLong
        );
        assert_eq!(
            err(&format!("alice@{}.org/x", "a".repeat(64))),
            JidProblem::BadDomain
        );
    }

    #[test]
    fn unusual_valid_domains_go_through_the_jid_crate() {
        assert_eq!(ok("alice@localhost./x").as_str(), "alice@localhost/x");
        assert_eq!(ok("alice@[::1]/x").domain(), "[::1]");
        assert_eq!(ok("alice@MÜNCHEN.de/x").domain(), "münchen.de");
        assert_eq!(
            ok("alice@xn--mnchen-3ya.de/x").domain(),
            "xn--mnchen-3ya.de"
        );
    }

    #[test]
    fn hostile_resources_are_refused() {
        for bad in [
            "\0", "\t", "\n", "\r", "\u{1b}", "\u{7f}", "\u{85}", "\u{202e}", "\u{2066}",
            "\u{200b}", "\u{feff}", "\u{2028}", "\u{1680}", "\u{e000}", "\u{fffd}",
        ] {
            assert_eq!(
                err(&format!("alice@localhost/ph{bad}one")),
                JidProblem::BadResource,
                "{bad:?}"
            );
        }
        let long = format!("alice@localhost/{}", "r".repeat(1024));
        assert_eq!(err(&long), JidProblem::ResourceTooLong);
        assert_eq!(err("alice@localhost/aשלום"), JidProblem::BadResource);
        // resourceprep's NFKC turns a no-break space into a plain space, which is allowed.
        assert_eq!(ok("alice@localhost/ph\u{a0}one").resource(), "ph one");
        assert_eq!(ok("alice@localhost/ph\u{3000}one").resource(), "ph one");
    }

    #[test]
    fn resources_with_newer_characters() {
        // Emoji are newer than Unicode 3.2: kept as sent.
        let jid = ok("alice@localhost/phone 📱");
        assert_eq!(jid.resource(), "phone 📱");
        assert!(jid.is_unchanged());
        assert!(ok("alice@localhost/📱").is_unchanged());
        assert_eq!(
            ok("alice@localhost/Alice’s iPhone").resource(),
            "Alice’s iPhone"
        );
        // The rest must already be prepared (here a compatibility ligature NFKC would change).
        assert_eq!(err("alice@localhost/\u{fb01}x📱"), JidProblem::BadResource);
        // Compatibility forms without newer characters are normalised.
        assert_eq!(ok("alice@localhost/\u{fb01}x").resource(), "fix");
    }

    /// On ASCII, the hand-written fast paths must agree with the jid crate's full preparation:
    /// same acceptance, same result. Inputs are drawn from an alphabet of the characters the
    /// fast paths treat specially.
    #[test]
    fn ascii_fast_path_agrees_with_the_jid_crate() {
        let alphabet: &[u8] = b"aZz09-.@/ _\"&':<>!~\t[]x";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut accepted = 0;
        for _ in 0..100_000 {
            let len = (next() % 12) as usize;
            let mut s: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Most inputs get a plausible shape, so the accepting paths are exercised too.
            if next() % 4 != 0 {
                s.splice(0..0, b"al".iter().copied());
                let at = 2 + (next() % (s.len() as u64 - 1)) as usize;
                s.insert(at.min(s.len()), b'@');
                s.push(b'/');
                s.push(b'r');
            }
            let s = String::from_utf8(s).unwrap();
            let ours = user_jid(&s);
            let theirs = xmpp_parsers::jid::FullJid::new(&s).map(|j| j.to_string());
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    // The jid crate strips a domain's trailing dot only when another part
                    // changed; herald always does.
                    let kept_dot = format!("{}@{}./{}", a.localpart(), a.domain(), a.resource());
                    assert!(a.as_str() == b || kept_dot == *b, "{s:?}: {a} vs {b}");
                    accepted += 1;
                }
                (Err(_), Err(_)) => {}
                // The jid crate accepts domain JIDs with a resource; herald wants a localpart.
                (Err(JidProblem::NoLocalpart), Ok(_)) => {}
                _ => panic!("{s:?}: herald {ours:?}, jid crate {theirs:?}"),
            }
        }
        assert!(accepted > 1000, "only {accepted} inputs accepted");
    }

    #[test]
    fn problems_have_counter_names() {
        assert_eq!(JidProblem::NoLocalpart.as_str(), "no_localpart");
        assert_eq!(JidProblem::BadResource.as_str(), "bad_resource");
        assert_eq!(
            JidProblem::BadResource.to_string(),
            "resource not allowed by resourceprep"
        );
    }

    #[test]
    fn show_keeps_only_the_four_values() {
        for value in ["away", "chat", "dnd", "xa"] {
            assert_eq!(show(Some(value)), Some(value));
            assert_eq!(show(Some(&format!(" \n{value}\t "))), Some(value));
        }
        for bogus in [
            "bogus&<x>",
            "",
            "  ",
            "DND",
            "available",
            "online",
            "away dnd",
        ] {
            assert_eq!(show(Some(bogus)), None, "{bogus:?}");
        }
        assert_eq!(show(None), None);
    }

    #[test]
    fn cap_text_cuts_at_a_char_boundary() {
        assert_eq!(cap_text("hello", 10), "hello");
        assert_eq!(cap_text("hello", 5), "hello");
        assert_eq!(cap_text("hello", 3), "hel");
        assert_eq!(cap_text("hello", 0), "");
        // 'é' is two bytes, '€' three, '📱' four.
        assert_eq!(cap_text("héllo", 2), "h");
        assert_eq!(cap_text("héllo", 3), "hé");
        assert_eq!(cap_text("a€", 3), "a");
        assert_eq!(cap_text("a€", 4), "a€");
        assert_eq!(cap_text("📱", 3), "");
        let mib = "é".repeat(512 * 1024);
        let capped = cap_text(&mib, 1023);
        assert_eq!(capped.len(), 1022);
        assert!(capped.chars().all(|c| c == 'é'));
    }

    #[test]
    fn status_is_capped_and_stripped_of_controls() {
        assert_eq!(status(None, 1024), None);
        assert_eq!(status(Some(""), 1024), None);
        let plain = status(Some("on a train\n\tback at 5"), 1024);
        assert!(matches!(
            plain,
            Some(Cow::Borrowed("on a train\n\tback at 5"))
        ));
        // RTL text with its marks is kept.
        let rtl = "\u{200f}בדרך\u{200f}";
        assert_eq!(status(Some(rtl), 1024).as_deref(), Some(rtl));
        assert_eq!(
            status(Some("a\0b\u{1b}[31mc\u{7f}d\u{85}e\u{9f}f\u{a0}g"), 1024).as_deref(),
            Some("ab[31mcdef\u{a0}g")
        );
        assert_eq!(status(Some("\0\u{85}"), 1024), None);
        let huge = "x".repeat(1024 * 1024);
        assert_eq!(status(Some(&huge), 1024).map(|s| s.len()), Some(1024));
        assert_eq!(status(Some("€€"), 4).as_deref(), Some("€"));
        assert!(is_dropped_control('\u{0}'));
        assert!(!is_dropped_control('\n'));
        assert!(!is_dropped_control('\u{202e}'));
    }
}
