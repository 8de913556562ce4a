//! The join and leave stanzas, and refused joins as Prosody sends them.

use super::*;
use crate::xmpp::inbound::tests::parse;
use crate::xmpp::inbound::Stanza;

#[test]
fn join_asks_for_no_history_and_leave_is_unavailable() {
    let j = join_stanza("herald.localhost", "dev@muc.localhost", "herald");
    let expected: Element = "<presence xmlns='jabber:component:accept' from='herald.localhost' to='dev@muc.localhost/herald'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>".parse().unwrap();
    assert_eq!(j, expected);
    let l = leave_stanza("herald.localhost", "dev@muc.localhost", "herald_2");
    assert_eq!(l.attr("type"), Some("unavailable"));
    assert_eq!(l.attr("to"), Some("dev@muc.localhost/herald_2"));
    assert_eq!(l.attr("from"), Some("herald.localhost"));
    let d = disco_info("herald.localhost", "dev@muc.localhost");
    assert_eq!(
        (d.attr("type"), d.attr("to")),
        (Some("get"), Some("dev@muc.localhost"))
    );
    assert!(d.has_child("query", NS_DISCO_INFO));
}

#[test]
fn nicks_are_numbered_from_two() {
    let tried: Vec<String> = (0..MAX_NICK_ATTEMPTS)
        .map(|n| nick_for("herald", n))
        .collect();
    assert_eq!(
        tried,
        ["herald", "herald_2", "herald_3", "herald_4", "herald_5"]
    );
}

/// The condition and text of a presence error as it arrives.
fn refused(xml: &str) -> Refused {
    let Stanza::Presence(p) = parse(xml) else {
        panic!("not a presence")
    };
    let e = p.muc.unwrap().error.unwrap();
    classify_join_error(&e.condition, e.text.as_deref())
}

#[test]
fn each_join_error_has_its_action() {
    let err = |cond: &str, kind: &str| {
        refused(&format!("<presence from='dev@muc.localhost/herald' to='herald.localhost' type='error'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x><error type='{kind}' by='dev@muc.localhost'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"))
    };
    assert_eq!(err("conflict", "cancel"), Refused::NickTaken);
    let retry = |wait, reason: &str| Refused::Retry {
        wait,
        reason: reason.into(),
    };
    assert_eq!(
        err("registration-required", "auth"),
        retry(Wait::Join, "members-only: herald is not a member")
    );
    assert_eq!(
        err("forbidden", "auth"),
        retry(Wait::Banned, "banned: herald is banned from the room")
    );
    assert_eq!(
        err("not-allowed", "cancel"),
        retry(Wait::Join, "not allowed: the room refuses herald")
    );
    assert_eq!(
        err("not-authorized", "auth"),
        retry(Wait::Join, "password-protected: herald has no password")
    );
    assert_eq!(
        err("service-unavailable", "wait"),
        retry(Wait::Join, "full: the room has no room for herald")
    );
    for cond in ["item-not-found", "gone"] {
        assert!(matches!(err(cond, "cancel"), Refused::Gone(_)), "{cond}");
    }
    // An unreachable server is passing: retried, never given up.
    for cond in ["remote-server-not-found", "remote-server-timeout"] {
        assert_eq!(
            err(cond, "cancel"),
            retry(
                Wait::Join,
                "unreachable: the room's server cannot be reached"
            ),
            "{cond}"
        );
        assert_eq!(
            classify_probe_error(cond),
            Probe::Retry("unreachable: the room's server cannot be reached".into())
        );
    }
    // Prosody's members-only refusal, with its text.
    let prosody = refused("<presence type='error' to='herald.localhost' from='closed@muc.localhost/herald'><error type='auth' by='closed@muc.localhost'><registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Membership is required to enter this room</text></error><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    assert_eq!(
        prosody,
        retry(Wait::Join, "members-only: herald is not a member")
    );
    let other = refused("<presence type='error' from='x@muc.localhost/herald'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>slow down</text></error></presence>");
    assert_eq!(
        other,
        retry(Wait::Join, "join refused: resource-constraint (slow down)")
    );
}

#[test]
fn a_room_that_does_not_answer_disco_as_existing_is_never_joined() {
    assert_eq!(
        classify_probe_error("item-not-found"),
        Probe::Gone("the room does not exist".into())
    );
    assert!(matches!(classify_probe_error("gone"), Probe::Gone(_)));
    // Anything else: the join tells (a 201 there is left at once).
    assert_eq!(classify_probe_error("feature-not-implemented"), Probe::Join);
    let (min, max) = Wait::Join.bounds();
    assert!(min == Duration::from_secs(30) && max == Duration::from_secs(3600));
}
