//! Makes user-supplied presence values harmless (provisional: basic checks only).

use std::borrow::Cow;

/// Validates a user full JID `node@domain/resource`; returns it with a lowercase domain, and
/// where its domain starts.
pub fn user_jid(from: &str) -> Result<(Cow<'_, str>, usize), &'static str> {
    let (bare, resource) = from.split_once('/').ok_or("no resource")?;
    let (node, domain) = bare.split_once('@').ok_or("no localpart")?;
    if node.is_empty() || domain.is_empty() || resource.is_empty() {
        return Err("empty part");
    }
    let start = node.len() + 1;
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        let mut s = String::with_capacity(from.len());
        s.push_str(node);
        s.push('@');
        s.push_str(&domain.to_ascii_lowercase());
        s.push('/');
        s.push_str(resource);
        return Ok((Cow::Owned(s), start));
    }
    Ok((Cow::Borrowed(from), start))
}

/// RFC 6121's four `show` values; anything else is absent.
pub fn show(raw: Option<&str>) -> Option<&'static str> {
    match raw.map(str::trim) {
        Some("away") => Some("away"),
        Some("chat") => Some("chat"),
        Some("dnd") => Some("dnd"),
        Some("xa") => Some("xa"),
        _ => None,
    }
}

/// `text` cut to at most `max_bytes`, at a character boundary.
pub fn cap_text(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}
