//! What the connection reads off the stream: a `<presence/>` is parsed straight from the XML
//! events into the few fields herald uses ([`PresenceStanza`]); anything else becomes a minidom
//! [`Element`].
//!
//! Presences are nearly all of the inbound traffic (one per user status change, forwarded under
//! XEP-0356), and building a minidom tree for each one costs about as much as the XML parse
//! itself. The fields kept follow what [`Element`] would give for them: the first `<show/>`,
//! `<status/>` and `<priority/>` child in the stanza namespace, each with its direct text; the
//! presence of a `<delay xmlns='urn:xmpp:delay'/>` and of a MUC `<x xmlns='…muc#user'/>` child.
//! Other children (caps, vCard updates…) and anything nested deeper are skipped.

use minidom::Element;
use xso::error::{Error, FromEventsError};
use xso::minidom_compat::ElementFromEvents;
use xso::{Context, FromEventsBuilder, FromXml};

use super::stanza::{NS_COMPONENT, NS_DELAY, NS_MUC_USER};

/// One top-level element of the component stream.
#[derive(Debug)]
pub enum Stanza {
    Presence(PresenceStanza),
    Other(Element),
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
}

impl FromXml for Stanza {
    type Builder = StanzaBuilder;

    fn from_events(
        name: rxml::QName,
        attrs: rxml::AttrMap,
        _ctx: &Context<'_>,
    ) -> Result<StanzaBuilder, FromEventsError> {
        if name.0 == NS_COMPONENT && name.1.as_str() == "presence" {
            Ok(StanzaBuilder::Presence(PresenceBuilder::new(attrs)))
        } else {
            Ok(StanzaBuilder::Other(ElementFromEvents::new(name, attrs)))
        }
    }
}

pub enum StanzaBuilder {
    Presence(PresenceBuilder),
    Other(ElementFromEvents),
}

impl FromEventsBuilder for StanzaBuilder {
    type Output = Stanza;

    fn feed(&mut self, ev: rxml::Event, ctx: &Context<'_>) -> Result<Option<Stanza>, Error> {
        match self {
            StanzaBuilder::Presence(b) => Ok(b.feed(ev).map(Stanza::Presence)),
            StanzaBuilder::Other(b) => Ok(b.feed(ev, ctx)?.map(Stanza::Other)),
        }
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
}

impl PresenceBuilder {
    fn new(attrs: rxml::AttrMap) -> Self {
        let mut stanza = PresenceStanza::default();
        for ((ns, name), value) in attrs {
            if !ns.is_none() {
                continue;
            }
            match name.as_str() {
                "from" => stanza.from = Some(value),
                "type" => stanza.kind = Some(value),
                _ => {}
            }
        }
        PresenceBuilder {
            stanza,
            depth: 0,
            field: None,
            text: String::new(),
        }
    }

    /// `Some` once the presence's end tag has been fed.
    fn feed(&mut self, ev: rxml::Event) -> Option<PresenceStanza> {
        match ev {
            rxml::Event::StartElement(_, (ns, name), _) => {
                self.depth += 1;
                if self.depth == 1 {
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
                    } else if ns == NS_MUC_USER && name.as_str() == "x" {
                        s.muc_user = true;
                    }
                }
                None
            }
            rxml::Event::Text(_, text) => {
                if self.depth == 1 && self.field.is_some() {
                    self.text.push_str(&text);
                }
                None
            }
            rxml::Event::EndElement(_) => {
                if self.depth == 0 {
                    return Some(std::mem::take(&mut self.stanza));
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
            Stanza::Other(el) => panic!("not a presence: {el:?}"),
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
}
