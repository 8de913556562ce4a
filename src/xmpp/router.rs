//! Pure classification of inbound top-level elements. No I/O, no state: the connection task asks
//! [`classify`] what a stanza is and hands it to its owner.

use minidom::Element;

use super::inbound::{PresenceStanza, Stanza};

use crate::presence::tracker::Update;
use crate::xep::privilege::{parse_advertisement, Advertisement, PrivilegeError};
use crate::xmpp::stanza::{NS_COMPONENT, NS_STREAMS, NS_STREAM_ERRORS};

/// What an inbound element is, as far as herald cares.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// `<stream:error/>`: the server is closing the stream; `condition` e.g. `conflict`.
    StreamError {
        condition: String,
        text: Option<String>,
    },
    /// A XEP-0356 privilege advertisement.
    Privileges(Advertisement),
    /// A `<privilege/>` message that herald could not parse.
    BadPrivileges(PrivilegeError),
    /// A user's presence forwarded under XEP-0356: `from` is the full JID.
    ForwardedPresence {
        from: &'a str,
        update: Update,
        /// Carried `<delay/>`: part of the server's snapshot after a (re)connect.
        delayed: bool,
    },
    /// An `<iq type='result|error'/>`: the answer to one of herald's own requests.
    IqResponse { id: &'a str },
    /// An `<iq type='get|set'/>` addressed to herald; must be answered exactly once.
    IqRequest,
    /// Anything herald does not act on (yet): MUC traffic, chat messages, errors to its messages.
    Other(&'static str),
}

/// Classifies one top-level element read from the component stream.
pub fn classify(stanza: &Stanza) -> Inbound<'_> {
    match stanza {
        Stanza::Presence(p) => classify_presence(p),
        Stanza::Other(el) => classify_element(el),
        Stanza::Rejected(_) => Inbound::Other("stanza over a reader limit"),
    }
}

/// Classifies a top-level element that is not a `<presence/>` of the stream's namespace.
pub fn classify_element(el: &Element) -> Inbound<'_> {
    if el.ns() == NS_STREAMS && el.name() == "error" {
        return stream_error(el);
    }
    if el.ns() != NS_COMPONENT {
        return Inbound::Other("foreign namespace");
    }
    match el.name() {
        "iq" => match el.attr("type") {
            Some("result") | Some("error") => Inbound::IqResponse {
                id: el.attr("id").unwrap_or_default(),
            },
            Some("get") | Some("set") => Inbound::IqRequest,
            _ => Inbound::Other("iq with invalid type"),
        },
        "message" => match parse_advertisement(el) {
            Some(Ok(adv)) => Inbound::Privileges(adv),
            Some(Err(e)) => Inbound::BadPrivileges(e),
            None => Inbound::Other("message"),
        },
        _ => Inbound::Other("unknown element"),
    }
}

fn stream_error(el: &Element) -> Inbound<'_> {
    let condition = el
        .children()
        .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".to_owned());
    let text = el
        .children()
        .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() == "text")
        .map(|c| c.text());
    Inbound::StreamError { condition, text }
}

/// Classifies a `<presence/>`.
pub fn classify_presence(p: &PresenceStanza) -> Inbound<'_> {
    let Some(from) = p.from.as_deref() else {
        return Inbound::Other("presence without from");
    };
    // MUC occupant presences also come from a full JID; they are herald's own room traffic.
    if p.muc_user {
        return Inbound::Other("muc presence");
    }
    // A forwarded presence comes from a user's full JID: node@domain/resource.
    let Some((bare, resource)) = from.split_once('/') else {
        return Inbound::Other("presence from a bare jid");
    };
    if resource.is_empty() || !bare.contains('@') {
        return Inbound::Other("presence not from a user resource");
    }
    let update = match p.kind.as_deref() {
        None | Some("available") => {
            let non_empty = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
            Update::Available {
                show: non_empty(&p.show),
                status: non_empty(&p.status),
                priority: p
                    .priority
                    .as_deref()
                    .and_then(|t| t.trim().parse::<i8>().ok())
                    .unwrap_or(0),
            }
        }
        Some("unavailable") => Update::Unavailable,
        // probe, subscribe, error…: not a change of availability.
        Some(_) => return Inbound::Other("presence of another type"),
    };
    Inbound::ForwardedPresence {
        from,
        update,
        delayed: p.delayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::xmpp::inbound::tests::parse;

    #[test]
    fn prosody_snapshot_presence_is_delayed_and_available() {
        let el = parse(
            r#"<presence id='6e1a' xml:lang='en' to='push.localhost' from='carol@localhost/harness'><show>dnd</show><status>carol was online first</status><c hash='sha-1' ver='x' node='n' xmlns='http://jabber.org/protocol/caps'/><x xmlns='vcard-temp:x:update'><photo/></x><delay from='localhost' xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>"#,
        );
        match classify(&el) {
            Inbound::ForwardedPresence {
                from,
                update,
                delayed,
            } => {
                assert_eq!(from, "carol@localhost/harness");
                assert!(delayed);
                assert_eq!(
                    update,
                    Update::Available {
                        show: Some("dnd".into()),
                        status: Some("carol was online first".into()),
                        priority: 0
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_made_unavailable_is_live() {
        let el = parse(
            "<presence from='bob@localhost/harness' to='push.localhost' type='unavailable'/>",
        );
        assert!(matches!(
            classify(&el),
            Inbound::ForwardedPresence {
                update: Update::Unavailable,
                delayed: false,
                ..
            }
        ));
    }

    #[test]
    fn muc_presence_and_bare_room_presence_are_not_user_presence() {
        let occupant = parse("<presence from='harness@muc.localhost/pushbot' to='push.localhost'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='push.localhost' role='participant' affiliation='none'/><status code='110'/></x></presence>");
        assert!(matches!(classify(&occupant), Inbound::Other(_)));
        let room = parse("<presence to='push.localhost' from='harness@muc.localhost' id='1'/>");
        assert!(matches!(classify(&room), Inbound::Other(_)));
    }

    #[test]
    fn bad_priority_defaults_to_zero() {
        let el = parse("<presence from='a@b/c'><priority>999</priority></presence>");
        match classify(&el) {
            Inbound::ForwardedPresence {
                update: Update::Available { priority, .. },
                ..
            } => assert_eq!(priority, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_conflict_is_recognised() {
        let el: Element = "<error xmlns='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected</text></error>".parse().unwrap();
        match classify(&Stanza::Other(el)) {
            Inbound::StreamError { condition, text } => {
                assert_eq!(condition, "conflict");
                assert_eq!(text.as_deref(), Some("Component already connected"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn iqs_are_split_by_type() {
        assert!(matches!(
            classify(&parse("<iq type='result' id='k1' from='localhost'/>")),
            Inbound::IqResponse { id: "k1" }
        ));
        assert!(matches!(
            classify(&parse(
                "<iq type='get' id='k2' from='a@b/c'><query xmlns='x'/></iq>"
            )),
            Inbound::IqRequest
        ));
        assert!(matches!(
            classify(&parse("<iq type='bogus' id='k3'/>")),
            Inbound::Other(_)
        ));
    }

    #[test]
    fn prosody_advertisement_is_privileges() {
        let el = parse("<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/><perm access='presence' type='managed_entity'/></privilege></message>");
        assert!(matches!(classify(&el), Inbound::Privileges(_)));
    }
}
