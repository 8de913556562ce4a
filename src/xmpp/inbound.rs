//! What the connection reads off the stream: a `<presence/>` is parsed straight from the XML
//! events into the few fields herald uses ([`PresenceStanza`]); anything else becomes a minidom
//! [`Element`]; a stanza the component stream's reader ([`super::reader`]) found over one of
//! its [limits](super::limits) arrives as a [`RejectedStanza`], without its content.
//!
//! Presences are nearly all of the inbound traffic (one per user status change, forwarded under
//! XEP-0356), and building a minidom tree for each one costs about as much as the XML parse
//! itself. The fields kept follow what [`Element`] would give for them: the first `<show/>`,
//! `<status/>` and `<priority/>` child in the stanza namespace, each with its direct text; the
//! presence of a `<delay xmlns='urn:xmpp:delay'/>` and of a MUC `<x xmlns='…muc#user'/>` child.
//! A MUC presence or a presence error also keeps what the rooms read of it
//! ([`super::muc_presence`]).
//! Other children (caps, vCard updates…) and anything nested deeper are skipped.
//!
//! Other elements are built without recursion, and never deeper than
//! [`MAX_DEPTH`](super::limits::MAX_DEPTH) (deeper, the element is skipped and reported as
//! rejected), so nothing that is built is walked or dropped recursively beyond that depth.

use minidom::Element;
use xso::error::{Error, FromEventsError};
use xso::{Context, FromEventsBuilder, FromXml};

use super::limits::{self, MAX_DEPTH};
use super::muc_presence::{MucCollector, MucDetails};
use super::reader::{NS_REJECTED, REJECTED_ATTR};
use super::stanza::{self, NS_COMPONENT, NS_DELAY, NS_MUC_USER};

/// One top-level element of the component stream.
#[derive(Debug)]
pub enum Stanza {
    Presence(PresenceStanza),
    Other(Element),
    /// Skipped for being over a limit; nothing of its content was kept.
    Rejected(RejectedStanza),
}

/// A `<presence/>`, reduced to what herald reads of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PresenceStanza {
    pub from: Option<String>,
    /// The `type` attribute; `None` means available.
    pub kind: Option<String>,
    pub show: Option<String>,
    pub status: Option<String>,
    /// The `<priority/>` text, unparsed.
    pub priority: Option<String>,
    /// Carries `<delay xmlns='urn:xmpp:delay'/>`.
    pub delayed: bool,
    /// Carries `<x xmlns='http://jabber.org/protocol/muc#user'/>` (a MUC occupant presence).
    pub muc_user: bool,
    /// What the rooms read: the muc#user item, status codes and `<destroy/>`, and the
    /// `<error/>` of a `type='error'` presence; `None` for a presence with neither.
    pub muc: Option<Box<MucDetails>>,
}

/// A stanza skipped for being over a limit: what its start tag said, when that tag was itself
/// within the limits (else every field but `limit` is `None`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RejectedStanza {
    /// Local name, e.g. `iq`.
    pub name: Option<String>,
    /// Namespace, e.g. `jabber:component:accept`.
    pub ns: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
    /// The `type` attribute.
    pub kind: Option<String>,
    /// Which limit, one of [`limits::ALL`], e.g. [`limits::DEPTH`].
    pub limit: &'static str,
}

impl RejectedStanza {
    /// An `<iq type='get|set'/>`: it must be answered (see [`RejectedStanza::error_reply`]).
    pub fn is_iq_request(&self) -> bool {
        self.ns.as_deref() == Some(NS_COMPONENT)
            && self.name.as_deref() == Some("iq")
            && matches!(self.kind.as_deref(), Some("get" | "set"))
    }

    /// For an IQ request: its `policy-violation` error answer (from the address it was sent to,
    /// else `me`); else `None`.
    pub fn error_reply(&self, me: &str) -> Option<Element> {
        if !self.is_iq_request() {
            return None;
        }
        let mut iq = Element::builder("iq", NS_COMPONENT)
            .attr(crate::n!("id"), self.id.clone().unwrap_or_default());
        if let Some(from) = &self.from {
            iq = iq.attr(crate::n!("from"), from.as_str());
        }
        let error = stanza::StanzaError::new(stanza::ErrorType::Modify, "policy-violation")
            .with_text(format!("stanza over herald's {} limit", self.limit));
        Some(stanza::iq_error(
            &iq.build(),
            self.to.as_deref().unwrap_or(me),
            &error,
        ))
    }

    fn new(name: Option<rxml::QName>, attrs: rxml::AttrMap, limit: &str) -> RejectedStanza {
        let mut r = RejectedStanza {
            limit: limits::by_name(limit).unwrap_or(limits::MALFORMED),
            ..RejectedStanza::default()
        };
        if let Some((ns, local)) = name {
            if ns != NS_REJECTED {
                r.ns = Some(ns.to_string());
                r.name = Some(local.to_string());
            }
        }
        for ((ns, name), value) in attrs {
            if ns.is_none() {
                r.set(name.as_str(), value);
            }
        }
        r
    }

    fn set(&mut self, attr: &str, value: String) {
        match attr {
            "from" => self.from = Some(value),
            "to" => self.to = Some(value),
            "id" => self.id = Some(value),
            "type" => self.kind = Some(value),
            _ => {}
        }
    }
}

impl FromXml for Stanza {
    type Builder = StanzaBuilder;

    fn from_events(
        name: rxml::QName,
        attrs: rxml::AttrMap,
        _ctx: &Context<'_>,
    ) -> Result<StanzaBuilder, FromEventsError> {
        if name.0 == NS_COMPONENT && name.1.as_str() == "presence" {
            return Ok(match PresenceBuilder::new(attrs) {
                Ok(b) => StanzaBuilder::Presence(b),
                Err(r) => StanzaBuilder::Rejected(SkipBuilder::new(*r)),
            });
        }
        if let Some(limit) = attrs.get(NS_REJECTED, REJECTED_ATTR) {
            let limit = limit.clone();
            let r = RejectedStanza::new(Some(name), attrs, &limit);
            return Ok(StanzaBuilder::Rejected(SkipBuilder::new(r)));
        }
        Ok(StanzaBuilder::Other(TreeBuilder::new(name, attrs)))
    }
}

pub enum StanzaBuilder {
    Presence(PresenceBuilder),
    Other(TreeBuilder),
    Rejected(SkipBuilder),
}

impl FromEventsBuilder for StanzaBuilder {
    type Output = Stanza;

    fn feed(&mut self, ev: rxml::Event, _ctx: &Context<'_>) -> Result<Option<Stanza>, Error> {
        Ok(match self {
            StanzaBuilder::Presence(b) => b.feed(ev).map(Stanza::Presence),
            StanzaBuilder::Other(b) => match b.feed(ev) {
                None => None,
                Some(Ok(el)) => Some(Stanza::Other(el)),
                Some(Err((r, depth))) => {
                    // Deeper than MAX_DEPTH: skip the rest.
                    *self = StanzaBuilder::Rejected(SkipBuilder {
                        stanza: Some(r),
                        depth,
                    });
                    None
                }
            },
            StanzaBuilder::Rejected(b) => b.feed(ev).map(Stanza::Rejected),
        })
    }
}

/// Builds an [`Element`] with an explicit stack of open elements (minidom's own builder
/// recurses once per level for every event).
pub struct TreeBuilder {
    /// The open elements, outermost first; never more than [`MAX_DEPTH`].
    open: Vec<Element>,
}

impl TreeBuilder {
    fn new(name: rxml::QName, attrs: rxml::AttrMap) -> TreeBuilder {
        let mut open = Vec::with_capacity(4);
        open.push(element(name, attrs));
        TreeBuilder { open }
    }

    /// `Some(Ok)` once the element's end tag has been fed. `Some(Err)` when a start tag goes
    /// deeper than [`MAX_DEPTH`]: the partial tree is dropped, and the caller skips the rest
    /// (the second field: elements open below the stanza's own, that one included).
    fn feed(&mut self, ev: rxml::Event) -> Option<Result<Element, (RejectedStanza, usize)>> {
        match ev {
            rxml::Event::StartElement(_, name, attrs) => {
                if self.open.len() >= MAX_DEPTH {
                    let r = self.open.first().map(rejected_from).unwrap_or_default();
                    let depth = self.open.len();
                    self.open.clear();
                    return Some(Err((r, depth)));
                }
                self.open.push(element(name, attrs));
                None
            }
            rxml::Event::Text(_, text) => {
                if let Some(top) = self.open.last_mut() {
                    top.append_text_node(text);
                }
                None
            }
            rxml::Event::EndElement(_) => {
                let done = self.open.pop()?;
                match self.open.last_mut() {
                    Some(parent) => {
                        parent.append_child(done);
                        None
                    }
                    None => Some(Ok(done)),
                }
            }
            rxml::Event::XmlDeclaration(..) => None,
        }
    }
}

fn element(name: rxml::QName, attrs: rxml::AttrMap) -> Element {
    let mut builder = Element::builder(name.1, name.0);
    for ((ns, name), value) in attrs {
        builder = builder.attr_ns(ns, name, value);
    }
    builder.build()
}

/// What a stanza's element says of it, for a stanza skipped by the builder itself.
fn rejected_from(el: &Element) -> RejectedStanza {
    let attr = |n: &str| el.attr(n).map(str::to_owned);
    RejectedStanza {
        name: Some(el.name().to_owned()),
        ns: Some(el.ns()),
        from: attr("from"),
        to: attr("to"),
        id: attr("id"),
        kind: attr("type"),
        limit: limits::DEPTH,
    }
}

/// Skips the rest of a rejected stanza (a rejection element from the reader is empty), then
/// yields it.
pub struct SkipBuilder {
    stanza: Option<RejectedStanza>,
    /// Open elements below the stanza's own.
    depth: usize,
}

impl SkipBuilder {
    fn new(stanza: RejectedStanza) -> SkipBuilder {
        SkipBuilder {
            stanza: Some(stanza),
            depth: 0,
        }
    }

    fn feed(&mut self, ev: rxml::Event) -> Option<RejectedStanza> {
        match ev {
            rxml::Event::StartElement(..) => self.depth += 1,
            rxml::Event::EndElement(_) => {
                if self.depth == 0 {
                    return self.stanza.take();
                }
                self.depth -= 1;
            }
            rxml::Event::Text(..) | rxml::Event::XmlDeclaration(..) => {}
        }
        None
    }
}

#[derive(Clone, Copy)]
enum Field {
    Show,
    Status,
    Priority,
}

pub struct PresenceBuilder {
    stanza: PresenceStanza,
    /// Open elements below `<presence>`.
    depth: usize,
    /// The child (at depth 1) whose text is being collected.
    field: Option<Field>,
    text: String,
    /// Reads the muc#user `<x/>` and the `<error/>` of a presence error.
    muc: MucCollector,
    is_error: bool,
}

impl PresenceBuilder {
    /// `Err` for the reader's rejection of a presence.
    fn new(attrs: rxml::AttrMap) -> Result<Self, Box<RejectedStanza>> {
        let mut stanza = PresenceStanza::default();
        // Kept only for a rejection (moved out of the map: no copies).
        let (mut id, mut to, mut limit) = (None, None, None);
        for ((ns, name), value) in attrs {
            if !ns.is_none() {
                if ns == NS_REJECTED && name.as_str() == REJECTED_ATTR {
                    limit = Some(value);
                }
                continue;
            }
            match name.as_str() {
                "from" => stanza.from = Some(value),
                "type" => stanza.kind = Some(value),
                "id" => id = Some(value),
                "to" => to = Some(value),
                _ => {}
            }
        }
        if let Some(limit) = limit {
            return Err(Box::new(RejectedStanza {
                name: Some("presence".into()),
                ns: Some(NS_COMPONENT.into()),
                from: stanza.from,
                to,
                id,
                kind: stanza.kind,
                limit: limits::by_name(&limit).unwrap_or(limits::MALFORMED),
            }));
        }
        let is_error = stanza.kind.as_deref() == Some("error");
        Ok(PresenceBuilder {
            stanza,
            depth: 0,
            field: None,
            text: String::new(),
            muc: MucCollector::default(),
            is_error,
        })
    }

    /// `Some` once the presence's end tag has been fed.
    fn feed(&mut self, ev: rxml::Event) -> Option<PresenceStanza> {
        match ev {
            rxml::Event::StartElement(_, (ns, name), attrs) => {
                self.depth += 1;
                if self.depth > 1 {
                    if self.muc.active() {
                        self.muc.start(self.depth, &ns, name.as_str(), attrs, false);
                    }
                    return None;
                }
                // Only a MUC presence or a presence error has anything for the rooms.
                if (self.is_error || ns == NS_MUC_USER)
                    && self.muc.start(1, &ns, name.as_str(), attrs, self.is_error)
                {
                    self.stanza.muc_user = true;
                }
                if self.muc.active() {
                    return None;
                }
                let s = &mut self.stanza;
                if ns == NS_COMPONENT {
                    self.field = match name.as_str() {
                        "show" if s.show.is_none() => Some(Field::Show),
                        "status" if s.status.is_none() => Some(Field::Status),
                        "priority" if s.priority.is_none() => Some(Field::Priority),
                        _ => None,
                    };
                } else if ns == NS_DELAY && name.as_str() == "delay" {
                    s.delayed = true;
                }
                None
            }
            rxml::Event::Text(_, text) => {
                if self.depth == 1 && self.field.is_some() {
                    self.text.push_str(&text);
                } else if self.muc.active() {
                    self.muc.text(&text);
                }
                None
            }
            rxml::Event::EndElement(_) => {
                if self.depth == 0 {
                    self.stanza.muc = self.muc.finish();
                    return Some(std::mem::take(&mut self.stanza));
                }
                if self.muc.active() {
                    self.muc.end(self.depth);
                }
                if self.depth == 1 {
                    if let Some(field) = self.field.take() {
                        let text = Some(std::mem::take(&mut self.text));
                        match field {
                            Field::Show => self.stanza.show = text,
                            Field::Status => self.stanza.status = text,
                            Field::Priority => self.stanza.priority = text,
                        }
                    }
                }
                self.depth -= 1;
                None
            }
            rxml::Event::XmlDeclaration(..) => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses one stanza as it appears on the stream (the component namespace is the default).
    pub(crate) fn parse(xml: &str) -> Stanza {
        let xml = match xml.find(['>', '/', ' ']) {
            Some(i) => format!("{} xmlns='{NS_COMPONENT}'{}", &xml[..i], &xml[i..]),
            None => xml.to_owned(),
        };
        xso::from_bytes::<Stanza>(xml.as_bytes()).unwrap()
    }

    fn presence(xml: &str) -> PresenceStanza {
        match parse(xml) {
            Stanza::Presence(p) => p,
            other => panic!("not a presence: {other:?}"),
        }
    }

    #[test]
    fn keeps_what_herald_reads_and_skips_the_rest() {
        let p = presence(
            "<presence id='x' from='a@x/r' to='h.x' type='unavailable'><show>dnd</show>\
             <c xmlns='http://jabber.org/protocol/caps' node='n'><show>nested</show></c>\
             <status xml:lang='en'>one &amp; two</status><status>second</status>\
             <priority> -5 </priority><x xmlns='vcard-temp:x:update'><photo/></x>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>",
        );
        assert_eq!(
            p,
            PresenceStanza {
                from: Some("a@x/r".into()),
                kind: Some("unavailable".into()),
                show: Some("dnd".into()),
                status: Some("one & two".into()),
                priority: Some(" -5 ".into()),
                delayed: true,
                muc_user: false,
                muc: None,
            }
        );
    }

    #[test]
    fn a_show_in_a_foreign_namespace_is_not_the_show() {
        let p = presence("<presence from='a@x/r'><show xmlns='urn:other'>away</show><x xmlns='http://jabber.org/protocol/muc#user'/></presence>");
        assert_eq!(p.show, None);
        assert!(p.muc_user);
        assert!(!p.delayed);
    }

    #[test]
    fn an_empty_presence_has_nothing() {
        assert_eq!(presence("<presence/>"), PresenceStanza::default());
    }

    #[test]
    fn everything_else_is_an_element() {
        match parse("<iq type='result' id='1'><query xmlns='urn:q'>t</query></iq>") {
            Stanza::Other(el) => {
                assert_eq!(el.name(), "iq");
                assert_eq!(el.ns(), NS_COMPONENT);
                assert_eq!(
                    el.get_child("query", "urn:q").map(|q| q.text()),
                    Some("t".into())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_builder_itself_never_goes_deeper_than_max_depth() {
        // Without the reader in front (xso's own parse): a tree deeper than MAX_DEPTH is not
        // built, and the stanza is reported rejected.
        let deep = format!("{}{}", "<x>".repeat(20_000), "</x>".repeat(20_000));
        for (open, close) in [
            ("<message from='a@b/c' id='m' type='chat'>", "</message>"),
            ("<presence from='a@b/c' id='m' type='chat'>", "</presence>"),
        ] {
            match parse(&format!("{open}{deep}{close}")) {
                Stanza::Rejected(r) => {
                    assert_eq!(r.limit, limits::DEPTH);
                    assert_eq!(r.from.as_deref(), Some("a@b/c"));
                }
                // The presence builder keeps no tree at all.
                Stanza::Presence(p) => assert_eq!(p.from.as_deref(), Some("a@b/c")),
                other => panic!("{other:?}"),
            }
        }
        // At the limit, the tree is built whole.
        let ok = format!(
            "<message>{}{}</message>",
            "<x>".repeat(63),
            "</x>".repeat(63)
        );
        let Stanza::Other(el) = parse(&ok) else {
            panic!("not built");
        };
        let mut depth = 1;
        let mut at = &el;
        while let Some(c) = at.children().next() {
            depth += 1;
            at = c;
        }
        assert_eq!(depth, MAX_DEPTH);
    }

    #[test]
    fn elements_are_built_as_minidom_builds_them() {
        let xml = "<message xmlns='jabber:component:accept' xml:lang='en' a='1'>t1<b xmlns='urn:b' c='&amp;'>t2<d/></b>t3<e:f xmlns:e='urn:e'/></message>";
        let Stanza::Other(el) = xso::from_bytes::<Stanza>(xml.as_bytes()).unwrap() else {
            panic!("not an element");
        };
        let theirs: Element = xso::from_bytes(xml.as_bytes()).unwrap();
        assert_eq!(el, theirs);
        assert_eq!(String::from(&el), String::from(&theirs));
    }
}
