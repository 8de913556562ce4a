//! What a presence read off the stream means for the table: a user resource's availability, or
//! nothing. Pure: the presence owner calls [`interpret`] for every presence the connection hands
//! it, then checks that the sender's domain is one it trusts.

use std::borrow::Cow;

use crate::presence::sanitize::{self, JidProblem, UserJid};
use crate::presence::tracker::Update;
use crate::xmpp::inbound::PresenceStanza;

/// A user resource's presence, as the table takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// The full JID, validated and normalised (RFC 7622): `node@domain/resource`.
    pub from: UserJid<'a>,
    pub update: Update,
    /// Carried `<delay/>`: part of the server's snapshot after a (re)connect.
    pub delayed: bool,
}

impl Forwarded<'_> {
    pub fn domain(&self) -> &str {
        self.from.domain()
    }
}

/// Why a presence is not a user resource's availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// No `from` at all.
    NoFrom,
    /// `from` is not a valid user full JID.
    BadJid(JidProblem),
    /// probe, subscribe, …: not a change of availability.
    OtherType,
}

/// Limits on what herald keeps from a user.
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    pub max_status_bytes: usize,
}

/// Reads a forwarded presence: its sender must be a valid user resource
/// (`node@domain/resource`, see [`sanitize::user_jid`]); `show` outside RFC 6121's four values
/// is absent; the status is cut to `limits.max_status_bytes` at a character boundary (control
/// characters dropped); a priority that is not a number in -128..=127 is 0.
pub fn interpret(p: &PresenceStanza, limits: TextLimits) -> Result<Forwarded<'_>, Ignored> {
    let from = p.from.as_deref().ok_or(Ignored::NoFrom)?;
    let from = sanitize::user_jid(from).map_err(Ignored::BadJid)?;
    let update = match p.kind.as_deref() {
        None | Some("available") => Update::Available {
            show: sanitize::show(p.show.as_deref()).map(str::to_owned),
            status: sanitize::status(p.status.as_deref(), limits.max_status_bytes)
                .map(Cow::into_owned),
            priority: p
                .priority
                .as_deref()
                .and_then(|t| t.trim().parse::<i8>().ok())
                .unwrap_or(0),
        },
        Some("unavailable") => Update::Unavailable,
        Some(_) => return Err(Ignored::OtherType),
    };
    Ok(Forwarded {
        from,
        update,
        delayed: p.delayed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::inbound::tests::parse;
    use crate::xmpp::inbound::Stanza;

    const LIMITS: TextLimits = TextLimits {
        max_status_bytes: 16,
    };

    fn presence(xml: &str) -> PresenceStanza {
        match parse(xml) {
            Stanza::Presence(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prosody_snapshot_presence_is_delayed_and_available() {
        let p = presence(
            r#"<presence id='6e1a' xml:lang='en' to='push.localhost' from='carol@localhost/harness'><show>dnd</show><status>carol online</status><c hash='sha-1' ver='x' node='n' xmlns='http://jabber.org/protocol/caps'/><delay from='localhost' xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>"#,
        );
        let f = interpret(&p, LIMITS).unwrap();
        assert_eq!(f.from.as_str(), "carol@localhost/harness");
        assert_eq!(f.domain(), "localhost");
        assert!(f.delayed);
        assert_eq!(
            f.update,
            Update::Available {
                show: Some("dnd".into()),
                status: Some("carol online".into()),
                priority: 0
            }
        );
    }

    #[test]
    fn server_made_unavailable_is_live() {
        let p = presence(
            "<presence from='bob@localhost/harness' to='push.localhost' type='unavailable'/>",
        );
        let f = interpret(&p, LIMITS).unwrap();
        assert_eq!((f.update, f.delayed), (Update::Unavailable, false));
    }

    #[test]
    fn bad_values_are_made_harmless() {
        let p = presence("<presence from='a@b/c'><priority>999</priority><show>bogus&amp;&lt;x&gt;</show><status>a status far longer than sixteen bytes</status></presence>");
        assert_eq!(
            interpret(&p, LIMITS).unwrap().update,
            Update::Available {
                show: None,
                status: Some("a status far lon".into()),
                priority: 0
            }
        );
    }

    #[test]
    fn only_user_resources_count() {
        for xml in [
            "<presence/>",
            "<presence from='room@muc.localhost'/>",
            "<presence from='localhost/x'/>",
            "<presence from='@localhost/x'/>",
            "<presence from='a@localhost/'/>",
            "<presence from='a@b/c' type='subscribe'/>",
        ] {
            assert!(interpret(&presence(xml), LIMITS).is_err(), "{xml}");
        }
    }
}
