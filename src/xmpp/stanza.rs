//! Namespaces and small builders for the stanzas herald sends. Every stanza herald sends carries
//! `from` (Prosody 13 refuses stanzas from a component without it).

use minidom::Element;

/// The stanza namespace of a component stream.
pub const NS_COMPONENT: &str = "jabber:component:accept";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// `<iq type='get' id=ID from=FROM to=TO><ping xmlns='urn:xmpp:ping'/></iq>`
pub fn ping(id: &str, from: &str, to: &str) -> Element {
    Element::builder("iq", NS_COMPONENT)
        .attr(crate::n!("type"), "get")
        .attr(crate::n!("id"), id)
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), to)
        .append(Element::builder("ping", NS_PING).build())
        .build()
}

/// `<iq type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`
pub fn disco_info_query(id: &str, from: &str, to: &str) -> Element {
    Element::builder("iq", NS_COMPONENT)
        .attr(crate::n!("type"), "get")
        .attr(crate::n!("id"), id)
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), to)
        .append(Element::builder("query", NS_DISCO_INFO).build())
        .build()
}

/// The `error` answer to `iq`, from `from` (the one place herald builds an IQ error answer).
pub fn iq_error(iq: &Element, from: &str, error: &StanzaError) -> Element {
    let mut b = Element::builder("iq", NS_COMPONENT)
        .attr(crate::n!("type"), "error")
        .attr(crate::n!("from"), from)
        .attr(crate::n!("id"), iq.attr("id").unwrap_or_default());
    if let Some(to) = iq.attr("from") {
        b = b.attr(crate::n!("to"), to);
    }
    b.append(error.to_element()).build()
}

/// The first child that is a stanza error condition, e.g. `item-not-found`.
pub fn error_condition(stanza: &Element) -> Option<&str> {
    let error = stanza.children().find(|c| c.name() == "error")?;
    error
        .children()
        .find(|c| c.ns() == NS_STANZA_ERRORS && c.name() != "text")
        .map(|c| c.name())
}

/// The `type` of a stanza error (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    /// An unknown or missing type counts as `cancel` (the error is final).
    fn parse(value: Option<&str>) -> ErrorType {
        match value {
            Some("auth") => ErrorType::Auth,
            Some("continue") => ErrorType::Continue,
            Some("modify") => ErrorType::Modify,
            Some("wait") => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error: its type, defined condition and optional text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition} ({}){}", kind.as_str(), text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StanzaError {
    pub kind: ErrorType,
    /// E.g. `item-not-found`; `undefined-condition` when the error names none.
    pub condition: String,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.3.2) as `(namespace, name)`, e.g.
    /// XEP-0050's `<bad-sessionid xmlns='http://jabber.org/protocol/commands'/>`.
    pub app: Option<(String, String)>,
}

/// Longest error text herald keeps from a peer's error.
const MAX_ERROR_TEXT: usize = 256;

impl StanzaError {
    pub fn new(kind: ErrorType, condition: &str) -> Self {
        StanzaError {
            kind,
            condition: condition.to_owned(),
            text: None,
            app: None,
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Adds an application-specific condition `<NAME xmlns=NS/>`.
    pub fn with_app(mut self, ns: &str, name: &str) -> Self {
        self.app = Some((ns.to_owned(), name.to_owned()));
        self
    }

    pub fn service_unavailable() -> Self {
        StanzaError::new(ErrorType::Cancel, "service-unavailable")
    }

    pub fn bad_request(text: &str) -> Self {
        StanzaError::new(ErrorType::Modify, "bad-request").with_text(text)
    }

    /// Reads the `<error/>` of an error stanza (a missing one reads as `undefined-condition`).
    pub fn from_stanza(stanza: &Element) -> Self {
        let error = stanza.children().find(|c| c.name() == "error");
        let kind = ErrorType::parse(error.and_then(|e| e.attr("type")));
        let condition = error_condition(stanza)
            .unwrap_or("undefined-condition")
            .to_owned();
        let text = error
            .and_then(|e| {
                e.children()
                    .find(|c| c.ns() == NS_STANZA_ERRORS && c.name() == "text")
            })
            .map(|t| {
                let mut t = t.text();
                if t.len() > MAX_ERROR_TEXT {
                    let mut cut = MAX_ERROR_TEXT;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    t.truncate(cut);
                }
                t
            });
        let app = error.and_then(|e| {
            e.children()
                .find(|c| c.ns() != NS_STANZA_ERRORS)
                .map(|c| (c.ns(), c.name().to_owned()))
        });
        StanzaError {
            kind,
            condition,
            text,
            app,
        }
    }

    /// The `<error/>` element (in the stream's namespace) that carries this error.
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("error", NS_COMPONENT)
            .attr(crate::n!("type"), self.kind.as_str())
            .append(Element::builder(self.condition.as_str(), NS_STANZA_ERRORS).build());
        if let Some(text) = &self.text {
            b = b.append(
                Element::builder("text", NS_STANZA_ERRORS)
                    .append(text.as_str())
                    .build(),
            );
        }
        if let Some((ns, name)) = &self.app {
            b = b.append(Element::builder(name.as_str(), ns.as_str()).build());
        }
        b.build()
    }
}

/// Appends `s` escaped for an XML text node.
pub fn escape_text_into(out: &mut String, s: &str) {
    escape_into(out, s, false);
}

/// Appends `s` escaped for an XML attribute value (quoted with `'` or `"`).
pub fn escape_attr_into(out: &mut String, s: &str) {
    escape_into(out, s, true);
}

fn escape_into(out: &mut String, s: &str, attr: bool) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\'' if attr => "&apos;",
            b'"' if attr => "&quot;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// An attribute name for minidom's builder, checked at compile time: `n!("type")`.
#[macro_export]
macro_rules! n {
    ($s:literal) => {
        ::rxml::xml_ncname!($s).to_owned()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_through_a_parser() {
        let nasty = "a&b<c>d'e\"f \u{1F3AE} ]]>";
        let mut xml = String::from("<x xmlns='urn:t' v='");
        escape_attr_into(&mut xml, nasty);
        xml.push_str("'>");
        escape_text_into(&mut xml, nasty);
        xml.push_str("</x>");
        let el: Element = xml.parse().unwrap();
        assert_eq!(el.attr("v"), Some(nasty));
        assert_eq!(el.text(), nasty);
    }
}
