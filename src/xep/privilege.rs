//! XEP-0356 (Privileged Entity) advertisements.
//!
//! Right after `<handshake/>` the server tells the component what it may do, in a `<message/>` from
//! the server's domain:
//!
//! ```xml
//! <message from='example.org' to='herald.example.org'>
//!   <privilege xmlns='urn:xmpp:privilege:2'>
//!     <perm access='roster' type='both'/>
//!     <perm access='message' type='outgoing'/>
//!     <perm access='presence' type='managed_entity'/>
//!   </privilege>
//! </message>
//! ```
//!
//! Prosody 0.12 (prosody-modules) speaks `urn:xmpp:privilege:2`, ejabberd 23.01 speaks
//! `urn:xmpp:privilege:1` (see `reference/servers.md` §2). Both are parsed into one
//! [`Advertisement`] that remembers the namespace, because everything privileged herald sends must
//! use the namespace the server advertised: the other one is refused.
//!
//! Parsing rules (lenient where it cannot hurt, strict where a guess would be wrong):
//! - attribute and `<perm/>` order do not matter; an absent `<perm/>` means `none`;
//! - an unknown `access` value is ignored (a later XEP revision may add one);
//! - an unknown `type` for a known access is an error: herald would otherwise guess its rights;
//! - when an access appears twice, the last one wins;
//! - `type='error'` messages, and `<privilege/>` elements that wrap a `<forwarded/>` stanza (a
//!   privileged message bounced back to us), are not advertisements.
//!
//! The `from` must be a bare domain: a user could send herald a message carrying a
//! `<privilege/>` element, and it must not be mistaken for one from the server. The caller still
//! has to check that the domain is one of the servers herald is attached to.

use minidom::Element;
use xmpp_parsers::jid::Jid;

/// The XEP-0356 namespace used before version 0.4 of the XEP (ejabberd up to 24.07).
pub const NS_PRIVILEGE_1: &str = "urn:xmpp:privilege:1";
/// The XEP-0356 namespace since version 0.4 of the XEP (Prosody's mod_privilege, ejabberd 24.10+).
pub const NS_PRIVILEGE_2: &str = "urn:xmpp:privilege:2";
/// XEP-0297 forwarding, present in privileged messages (never in an advertisement).
const NS_FORWARD: &str = "urn:xmpp:forward:0";

/// Which XEP-0356 namespace a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeNs {
    /// `urn:xmpp:privilege:1`
    V1,
    /// `urn:xmpp:privilege:2`
    V2,
}

impl PrivilegeNs {
    /// The namespace URI.
    pub fn as_str(&self) -> &'static str {
        match self {
            PrivilegeNs::V1 => NS_PRIVILEGE_1,
            PrivilegeNs::V2 => NS_PRIVILEGE_2,
        }
    }

    /// The version for a namespace URI, `None` for anything else.
    pub fn from_ns(ns: &str) -> Option<Self> {
        match ns {
            NS_PRIVILEGE_1 => Some(PrivilegeNs::V1),
            NS_PRIVILEGE_2 => Some(PrivilegeNs::V2),
            _ => None,
        }
    }
}

/// `<perm access='presence' type='…'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresencePerm {
    /// No presence is forwarded.
    None,
    /// Presence of the users and of the contacts in their rosters.
    Roster,
    /// Presence of the users of the server.
    ManagedEntity,
}

impl PresencePerm {
    /// The XML value.
    pub fn as_str(&self) -> &'static str {
        match self {
            PresencePerm::None => "none",
            PresencePerm::Roster => "roster",
            PresencePerm::ManagedEntity => "managed_entity",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(PresencePerm::None),
            "roster" => Some(PresencePerm::Roster),
            "managed_entity" => Some(PresencePerm::ManagedEntity),
            _ => None,
        }
    }
}

/// `<perm access='roster' type='…'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterPerm {
    None,
    Get,
    Set,
    Both,
}

impl RosterPerm {
    /// The XML value.
    pub fn as_str(&self) -> &'static str {
        match self {
            RosterPerm::None => "none",
            RosterPerm::Get => "get",
            RosterPerm::Set => "set",
            RosterPerm::Both => "both",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(RosterPerm::None),
            "get" => Some(RosterPerm::Get),
            "set" => Some(RosterPerm::Set),
            "both" => Some(RosterPerm::Both),
            _ => None,
        }
    }
}

/// `<perm access='message' type='…'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagePerm {
    None,
    /// herald may send messages on behalf of the server's users.
    Outgoing,
}

impl MessagePerm {
    /// The XML value.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessagePerm::None => "none",
            MessagePerm::Outgoing => "outgoing",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(MessagePerm::None),
            "outgoing" => Some(MessagePerm::Outgoing),
            _ => None,
        }
    }
}

/// What one server granted herald, as advertised on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// The namespace the server speaks; use it for everything privileged herald sends there.
    pub ns: PrivilegeNs,
    /// The server's domain (the message's `from`).
    pub server: String,
    pub presence: PresencePerm,
    pub roster: RosterPerm,
    pub message: MessagePerm,
    /// `:2` only: `(namespace, type)` of each IQ namespace herald may use on users' behalf;
    /// `type` is `get`, `set` or `both`.
    pub iq: Vec<(String, String)>,
}

impl Advertisement {
    /// Whether the server forwards its users' presence to herald.
    pub fn has_presence(&self) -> bool {
        self.presence != PresencePerm::None
    }
}

/// Why a `<privilege/>` advertisement could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivilegeError {
    #[error("privilege advertisement without a 'from'")]
    MissingFrom,
    #[error("privilege advertisement from '{0}', which is not a server domain")]
    FromNotServer(String),
    #[error("<perm/> without an 'access' attribute")]
    MissingAccess,
    #[error("<perm access='{access}'/> without a 'type' attribute")]
    MissingType { access: String },
    #[error("<perm access='{access}'/> has an unknown type '{value}'")]
    BadType { access: String, value: String },
    #[error("<perm access='iq'> has a <namespace/> without an 'ns' attribute")]
    MissingIqNamespace,
}

/// Reads a privilege advertisement.
///
/// `None`: the stanza is not an advertisement (not a `<message/>`, a `type='error'` message, no
/// `<privilege/>` in either namespace, or a `<privilege/>` that wraps a forwarded stanza).
/// `Some(Err)`: it is one, but malformed.
pub fn parse_advertisement(message: &Element) -> Option<Result<Advertisement, PrivilegeError>> {
    if message.name() != "message" || message.attr("type") == Some("error") {
        return None;
    }
    let (privilege, ns) = message.children().find_map(|child| {
        if child.name() != "privilege" {
            return None;
        }
        [PrivilegeNs::V2, PrivilegeNs::V1]
            .into_iter()
            .find(|ns| child.has_ns(ns.as_str()))
            .map(|ns| (child, ns))
    })?;
    if privilege.has_child("forwarded", NS_FORWARD) {
        return None;
    }
    Some(parse_privilege(message, privilege, ns))
}

fn parse_privilege(
    message: &Element,
    privilege: &Element,
    ns: PrivilegeNs,
) -> Result<Advertisement, PrivilegeError> {
    let server = server_domain(message.attr("from"))?;
    let mut adv = Advertisement {
        ns,
        server,
        presence: PresencePerm::None,
        roster: RosterPerm::None,
        message: MessagePerm::None,
        iq: Vec::new(),
    };
    for perm in privilege.children().filter(|c| c.is("perm", ns.as_str())) {
        let access = perm.attr("access").ok_or(PrivilegeError::MissingAccess)?;
        match access {
            "presence" => adv.presence = perm_type(perm, access, PresencePerm::parse)?,
            "roster" => adv.roster = perm_type(perm, access, RosterPerm::parse)?,
            "message" => adv.message = perm_type(perm, access, MessagePerm::parse)?,
            "iq" => adv.iq = iq_namespaces(perm, ns)?,
            _ => {}
        }
    }
    Ok(adv)
}

/// The `from` as a bare domain (normalised by the JID rules).
fn server_domain(from: Option<&str>) -> Result<String, PrivilegeError> {
    let from = from.ok_or(PrivilegeError::MissingFrom)?;
    match Jid::new(from) {
        Ok(jid) if jid.node().is_none() && jid.resource().is_none() => {
            Ok(jid.domain().as_str().to_owned())
        }
        _ => Err(PrivilegeError::FromNotServer(from.to_owned())),
    }
}

fn perm_type<T>(
    perm: &Element,
    access: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, PrivilegeError> {
    let value = perm
        .attr("type")
        .ok_or_else(|| PrivilegeError::MissingType {
            access: access.to_owned(),
        })?;
    parse(value).ok_or_else(|| PrivilegeError::BadType {
        access: access.to_owned(),
        value: value.to_owned(),
    })
}

/// `<perm access='iq'><namespace ns='…' type='get|set|both'/>…</perm>`.
fn iq_namespaces(perm: &Element, ns: PrivilegeNs) -> Result<Vec<(String, String)>, PrivilegeError> {
    perm.children()
        .filter(|c| c.is("namespace", ns.as_str()))
        .map(|namespace| {
            let iq_ns = namespace
                .attr("ns")
                .ok_or(PrivilegeError::MissingIqNamespace)?;
            let kind = namespace
                .attr("type")
                .ok_or_else(|| PrivilegeError::MissingType {
                    access: "iq".to_owned(),
                })?;
            match kind {
                "get" | "set" | "both" => Ok((iq_ns.to_owned(), kind.to_owned())),
                _ => Err(PrivilegeError::BadType {
                    access: "iq".to_owned(),
                    value: kind.to_owned(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prosody 0.12.3 + prosody-modules, verbatim from `reference/servers.md` §2.
    const PROSODY_ADVERT: &str = "<message from='localhost' to='push.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/><perm access='presence' type='managed_entity'/></privilege></message>";
    /// ejabberd 23.01, verbatim from `reference/servers.md` §2.
    const EJABBERD_ADVERT: &str = "<message to='push.localhost' from='localhost'><privilege xmlns='urn:xmpp:privilege:1'><perm type='outgoing' access='message'/><perm type='both' access='roster'/><perm type='managed_entity' access='presence'/></privilege></message>";

    /// Parses a stanza as the component stream delivers it: inside a stream whose default
    /// namespace is `jabber:component:accept`, which the captured stanzas do not repeat.
    fn parse(xml: &str) -> Option<Result<Advertisement, PrivilegeError>> {
        let element = Element::from_reader_with_prefixes(
            xml.as_bytes(),
            "jabber:component:accept".to_owned(),
        )
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
    fn iq_namespace_with_bad_type_is_an_error() {
        let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='iq'><namespace ns='urn:xmpp:mam:2' type='all'/></perm></privilege></message>";
        assert_eq!(
            err(xml),
            PrivilegeError::BadType {
                access: "iq".into(),
                value: "all".into()
            }
        );
    }

    #[test]
    fn unknown_access_is_ignored() {
        let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='telepathy' type='full'/><perm access='presence' type='managed_entity'/></privilege></message>";
        assert_eq!(ok(xml).presence, PresencePerm::ManagedEntity);
    }

    #[test]
    fn message_without_privilege_is_not_an_advert() {
        assert!(
            parse("<message from='localhost' to='push.localhost'><body>hi</body></message>")
                .is_none()
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
    fn malformed_type_is_an_error() {
        let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='everything'/></privilege></message>";
        assert_eq!(
            err(xml),
            PrivilegeError::BadType {
                access: "presence".into(),
                value: "everything".into()
            }
        );
        let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:1'><perm access='roster'/></privilege></message>";
        assert_eq!(
            err(xml),
            PrivilegeError::MissingType {
                access: "roster".into()
            }
        );
        let xml = "<message from='localhost'><privilege xmlns='urn:xmpp:privilege:1'><perm type='both'/></privilege></message>";
        assert_eq!(err(xml), PrivilegeError::MissingAccess);
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
}
