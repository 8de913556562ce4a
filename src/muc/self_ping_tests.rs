//! One test per row of the XEP-0410 1.1.0 table, with the answers as MUC services send them.

use super::*;
use crate::xmpp::stanza::StanzaError;

/// The answer an IQ from the wire stands for (as the rooms owner gets it from the tracker).
fn answer(xml: &str) -> Answer {
    let el: Element = xml.parse().unwrap();
    match el.attr("type") {
        Some("result") => Answer::Result,
        _ => Answer::Error(StanzaError::from_stanza(&el).condition),
    }
}

fn error(condition: &str, by: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' type='error' id='p1' from='dev@muc.localhost/herald' \
         to='herald.localhost'><error type='cancel' by='{by}'><{condition} \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )
}

#[test]
fn result_is_joined() {
    let a = answer("<iq xmlns='jabber:component:accept' type='result' id='p1' from='dev@muc.localhost/herald' to='herald.localhost'/>");
    assert_eq!(verdict(&a), Verdict::Joined);
}

#[test]
fn service_unavailable_and_feature_not_implemented_are_joined() {
    for c in ["service-unavailable", "feature-not-implemented"] {
        let a = answer(&error(c, "dev@muc.localhost/herald"));
        assert_eq!(verdict(&a), Verdict::Joined, "{c}");
    }
}

#[test]
fn item_not_found_is_joined_and_checked_again() {
    let a = answer(&error("item-not-found", "dev@muc.localhost"));
    assert_eq!(verdict(&a), Verdict::JoinedRecheck);
    assert_eq!(verdict(&a).label(), "joined");
}

#[test]
fn remote_server_errors_are_undecided() {
    for c in ["remote-server-not-found", "remote-server-timeout"] {
        let a = answer(&error(c, "localhost"));
        assert_eq!(verdict(&a), Verdict::Undecided, "{c}");
    }
}

#[test]
fn other_errors_are_not_joined() {
    // Prosody's answer to a ping from a JID that is not an occupant, with its text.
    let prosody = "<iq xmlns='jabber:component:accept' type='error' id='p1' from='dev@muc.localhost/herald' to='herald.localhost'><error type='cancel' by='dev@muc.localhost'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>You are not currently connected to this chat</text></error></iq>";
    assert_eq!(verdict(&answer(prosody)), Verdict::NotJoined);
    for c in ["not-allowed", "bad-request", "forbidden", "gone"] {
        assert_eq!(
            verdict(&answer(&error(c, "dev@muc.localhost"))),
            Verdict::NotJoined,
            "{c}"
        );
    }
    // An error that names no condition.
    let bare =
        "<iq xmlns='jabber:component:accept' type='error' id='p1'><error type='cancel'/></iq>";
    assert_eq!(verdict(&answer(bare)), Verdict::NotJoined);
}

#[test]
fn no_answer_is_undecided() {
    assert_eq!(verdict(&Answer::Timeout), Verdict::Undecided);
    assert_eq!(Answer::Timeout.describe(), "timeout");
}

#[test]
fn the_ping_goes_to_herald_s_own_occupant_jid() {
    let p = ping_stanza("herald.localhost", "dev@muc.localhost", "herald_2");
    assert_eq!(p.attr("to"), Some("dev@muc.localhost/herald_2"));
    assert_eq!(p.attr("from"), Some("herald.localhost"));
    assert_eq!(p.attr("type"), Some("get"));
    assert!(p.has_child("ping", "urn:xmpp:ping"));
}
