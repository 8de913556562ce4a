//! Rejoin hints: which removals are errors, whom they concern, the invitation, the rate.

use super::*;
use crate::muc::model::Role;
use crate::push::RoomMode;
use crate::xmpp::inbound::tests::parse;
use crate::xmpp::inbound::Stanza;

fn presence(xml: &str) -> PresenceStanza {
    match parse(xml) {
        Stanza::Presence(p) => p,
        other => panic!("not a presence: {other:?}"),
    }
}

/// What Prosody 0.12 sends the other occupants when one of them bounced a stanza
/// (`handle_kickable`): the session's status text and status 333.
const PROSODY_333: &str = "<presence from='dev@muc.localhost/alice' to='herald.localhost' type='unavailable'><status>Kicked: service unavailable</status><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><status code='333'/></x></presence>";

#[test]
fn status_333_is_an_error_removal_with_the_server_s_reason() {
    assert_eq!(
        dropped_out(&presence(PROSODY_333)).as_deref(),
        Some("Kicked: service unavailable")
    );
    let bare = "<presence from='dev@muc.localhost/alice' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='none'/><status code='333'/></x></presence>";
    assert_eq!(
        dropped_out(&presence(bare)).as_deref(),
        Some("removed because of an error")
    );
}

#[test]
fn a_kick_for_an_error_counts_and_a_moderator_s_kick_does_not() {
    let ejabberd = "<presence from='dev@conference.localhost/alice' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'><reason>This participant is kicked from the room because he sent an error message</reason></item><status code='307'/></x></presence>";
    assert!(dropped_out(&presence(ejabberd)).is_some());
    let moderator = "<presence from='dev@muc.localhost/alice' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'><reason>spam</reason></item><status code='307'/></x></presence>";
    assert_eq!(dropped_out(&presence(moderator)), None);
    let left = "<presence from='dev@muc.localhost/alice' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/></x></presence>";
    assert_eq!(dropped_out(&presence(left)), None);
    let available = "<presence from='dev@muc.localhost/alice'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='333'/></x></presence>";
    assert_eq!(dropped_out(&presence(available)), None);
}

fn watcher(user: &str, nick: &str) -> Watcher {
    Watcher {
        user: user.into(),
        reg_key: format!("p.example<{user}"),
        nick: nick.into(),
        mode: RoomMode::Always,
        muted: vec![],
    }
}

#[test]
fn the_occupant_is_matched_by_real_jid_else_by_nick() {
    let ws = [
        watcher("alice@localhost", "alice"),
        watcher("alice@localhost", "alice"), // a second registration
        watcher("bob@localhost", "bob"),
    ];
    let by_nick = Occupant {
        nick: "alice".into(),
        real_jid: None,
        role: Role::None,
    };
    assert_eq!(users_of(&ws, &by_nick), ["alice@localhost"]);
    let by_jid = Occupant {
        nick: "alice".into(),
        real_jid: Some("bob@localhost".into()),
        role: Role::None,
    };
    assert_eq!(users_of(&ws, &by_jid), ["bob@localhost"]);
}

#[test]
fn the_invitation_is_a_direct_invitation_from_herald() {
    let m = invitation(
        "herald.localhost",
        "alice@localhost",
        "dev@muc.localhost",
        "Kicked: service unavailable",
    );
    let expected: Element = "<message xmlns='jabber:component:accept' from='herald.localhost' to='alice@localhost'><x xmlns='jabber:x:conference' jid='dev@muc.localhost' reason='You dropped out of the room dev@muc.localhost (Kicked: service unavailable); join it again to keep receiving its messages.'/></message>".parse().unwrap();
    assert_eq!(m, expected);
}

#[test]
fn one_hint_per_user_and_room_per_ten_minutes() {
    let t0 = Instant::now();
    let mut l = HintLimiter::default();
    assert!(l.allow("a@x", "dev@m", t0));
    assert!(!l.allow("a@x", "dev@m", t0 + Duration::from_secs(599)));
    assert!(l.allow("a@x", "ops@m", t0));
    assert!(l.allow("b@x", "dev@m", t0));
    assert!(l.allow("a@x", "dev@m", t0 + Duration::from_secs(600)));
    // Old entries are forgotten as the map grows.
    for i in 0..1000 {
        l.allow(&format!("u{i}@x"), "dev@m", t0 + HINT_EVERY * 2);
    }
    assert!(l.sent.len() <= 1000);
    assert!(!l.sent.contains_key(&("b@x".to_owned(), "dev@m".to_owned())));
}
