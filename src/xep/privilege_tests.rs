//! Unit tests of [`super`].

use super::*;

/// Prosody 0.12.3 + prosody-modules, verbatim from `reference/servers.md` §2.
const PROSODY_ADVERT: &str = "<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/><perm access='presence' type='managed_entity'/></privilege></message>";
/// ejabberd 23.01, verbatim from `reference/servers.md` §2.
const EJABBERD_ADVERT: &str = "<message to='push.localhost' from='localhost'><privilege xmlns='urn:xmpp:privilege:1'><perm type='outgoing' access='message'/><perm type='both' access='roster'/><perm type='managed_entity' access='presence'/></privilege></message>";

/// Parses a stanza as the component stream delivers it: inside a stream whose default
/// namespace is `jabber:component:accept`, which the captured stanzas do not repeat.
fn parse(xml: &str) -> Option<Result<Advertisement, PrivilegeError>> {
    let element =
        Element::from_reader_with_prefixes(xml.as_bytes(), "jabber:component:accept".to_owned())
            .expect("test XML parses");
    parse_advertisement(&element)
}

fn ok(xml: &str) -> Advertisement {
    match parse(xml) {
        Some(Ok(adv)) => adv,
        other => panic!("expected an advertisement, got {other:?}"),
    }
}

fn err(xml: &str) -> PrivilegeError {
    match parse(xml) {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn full_grant(ns: PrivilegeNs) -> Advertisement {
    Advertisement {
        ns,
        server: "localhost".into(),
        presence: PresencePerm::ManagedEntity,
        roster: RosterPerm::Both,
        message: MessagePerm::Outgoing,
        iq: vec![],
        ignored: vec![],
    }
}

#[test]
fn prosody_advert_speaks_v2() {
    let adv = ok(PROSODY_ADVERT);
    assert_eq!(adv, full_grant(PrivilegeNs::V2));
    assert!(adv.has_presence());
}

#[test]
fn ejabberd_advert_speaks_v1() {
    assert_eq!(ok(EJABBERD_ADVERT), full_grant(PrivilegeNs::V1));
}

#[test]
fn stanza_namespace_is_irrelevant() {
    let xml = "<message xmlns='jabber:client' from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/></privilege></message>";
    assert_eq!(ok(xml).presence, PresencePerm::ManagedEntity);
}

#[test]
fn attribute_and_perm_order_do_not_matter() {
    let xml = "<message to='push.localhost' from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm type='managed_entity' access='presence'/><perm type='outgoing' access='message'/><perm access='roster' type='both'/></privilege></message>";
    assert_eq!(ok(xml), full_grant(PrivilegeNs::V2));
}

#[test]
fn missing_presence_perm_means_none() {
    let xml = "<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.presence, PresencePerm::None);
    assert!(!adv.has_presence());
    assert_eq!(adv.roster, RosterPerm::Both);
}

#[test]
fn roster_perm_only() {
    let xml = "<message from='example.org' to='herald.example.org'><privilege xmlns='urn:xmpp:privilege:1'><perm access='roster' type='get'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.server, "example.org");
    assert_eq!(adv.roster, RosterPerm::Get);
    assert_eq!(adv.presence, PresencePerm::None);
    assert_eq!(adv.message, MessagePerm::None);
    assert!(adv.iq.is_empty());
}

#[test]
fn explicit_none_and_roster_presence() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='roster'/><perm access='message' type='none'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.presence, PresencePerm::Roster);
    assert!(adv.has_presence());
    assert_eq!(adv.message, MessagePerm::None);
}

#[test]
fn iq_perm_with_namespaces() {
    let xml = "<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='iq'><namespace ns='http://jabber.org/protocol/pubsub' type='set'/><namespace ns='urn:xmpp:mam:2' type='both'/></perm><perm access='presence' type='managed_entity'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(
        adv.iq,
        vec![
            (
                "http://jabber.org/protocol/pubsub".to_owned(),
                "set".to_owned()
            ),
            ("urn:xmpp:mam:2".to_owned(), "both".to_owned()),
        ]
    );
    assert_eq!(adv.presence, PresencePerm::ManagedEntity);
}

#[test]
fn iq_namespace_with_bad_type_is_ignored() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='iq'><namespace ns='urn:xmpp:mam:2' type='all'/><namespace type='get'/><namespace ns='urn:xmpp:x'/><namespace ns='jabber:iq:roster' type='get'/></perm></privilege></message>";
    let adv = ok(xml);
    assert_eq!(
        adv.iq,
        vec![("jabber:iq:roster".to_owned(), "get".to_owned())]
    );
    assert_eq!(
        adv.ignored,
        [
            "<namespace ns=\"urn:xmpp:mam:2\" type=\"all\"/> in <perm access=\"iq\"/>: unknown type",
            "<namespace type=\"get\"/> in <perm access=\"iq\"/>: no ns attribute",
            "<namespace ns=\"urn:xmpp:x\"/> in <perm access=\"iq\"/>: no type attribute",
        ]
    );
}

#[test]
fn unknown_access_is_ignored() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='telepathy' type='full'/><perm access='presence' type='managed_entity'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.presence, PresencePerm::ManagedEntity);
    assert_eq!(
        adv.ignored,
        ["<perm access=\"telepathy\" type=\"full\"/>: unknown access"]
    );
}

#[test]
fn message_without_privilege_is_not_an_advert() {
    assert!(
        parse("<message from='localhost' to='push.localhost'><body>hi</body></message>").is_none()
    );
    // Right element name, wrong namespace.
    assert!(parse("<message from='localhost'><privilege xmlns='urn:xmpp:privilege:3'><perm access='presence' type='managed_entity'/></privilege></message>").is_none());
    // Not a message at all.
    assert!(parse("<presence from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/></privilege></presence>").is_none());
}

#[test]
fn error_message_is_not_an_advert() {
    // ejabberd's bounce of a privileged message once privileges were revoked (servers.md §5).
    let xml = "<message to='push.localhost' from='localhost' type='error' id='probe1-7'><privilege xmlns='urn:xmpp:privilege:1'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='alice@localhost' to='carol@localhost' type='chat'><body>privileged after probe2 left</body></message></forwarded></privilege><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xml:lang='en' xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>No available resource found</text></error></message>";
    assert!(parse(xml).is_none());
    let shaped_like_an_advert = "<message from='localhost' type='error'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/></privilege></message>";
    assert!(parse(shaped_like_an_advert).is_none());
}

#[test]
fn forwarded_privileged_message_is_not_an_advert() {
    let xml = "<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='alice@localhost' to='carol@localhost'><body>x</body></message></forwarded></privilege></message>";
    assert!(parse(xml).is_none());
}

#[test]
fn unknown_presence_type_is_not_granted_and_reported() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='everything'/><perm access='roster' type='both'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.presence, PresencePerm::None);
    assert!(!adv.has_presence());
    assert_eq!(adv.roster, RosterPerm::Both);
    assert_eq!(
        adv.ignored,
        ["<perm access=\"presence\" type=\"everything\"/>: unknown type, not granted"]
    );
}

#[test]
fn unknown_roster_type_does_not_hide_presence() {
    for ns in [NS_PRIVILEGE_1, NS_PRIVILEGE_2] {
        let xml = format!("<message from='localhost'><privilege xmlns='{ns}'><perm access='presence' type='managed_entity'/><perm access='roster' type='weird'/><perm access='message' type='outgoing'/></privilege></message>");
        let adv = ok(&xml);
        assert_eq!(adv.presence, PresencePerm::ManagedEntity);
        assert_eq!(adv.roster, RosterPerm::None);
        assert_eq!(adv.message, MessagePerm::Outgoing);
        assert_eq!(
            adv.ignored,
            ["<perm access=\"roster\" type=\"weird\"/>: unknown type, not granted"]
        );
    }
}

#[test]
fn missing_attributes_are_ignored_and_reported() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:1'><perm access='roster'/><perm type='both'/><perm/><perm access='presence' type='managed_entity'/></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.presence, PresencePerm::ManagedEntity);
    assert_eq!(adv.roster, RosterPerm::None);
    assert_eq!(
        adv.ignored,
        [
            "<perm access=\"roster\"/>: no type attribute, not granted",
            "<perm type=\"both\"/>: no access attribute",
            "<perm/>: no access attribute",
        ]
    );
}

#[test]
fn repeated_access_last_understood_one_wins() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='none'/><perm access='presence' type='managed_entity'/><perm access='presence' type='bogus'/><perm access='roster' type='get'/></privilege></message>";
    let adv = ok(xml);
    // `bogus` changes nothing: the last understood one, managed_entity, stands.
    assert_eq!(adv.presence, PresencePerm::ManagedEntity);
    assert_eq!(adv.roster, RosterPerm::Get);
    assert_eq!(
        adv.ignored,
        [
            "<perm access=\"presence\"/> repeated: the last one is used",
            "<perm access=\"presence\" type=\"bogus\"/>: unknown type, not granted",
        ]
    );
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/><perm access='presence' type='none'/></privilege></message>";
    assert_eq!(ok(xml).presence, PresencePerm::None);
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='iq'><namespace ns='a' type='get'/></perm><perm access='iq'><namespace ns='b' type='set'/></perm></privilege></message>";
    assert_eq!(ok(xml).iq, vec![("b".to_owned(), "set".to_owned())]);
}

#[test]
fn nested_junk_is_ignored_and_reported() {
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'>text<junk xmlns='urn:x'><perm access='presence' type='managed_entity'/></junk><perm xmlns='urn:xmpp:privilege:1' access='roster' type='both'/><perm access='presence' type='managed_entity'><deeper><deepest/></deeper></perm><perm access='iq'><bogus/></perm><perm access='future'><whatever/></perm></privilege></message>";
    let adv = ok(xml);
    assert_eq!(adv.presence, PresencePerm::ManagedEntity);
    // The roster perm in the other namespace is not read.
    assert_eq!(adv.roster, RosterPerm::None);
    assert!(adv.iq.is_empty());
    assert_eq!(
        adv.ignored,
        [
            "<\"junk\" xmlns=\"urn:x\"/> in <privilege/>: unexpected element",
            "<\"perm\" xmlns=\"urn:xmpp:privilege:1\"/> in <privilege/>: unexpected element",
            "<\"deeper\" xmlns=\"urn:xmpp:privilege:2\"/> in <perm access=\"presence\" type=\"managed_entity\"/>: unexpected element",
            "<\"bogus\" xmlns=\"urn:xmpp:privilege:2\"/> in <perm access=\"iq\"/>: unexpected element",
            "<perm access=\"future\"/>: unknown access",
        ]
    );
}

#[test]
fn ignored_list_is_bounded_and_values_are_quoted_safely() {
    let long = "x".repeat(1000);
    let mut perms = String::new();
    for i in 0..100 {
        perms.push_str(&format!("<perm access='a{i}{long}' type='t'/>"));
    }
    let xml = format!("<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'>{perms}<perm access='presence' type='managed_entity'/><perm access='roster' type='&#x202e;&quot;/&gt;&#10;forged'/></privilege></message>");
    let adv = ok(&xml);
    assert_eq!(adv.presence, PresencePerm::ManagedEntity);
    assert_eq!(adv.ignored.len(), MAX_IGNORED + 1);
    assert_eq!(adv.ignored[MAX_IGNORED], "and 85 more ignored item(s)");
    assert!(adv.ignored[0].starts_with("<perm access=\"a0xxx"));
    assert!(
        adv.ignored[0].len() < MAX_QUOTED_BYTES + 64,
        "{}",
        adv.ignored[0]
    );
    assert!(adv.ignored[0].contains("\"…"));
    // A value with quotes, a newline and a bidi override is escaped, not written raw.
    let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='&#x202e;&quot;/&gt;&#10;forged'/></privilege></message>";
    assert_eq!(
        ok(xml).ignored,
        ["<perm access=\"roster\" type=\"\\u{202e}\\\"/>\\nforged\"/>: unknown type, not granted"]
    );
}

#[test]
fn from_must_be_a_server_domain() {
    let xml = "<message to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/></privilege></message>";
    assert_eq!(err(xml), PrivilegeError::MissingFrom);
    let xml = "<message from='mallory@localhost/x' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/></privilege></message>";
    assert_eq!(
        err(xml),
        PrivilegeError::FromNotServer("mallory@localhost/x".into())
    );
}

#[test]
fn namespace_round_trip() {
    for ns in [PrivilegeNs::V1, PrivilegeNs::V2] {
        assert_eq!(PrivilegeNs::from_ns(ns.as_str()), Some(ns));
    }
    assert_eq!(PrivilegeNs::from_ns("urn:xmpp:privilege:0"), None);
    assert_eq!(PresencePerm::ManagedEntity.as_str(), "managed_entity");
}
