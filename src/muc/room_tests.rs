//! Occupant presences as Prosody and ejabberd send them to a component in a room.

use super::*;
use crate::xmpp::inbound::tests::parse;
use crate::xmpp::inbound::Stanza;

fn p(xml: &str) -> PresenceStanza {
    match parse(xml) {
        Stanza::Presence(p) => p,
        other => panic!("not a presence: {other:?}"),
    }
}

fn nicks(o: &Occupants) -> Vec<String> {
    let mut v: Vec<String> = o.iter().map(|o| o.nick.clone()).collect();
    v.sort();
    v
}

#[test]
fn prosody_join_sequence_lists_occupants_then_self() {
    let mut o = Occupants::default();
    let carol = p("<presence from='harness@muc.localhost/carol' to='push.localhost'><occupant-id id='Ejw3+' xmlns='urn:xmpp:occupant-id:0'/><x xmlns='http://jabber.org/protocol/muc#user'><item role='moderator' affiliation='owner'/></x></presence>");
    assert_eq!(apply(&mut o, "herald", &carol), Change::Occupant);
    let own = p("<presence from='harness@muc.localhost/herald' to='push.localhost' xml:lang='en'><occupant-id id='0xaKxPSrPHRGWtx/J9maLppX6REPNuwtFIxSFw7A24M=' xmlns='urn:xmpp:occupant-id:0'/><x xmlns='http://jabber.org/protocol/muc#user'><item jid='push.localhost' role='participant' affiliation='none'/><status code='110'/></x></presence>");
    assert_eq!(
        apply(&mut o, "herald", &own),
        Change::SelfJoined {
            nick: "herald".into(),
            created: false
        }
    );
    assert_eq!(nicks(&o), ["carol", "herald"]);
    assert_eq!(o.get("carol").unwrap().role, Role::Moderator);
    assert_eq!(o.get("carol").unwrap().real_jid, None);
    assert_eq!(
        o.get("herald").unwrap().real_jid.as_deref(),
        Some("push.localhost")
    );
}

#[test]
fn ejabberd_bare_room_presence_is_ignored_and_real_jids_are_bare() {
    let mut o = Occupants::default();
    let room = p("<presence to='push.localhost' from='harness@muc.localhost' id='7437975423381719753'><c ver='yyBlbjrRG+7OE4iOc3ol9JiXzEM=' node='http://www.process-one.net/en/ejabberd/' hash='sha-1' xmlns='http://jabber.org/protocol/caps'/></presence>");
    assert_eq!(apply(&mut o, "pushbot", &room), Change::Ignored);
    let carol = p("<presence to='push.localhost' from='harness@muc.localhost/carol'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='Carol@localhost/harness' role='participant' affiliation='member'/></x></presence>");
    apply(&mut o, "pushbot", &carol);
    let own = p("<presence to='push.localhost' from='harness@muc.localhost/pushbot'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='push.localhost' role='participant' affiliation='none'/><status code='110'/></x></presence>");
    assert!(matches!(
        apply(&mut o, "pushbot", &own),
        Change::SelfJoined { .. }
    ));
    assert_eq!(
        o.by_real_jid("carol@localhost").map(|c| c.nick.as_str()),
        Some("carol")
    );
}

#[test]
fn a_join_that_creates_the_room_is_recognised() {
    let mut o = Occupants::default();
    let created = p("<presence from='nosuch@muc.localhost/herald' to='herald.localhost'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='herald.localhost' affiliation='owner' role='moderator'/><status code='201'/><status code='110'/></x></presence>");
    assert_eq!(
        apply(&mut o, "herald", &created),
        Change::SelfJoined {
            nick: "herald".into(),
            created: true
        }
    );
}

#[test]
fn nick_changes_move_the_occupant() {
    let mut o = Occupants::default();
    apply(&mut o, "herald", &p("<presence from='dev@muc.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='bob@localhost/desk' affiliation='member' role='participant'/></x></presence>"));
    let change = p("<presence type='unavailable' from='dev@muc.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='bob@localhost/desk' affiliation='member' role='participant' nick='bobby'/><status code='303'/></x></presence>");
    assert_eq!(apply(&mut o, "herald", &change), Change::Occupant);
    assert_eq!(nicks(&o), ["bobby"]);
    assert_eq!(
        o.get("bobby").unwrap().real_jid.as_deref(),
        Some("bob@localhost")
    );
    // herald's own nick changed (by the room or a moderator).
    apply(&mut o, "herald", &p("<presence from='dev@muc.localhost/herald'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='110'/></x></presence>"));
    let own = p("<presence type='unavailable' from='dev@muc.localhost/herald'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant' nick='herald_bot'/><status code='303'/><status code='110'/></x></presence>");
    assert_eq!(
        apply(&mut o, "herald", &own),
        Change::SelfNick("herald_bot".into())
    );
    assert_eq!(nicks(&o), ["bobby", "herald_bot"]);
}

#[test]
fn an_occupant_leaving_is_removed() {
    let mut o = Occupants::default();
    apply(&mut o, "herald", &p("<presence from='dev@muc.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/></x></presence>"));
    let gone = p("<presence type='unavailable' from='dev@muc.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/></x></presence>");
    assert_eq!(apply(&mut o, "herald", &gone), Change::Occupant);
    assert!(o.is_empty());
}

#[test]
fn herald_kicked_banned_removed_shut_out_or_destroyed() {
    let out = |body: &str| {
        let mut o = Occupants::default();
        o.insert(Occupant {
            nick: "carol".into(),
            real_jid: None,
            role: Role::Moderator,
        });
        let xml = format!("<presence type='unavailable' from='dev@muc.localhost/herald' to='herald.localhost'><x xmlns='http://jabber.org/protocol/muc#user'>{body}<status code='110'/></x></presence>");
        let c = apply(&mut o, "herald", &p(&xml));
        assert!(o.is_empty(), "occupants forgotten once herald is out");
        c
    };
    assert_eq!(
        out("<item affiliation='none' role='none'><actor nick='carol'/><reason>too chatty</reason></item><status code='307'/>"),
        Change::SelfRemoved(Removal::Kicked { reason: Some("too chatty".into()) })
    );
    assert_eq!(
        out("<item affiliation='outcast' role='none'/><status code='301'/>"),
        Change::SelfRemoved(Removal::Banned { reason: None })
    );
    for code in ["321", "322"] {
        assert_eq!(
            out(&format!(
                "<item affiliation='none' role='none'/><status code='{code}'/>"
            )),
            Change::SelfRemoved(Removal::NotAMember)
        );
    }
    assert_eq!(
        out("<item affiliation='none' role='none'/><status code='332'/>"),
        Change::SelfRemoved(Removal::Shutdown)
    );
    let destroyed = out("<item affiliation='none' role='none'/><destroy jid='new@muc.localhost'><reason>moved</reason></destroy>");
    assert_eq!(
        destroyed,
        Change::SelfRemoved(Removal::Destroyed {
            venue: Some("new@muc.localhost".into()),
            reason: Some("moved".into())
        })
    );
    let Change::SelfRemoved(r) = destroyed else {
        unreachable!()
    };
    assert_eq!(
        r.describe(),
        "the room was destroyed (moved); it moved to new@muc.localhost"
    );
    assert_eq!(
        out("<item affiliation='none' role='none'/>"),
        Change::SelfRemoved(Removal::Left)
    );
}
