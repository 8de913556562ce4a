//! MUC presences and presence errors as Prosody and ejabberd send them, parsed by the
//! presence builder.

use super::*;
use crate::xmpp::inbound::tests::parse;
use crate::xmpp::inbound::{PresenceStanza, Stanza};
use crate::xmpp::router::{classify, Inbound};

fn presence(xml: &str) -> PresenceStanza {
    match parse(xml) {
        Stanza::Presence(p) => p,
        other => panic!("not a presence: {other:?}"),
    }
}

#[test]
fn prosody_self_presence_keeps_item_and_codes() {
    let p = presence("<presence from='harness@muc.localhost/pushbot' to='push.localhost' xml:lang='en'><occupant-id id='0xaKxPSrPHRGWtx/J9maLppX6REPNuwtFIxSFw7A24M=' xmlns='urn:xmpp:occupant-id:0'/><x xmlns='http://jabber.org/protocol/muc#user'><item jid='push.localhost' role='participant' affiliation='none'/><status code='110'/></x></presence>");
    assert!(p.muc_user);
    assert_eq!(p.from.as_deref(), Some("harness@muc.localhost/pushbot"));
    let m = p.muc.expect("details");
    assert_eq!(
        m.item,
        Some(MucItem {
            jid: Some("push.localhost".into()),
            role: Some("participant".into()),
            affiliation: Some("none".into()),
            nick: None,
            reason: None,
        })
    );
    assert_eq!(m.codes, [110]);
    assert!(m.destroy.is_none() && m.error.is_none());
}

#[test]
fn kick_nick_change_and_destroy_details() {
    let kick = presence("<presence type='unavailable' from='dev@muc.localhost/herald' to='herald.localhost'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'><actor nick='carol'/><reason>spam</reason></item><status code='307'/><status code='110'/></x></presence>");
    let m = kick.muc.unwrap();
    assert_eq!(m.codes, [307, 110]);
    assert_eq!(m.item.unwrap().reason.as_deref(), Some("spam"));
    assert_eq!(kick.kind.as_deref(), Some("unavailable"));

    let nick = presence("<presence type='unavailable' from='dev@muc.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='bob@localhost/desk' affiliation='member' role='participant' nick='bobby'/><status code='303'/></x></presence>");
    let m = nick.muc.unwrap();
    assert_eq!(m.item.as_ref().unwrap().nick.as_deref(), Some("bobby"));
    assert!(m.has_code(303));

    let gone = presence("<presence type='unavailable' from='dev@muc.localhost/herald'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><destroy jid='new@muc.localhost'><reason>moved</reason></destroy><status code='110'/></x></presence>");
    let d = gone.muc.unwrap().destroy.unwrap();
    assert_eq!(d.jid.as_deref(), Some("new@muc.localhost"));
    assert_eq!(d.reason.as_deref(), Some("moved"));
}

#[test]
fn presence_errors_keep_type_condition_and_text() {
    let p = presence("<presence from='closed@muc.localhost/herald' to='herald.localhost' type='error'><x xmlns='http://jabber.org/protocol/muc'/><error type='auth' by='closed@muc.localhost'><registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Membership is required to enter this room</text></error></presence>");
    assert!(matches!(
        classify(&Stanza::Presence(p.clone())),
        Inbound::MucPresence
    ));
    let e = p.muc.unwrap().error.unwrap();
    assert_eq!(e.kind.as_deref(), Some("auth"));
    assert_eq!(e.condition, "registration-required");
    assert_eq!(
        e.text.as_deref(),
        Some("Membership is required to enter this room")
    );
    assert!(!p.muc_user);
}

#[test]
fn user_presences_carry_no_muc_details() {
    let p = presence("<presence from='carol@localhost/harness' to='push.localhost'><show>dnd</show><status>busy</status><x xmlns='vcard-temp:x:update'><photo/></x><c hash='sha-1' ver='x' node='n' xmlns='http://jabber.org/protocol/caps'/></presence>");
    assert_eq!(p.muc, None);
    assert_eq!(p.show.as_deref(), Some("dnd"));
    assert_eq!(p.status.as_deref(), Some("busy"));
    // ejabberd's bare-room presence (room caps only) is no occupant presence either.
    let room = presence("<presence to='push.localhost' from='harness@muc.localhost' id='7437975423381719753'><c ver='yyBlbjrRG+7OE4iOc3ol9JiXzEM=' node='http://www.process-one.net/en/ejabberd/' hash='sha-1' xmlns='http://jabber.org/protocol/caps'/></presence>");
    assert_eq!(room.muc, None);
    assert!(!room.muc_user);
}

#[test]
fn an_occupant_status_text_is_still_read_beside_the_muc_child() {
    let p = presence("<presence from='dev@muc.localhost/bob'><show>away</show><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant'/></x><status>lunch</status></presence>");
    assert_eq!(p.show.as_deref(), Some("away"));
    assert_eq!(p.status.as_deref(), Some("lunch"));
    assert_eq!(
        p.muc.unwrap().item.unwrap().role.as_deref(),
        Some("participant")
    );
}
