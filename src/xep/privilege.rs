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
//! Parsing is lenient: a server that adds a permission herald does not know, or writes one it
//! cannot read, must not leave herald blind to the presence it did grant. So:
//! - attribute and `<perm/>` order do not matter; an absent `<perm/>` means `none`;
//! - a `<perm/>` herald cannot use is ignored and described in [`Advertisement::ignored`] (for
//!   a WARN): an unknown `access`, an unknown or missing `type` for a known access (that
//!   permission then counts as not granted: herald never guesses its rights), a missing
//!   `access`; likewise a `<namespace/>` of the `iq` permission without `ns` or with an unknown
//!   `type`, and any element herald does not expect inside `<privilege/>` or `<perm/>`;
//! - when an access appears more than once, the last `<perm/>` herald understands wins (an
//!   ignored one changes nothing), and the repetition is reported in `ignored` too;
//! - `ignored` holds at most [`MAX_IGNORED`] descriptions plus one that counts the rest, and
//!   quotes at most [`MAX_QUOTED_BYTES`] of any value, Debug-escaped;
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
/// Most descriptions kept in [`Advertisement::ignored`]; one more entry counts the rest.
pub const MAX_IGNORED: usize = 16;
/// Longest part of an attribute value or element name quoted in a description, in bytes.
pub const MAX_QUOTED_BYTES: usize = 64;

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
    /// What herald did not understand and ignored, one description each (e.g.
    /// `<perm access="roster" type="weird"/>: unknown type, not granted`), for the caller to log
    /// as a WARN. Empty for every advertisement Prosody and ejabberd send today.
    pub ignored: Vec<String>,
}

impl Advertisement {
    /// Whether the server forwards its users' presence to herald.
    pub fn has_presence(&self) -> bool {
        self.presence != PresencePerm::None
    }
}

/// Why a `<privilege/>` advertisement could not be used at all: only its sender can make it
/// unusable, since everything inside is parsed leniently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivilegeError {
    #[error("privilege advertisement without a 'from'")]
    MissingFrom,
    #[error("privilege advertisement from '{0}', which is not a server domain")]
    FromNotServer(String),
}

/// Reads a privilege advertisement.
///
/// `None`: the stanza is not an advertisement (not a `<message/>`, a `type='error'` message, no
/// `<privilege/>` in either namespace, or a `<privilege/>` that wraps a forwarded stanza).
/// `Some(Err)`: it is one, but its `from` is not a server domain. Anything wrong inside it is
/// ignored and described in [`Advertisement::ignored`].
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
        ignored: Vec::new(),
    };
    let mut ignored = Ignored::default();
    // Which accesses an understood `<perm/>` has set: presence, roster, message, iq.
    let mut seen = [false; 4];
    for child in privilege.children() {
        if !child.is("perm", ns.as_str()) {
            ignored.push(format!(
                "{} in <privilege/>: unexpected element",
                element_name(child)
            ));
            continue;
        }
        let Some(access) = child.attr("access") else {
            ignored.push(format!("{}: no access attribute", perm_text(child)));
            continue;
        };
        // Which entry of `seen` this `<perm/>` set, when herald understood it.
        let slot = match access {
            "presence" => perm_type(child, PresencePerm::parse, &mut ignored).map(|perm| {
                adv.presence = perm;
                0
            }),
            "roster" => perm_type(child, RosterPerm::parse, &mut ignored).map(|perm| {
                adv.roster = perm;
                1
            }),
            "message" => perm_type(child, MessagePerm::parse, &mut ignored).map(|perm| {
                adv.message = perm;
                2
            }),
            "iq" => {
                adv.iq = iq_namespaces(child, ns, &mut ignored);
                Some(3)
            }
            _ => {
                // Whatever a future access carries inside is its own business.
                ignored.push(format!("{}: unknown access", perm_text(child)));
                continue;
            }
        };
        if access != "iq" {
            unexpected_children(child, &mut ignored);
        }
        if let Some(slot) = slot {
            if std::mem::replace(&mut seen[slot], true) {
                ignored.push(format!(
                    "<perm access={}/> repeated: the last one is used",
                    quote(access)
                ));
            }
        }
    }
    adv.ignored = ignored.finish();
    Ok(adv)
}

/// The descriptions of what was ignored, at most [`MAX_IGNORED`] plus a count of the rest.
#[derive(Default)]
struct Ignored {
    kept: Vec<String>,
    more: usize,
}

impl Ignored {
    fn push(&mut self, description: String) {
        if self.kept.len() < MAX_IGNORED {
            self.kept.push(description);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.kept
                .push(format!("and {} more ignored item(s)", self.more));
        }
        self.kept
    }
}

/// A value as it appears in a description: cut to [`MAX_QUOTED_BYTES`] at a character
/// boundary, quoted and escaped, so a hostile value cannot flood or forge a log line.
fn quote(value: &str) -> String {
    let mut end = value.len().min(MAX_QUOTED_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    if end < value.len() {
        format!("{:?}…", &value[..end])
    } else {
        format!("{value:?}")
    }
}

/// `<name xmlns="ns"/>` for an element herald did not expect.
fn element_name(el: &Element) -> String {
    format!("<{} xmlns={}/>", quote(el.name()), quote(&el.ns()))
}

/// `<perm access="…" type="…"/>` with the attributes the element has.
fn perm_text(perm: &Element) -> String {
    let mut text = String::from("<perm");
    for name in ["access", "type"] {
        if let Some(value) = perm.attr(name) {
            text.push_str(&format!(" {name}={}", quote(value)));
        }
    }
    text.push_str("/>");
    text
}

/// The permission's `type`, or `None` (reported) when it is missing or unknown.
fn perm_type<T>(perm: &Element, parse: fn(&str) -> Option<T>, ignored: &mut Ignored) -> Option<T> {
    let Some(value) = perm.attr("type") else {
        ignored.push(format!(
            "{}: no type attribute, not granted",
            perm_text(perm)
        ));
        return None;
    };
    let parsed = parse(value);
    if parsed.is_none() {
        ignored.push(format!("{}: unknown type, not granted", perm_text(perm)));
    }
    parsed
}

/// Reports the child elements of a `<perm/>` that carries none.
fn unexpected_children(perm: &Element, ignored: &mut Ignored) {
    for child in perm.children() {
        ignored.push(format!(
            "{} in {}: unexpected element",
            element_name(child),
            perm_text(perm)
        ));
    }
}

/// `<perm access='iq'><namespace ns='…' type='get|set|both'/>…</perm>`: the namespaces herald
/// can use; the others are reported.
fn iq_namespaces(perm: &Element, ns: PrivilegeNs, ignored: &mut Ignored) -> Vec<(String, String)> {
    let mut namespaces = Vec::new();
    for child in perm.children() {
        if !child.is("namespace", ns.as_str()) {
            ignored.push(format!(
                "{} in <perm access=\"iq\"/>: unexpected element",
                element_name(child)
            ));
            continue;
        }
        let describe = || {
            let mut text = String::from("<namespace");
            for name in ["ns", "type"] {
                if let Some(value) = child.attr(name) {
                    text.push_str(&format!(" {name}={}", quote(value)));
                }
            }
            text + "/> in <perm access=\"iq\"/>"
        };
        match (child.attr("ns"), child.attr("type")) {
            (None, _) => ignored.push(format!("{}: no ns attribute", describe())),
            (Some(_), None) => ignored.push(format!("{}: no type attribute", describe())),
            (Some(iq_ns), Some(kind @ ("get" | "set" | "both"))) => {
                namespaces.push((iq_ns.to_owned(), kind.to_owned()));
            }
            (Some(_), Some(_)) => ignored.push(format!("{}: unknown type", describe())),
        }
    }
    namespaces
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

#[cfg(test)]
#[path = "privilege_tests.rs"]
mod tests;
