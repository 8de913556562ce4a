use std::sync::Arc;

use super::*;
use crate::muc::{Occupant, Occupants, Role};

const ROOM: &str = "room@muc.localhost";

fn occupants(list: &[(&str, Option<&str>)]) -> Arc<Occupants> {
    let mut o = Occupants::default();
    for (nick, real) in list {
        o.insert(Occupant {
            nick: (*nick).into(),
            real_jid: real.map(str::to_owned),
            role: Role::Participant,
        });
    }
    Arc::new(o)
}

fn watcher(user: &str, nick: &str, mode: RoomMode) -> Watcher {
    Watcher {
        user: user.into(),
        reg_key: format!("push.localhost<{nick}"),
        nick: nick.into(),
        mode,
        muted: vec![],
    }
}

/// A message as Prosody's MUC relays it to herald, `inner` its children.
fn msg(from_nick: &str, inner: &str, occ: Arc<Occupants>, watchers: Vec<Watcher>) -> RoomMessage {
    let xml = format!(
        "<message xmlns='jabber:component:accept' from='{ROOM}/{from_nick}' to='herald.localhost' type='groupchat' id='m1'>{inner}<occupant-id xmlns='urn:xmpp:occupant-id:0' id='dGVzdA=='/></message>"
    );
    RoomMessage {
        room: ROOM.into(),
        own_nick: "herald".into(),
        element: xml.parse().unwrap(),
        occupants: occ,
        watchers: watchers.into(),
        at_ms: 1,
    }
}

fn alice(mode: RoomMode) -> Watcher {
    watcher("alice@localhost", "alice", mode)
}

fn one(m: &RoomMessage) -> Verdict {
    let v = decide(m);
    assert_eq!(v.len(), 1, "{v:?}");
    v[0]
}

const HI: &str = "<body>hi</body>";

#[test]
fn an_absent_watcher_is_pushed_and_an_occupant_only_if_offline() {
    let none = occupants(&[("bob", None)]);
    assert_eq!(
        one(&msg("bob", HI, none, vec![alice(RoomMode::Always)])),
        Verdict::Push
    );
    let with_alice = occupants(&[("bob", None), ("alice", None)]);
    assert_eq!(
        one(&msg("bob", HI, with_alice, vec![alice(RoomMode::Always)])),
        Verdict::PushIfOffline
    );
    // Under another nick, recognised by real JID.
    let renamed = occupants(&[("bob", None), ("al", Some("alice@localhost"))]);
    assert_eq!(
        one(&msg("bob", HI, renamed, vec![alice(RoomMode::Always)])),
        Verdict::PushIfOffline
    );
}

#[test]
fn the_sender_is_present_by_real_jid_or_else_by_nick() {
    // The room shows real JIDs: alice writes as "al", her watcher's nick is "alice".
    let occ = occupants(&[("al", Some("alice@localhost"))]);
    assert_eq!(
        one(&msg("al", HI, occ, vec![alice(RoomMode::Always)])),
        Verdict::Present
    );
    // Anonymous room: the nick decides.
    let occ = occupants(&[("alice", None)]);
    assert_eq!(
        one(&msg("alice", HI, occ, vec![alice(RoomMode::Always)])),
        Verdict::Present
    );
    // The room shows that "alice" is someone else: not the watcher.
    let occ = occupants(&[("alice", Some("mallory@localhost"))]);
    assert_eq!(
        one(&msg("alice", HI, occ, vec![alice(RoomMode::Always)])),
        Verdict::PushIfOffline
    );
}

#[test]
fn history_own_messages_subjects_markers_and_errors_push_nobody() {
    let w = || vec![alice(RoomMode::Always)];
    let o = || occupants(&[("bob", None)]);
    let cases = [
        (
            "bob",
            format!("{HI}<delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='2024-01-01T00:00:00Z'/>"),
        ),
        (
            "bob",
            format!("{HI}<delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:00Z'/>"),
        ),
        ("herald", HI.to_owned()),
        ("bob", "<subject>Weekly sync</subject>".to_owned()),
        (
            "bob",
            "<received xmlns='urn:xmpp:chat-markers:0' id='x'/><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>".to_owned(),
        ),
        (
            "bob",
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>".to_owned(),
        ),
    ];
    for (nick, inner) in cases {
        assert!(decide(&msg(nick, &inner, o(), w())).is_empty(), "{inner}");
    }
    let mut err = msg("bob", HI, o(), w());
    err.element
        .set_attr(rxml::Namespace::NONE, crate::n!("type"), "error");
    assert!(decide(&err).is_empty());
}

#[test]
fn a_delay_added_by_someone_else_is_a_live_message() {
    let inner = format!(
        "{HI}<delay xmlns='urn:xmpp:delay' from='localhost' stamp='2024-01-01T00:00:00Z'/>"
    );
    let m = msg("bob", &inner, occupants(&[]), vec![alice(RoomMode::Always)]);
    assert_eq!(one(&m), Verdict::Push);
}

#[test]
fn encrypted_payloads_count_and_a_subject_with_a_body_counts() {
    for inner in [
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>AAA=</payload></encrypted><store xmlns='urn:xmpp:hints'/>",
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>AAA=</payload></encrypted>",
        "<subject>topic</subject><body>and a message</body>",
    ] {
        let m = msg("bob", inner, occupants(&[]), vec![alice(RoomMode::Always)]);
        assert_eq!(one(&m), Verdict::Push, "{inner}");
    }
    let m = msg(
        "bob",
        "<encrypted xmlns='urn:xmpp:omemo:2'><payload>AAA=</payload></encrypted>",
        occupants(&[]),
        vec![],
    );
    let c = counted(&m).unwrap();
    assert!(c.encrypted && c.body.is_none());
}

#[test]
fn mentioned_mode_needs_a_reference_or_the_nick_as_a_word() {
    let m = |inner: &str| {
        one(&msg(
            "bob",
            inner,
            occupants(&[]),
            vec![alice(RoomMode::Mentioned)],
        ))
    };
    assert_eq!(m(HI), Verdict::Skip);
    assert_eq!(m("<body>Hi ALICE, look</body>"), Verdict::Push);
    assert_eq!(m("<body>alice: look</body>"), Verdict::Push);
    assert_eq!(m("<body>malice aforethought</body>"), Verdict::Skip);
    assert_eq!(m("<body>alices</body>"), Verdict::Skip);
    assert_eq!(
        m("<body>see this</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:alice@localhost' begin='0' end='3'/>"),
        Verdict::Push
    );
    assert_eq!(
        m(&format!("<body>see this</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:{ROOM}/alice'/>")),
        Verdict::Push
    );
    // A reference of another kind, or to someone else, is no mention.
    assert_eq!(
        m("<body>see this</body><reference xmlns='urn:xmpp:reference:0' type='data' uri='xmpp:alice@localhost'/>"),
        Verdict::Skip
    );
    assert_eq!(
        m(&format!("<body>see</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:{ROOM}/carol'/>")),
        Verdict::Skip
    );
}

#[test]
fn a_percent_encoded_nick_reference_matches() {
    let w = watcher("al@localhost", "Al Smith", RoomMode::Mentioned);
    let inner = format!("<body>x</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:{ROOM}/Al%20Smith'/>");
    assert_eq!(
        one(&msg("bob", &inner, occupants(&[]), vec![w])),
        Verdict::Push
    );
}

#[test]
fn muted_senders_and_rooms_are_skipped_per_registration() {
    let occ = || occupants(&[("bob", Some("bob@localhost"))]);
    let mut phone = alice(RoomMode::Always);
    phone.muted = vec!["bob@localhost".into()];
    let mut tablet = watcher("alice@localhost", "alice", RoomMode::Always);
    tablet.reg_key = "push.localhost<tablet".into();
    let mut laptop = tablet.clone();
    laptop.muted = vec![ROOM.to_uppercase()];
    let v = decide(&msg("bob", HI, occ(), vec![phone, tablet, laptop]));
    assert_eq!(v, [Verdict::Skip, Verdict::Push, Verdict::Skip]);
}

#[test]
fn every_watcher_gets_its_own_verdict() {
    let occ = occupants(&[("bob", None), ("carol", None)]);
    let v = decide(&msg(
        "bob",
        "<body>hey dave</body>",
        occ,
        vec![
            alice(RoomMode::Always),
            watcher("bob@localhost", "bob", RoomMode::Always),
            watcher("carol@localhost", "carol", RoomMode::Always),
            watcher("dave@localhost", "dave", RoomMode::Mentioned),
            watcher("erin@localhost", "erin", RoomMode::Mentioned),
        ],
    ));
    assert_eq!(
        v,
        [
            Verdict::Push,
            Verdict::Present,
            Verdict::PushIfOffline,
            Verdict::Push,
            Verdict::Skip
        ]
    );
}

#[test]
fn whole_words_ignore_case_and_respect_unicode_letters() {
    assert!(has_word("Ping Zoë!", "zoë"));
    assert!(!has_word("zoëy", "zoë"));
    assert!(!has_word("x_al", "al"));
    assert!(has_word("(al)", "al"));
    assert!(!has_word("anything", ""));
}
