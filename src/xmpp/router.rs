//! Pure classification of inbound top-level elements. No I/O, no state: the connection asks
//! [`classify`] what a stanza is and hands it to the owner of that kind (see
//! [`super::routes`]). It decides by shape only; whether a sender is trusted is the owner's
//! business (the presence owner checks `component.server_domains`).

use minidom::Element;

use super::inbound::{PresenceStanza, Stanza};

use crate::xep::privilege::{parse_advertisement, Advertisement, PrivilegeError};
use crate::xmpp::stanza::{NS_COMPONENT, NS_STREAMS, NS_STREAM_ERRORS};

/// What an inbound element is, and so who owns it.
#[derive(Debug)]
pub enum Inbound {
    /// `<stream:error/>`: the server is closing the stream; `condition` e.g. `conflict`.
    StreamError {
        condition: String,
        text: Option<String>,
    },
    /// A XEP-0356 privilege advertisement (or one herald could not read) → presence owner.
    Privileges(Result<Advertisement, PrivilegeError>),
    /// A presence that may be a user's, forwarded under XEP-0356 → presence owner.
    UserPresence,
    /// A MUC occupant presence (`<x xmlns='…muc#user'/>`) or a presence error (a room's answer
    /// to a join) → rooms owner.
    MucPresence,
    /// `<message type='groupchat'/>` → rooms owner.
    Groupchat,
    /// Any other `<message/>` (chat, normal, headline, error) → messages owner.
    Message,
    /// An `<iq type='get|set'/>` addressed to herald → IQ handlers; answered exactly once.
    IqRequest,
    /// An `<iq type='result|error'/>`: the answer to one of herald's own requests → IQ tracker.
    IqResponse,
    /// A stanza the reader skipped for being over a limit (`component.max_stanza_bytes`, nesting
    /// depth, …): logged, and answered with `policy-violation` when it was an IQ request.
    Rejected,
    /// Anything else herald does not act on.
    Other(&'static str),
}

/// Classifies one top-level element read from the component stream.
pub fn classify(stanza: &Stanza) -> Inbound {
    match stanza {
        Stanza::Presence(p) => classify_presence(p),
        Stanza::Other(el) => classify_element(el),
        Stanza::Rejected(_) => Inbound::Rejected,
    }
}

/// Classifies a top-level element that is not a `<presence/>` of the stream's namespace.
pub fn classify_element(el: &Element) -> Inbound {
    if el.ns() == NS_STREAMS && el.name() == "error" {
        return stream_error(el);
    }
    if el.ns() != NS_COMPONENT {
        return Inbound::Other("foreign namespace");
    }
    match el.name() {
        "iq" => match el.attr("type") {
            Some("result") | Some("error") => Inbound::IqResponse,
            Some("get") | Some("set") => Inbound::IqRequest,
            _ => Inbound::Other("iq with invalid type"),
        },
        "message" => match parse_advertisement(el) {
            Some(adv) => Inbound::Privileges(adv),
            None if el.attr("type") == Some("groupchat") => Inbound::Groupchat,
            None => Inbound::Message,
        },
        _ => Inbound::Other("unknown element"),
    }
}

fn stream_error(el: &Element) -> Inbound {
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

/// Classifies a `<presence/>`: MUC traffic (occupant presences, and errors, which is how a room
/// refuses a join) goes to the rooms, everything else to the presence owner.
pub fn classify_presence(p: &PresenceStanza) -> Inbound {
    if p.muc_user || p.kind.as_deref() == Some("error") {
        Inbound::MucPresence
    } else {
        Inbound::UserPresence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::xmpp::inbound::tests::parse;

    #[test]
    fn forwarded_presences_go_to_the_presence_owner() {
        for xml in [
            r#"<presence id='6e1a' xml:lang='en' to='push.localhost' from='carol@localhost/harness'><show>dnd</show><c hash='sha-1' ver='x' node='n' xmlns='http://jabber.org/protocol/caps'/><delay from='localhost' xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>"#,
            "<presence from='bob@localhost/harness' to='push.localhost' type='unavailable'/>",
        ] {
            assert!(
                matches!(classify(&parse(xml)), Inbound::UserPresence),
                "{xml}"
            );
        }
    }

    #[test]
    fn muc_presences_and_presence_errors_go_to_the_rooms() {
        let occupant = parse("<presence from='harness@muc.localhost/pushbot' to='push.localhost'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='push.localhost' role='participant' affiliation='none'/><status code='110'/></x></presence>");
        assert!(matches!(classify(&occupant), Inbound::MucPresence));
        let refused = parse("<presence from='closed@muc.localhost/herald' to='push.localhost' type='error'><error type='auth'><registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>");
        assert!(matches!(classify(&refused), Inbound::MucPresence));
    }

    #[test]
    fn messages_are_split_by_kind() {
        let groupchat = parse("<message type='groupchat' from='room@muc.localhost/alice' to='push.localhost'><body>hi</body></message>");
        assert!(matches!(classify(&groupchat), Inbound::Groupchat));
        let chat = parse("<message type='chat' from='alice@localhost/x' to='push.localhost'><body>hi</body></message>");
        assert!(matches!(classify(&chat), Inbound::Message));
        let adv = parse("<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/><perm access='presence' type='managed_entity'/></privilege></message>");
        assert!(matches!(classify(&adv), Inbound::Privileges(Ok(_))));
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
            Inbound::IqResponse
        ));
        assert!(matches!(
            classify(&parse("<iq type='error' id='k1' from='localhost'/>")),
            Inbound::IqResponse
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
}
