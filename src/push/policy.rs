//! Who may register, and what a valid registration or room rule is. Pure: every refusal says
//! which field (or limit) it is about, in words a user can act on.

use xmpp_parsers::jid::{BareJid, FullJid, Jid};

use crate::config::{MucServices, PushSettings};

/// Longest `node`, `secret` and publish-options form, in bytes.
pub const MAX_NODE_BYTES: usize = 1024;
pub const MAX_SECRET_BYTES: usize = 1024;
pub const MAX_OPTIONS_BYTES: usize = 8192;
/// Longest `label`, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The requester may not do this (a foreign domain, another user's data).
    Forbidden(String),
    /// A field is missing or invalid: `field` names it.
    BadField { field: String, text: String },
    /// A limit (`max_rooms_per_user`, `max_rooms`) would be exceeded.
    Limit(String),
}

impl Refusal {
    pub fn field(field: &str, text: impl Into<String>) -> Refusal {
        Refusal::BadField {
            field: field.to_owned(),
            text: text.into(),
        }
    }

    /// The text a user reads.
    pub fn text(&self) -> String {
        match self {
            Refusal::Forbidden(t) | Refusal::Limit(t) => t.clone(),
            Refusal::BadField { field, text } => format!("field '{field}': {text}"),
        }
    }
}

/// The requester's bare JID, if it is a user (`user@domain`) of a served domain.
pub fn user_of(from: &str, settings: &PushSettings) -> Result<String, Refusal> {
    let jid = Jid::new(from).map_err(|_| Refusal::Forbidden("invalid requester JID".into()))?;
    let bare = jid.to_bare();
    if bare.node().is_none() {
        return Err(Refusal::Forbidden(
            "only user accounts (user@domain) can register for push notifications".into(),
        ));
    }
    let domain = bare.domain().as_str().to_lowercase();
    if !settings.domains.contains(&domain) {
        return Err(Refusal::Forbidden(format!(
            "herald serves push registrations for users of {} only, not {domain}",
            settings.domains.join(", ")
        )));
    }
    Ok(bare.to_string())
}

/// A bare JID in `field` (an app server: any bare JID, not the user's own).
pub fn app_server(field: &str, value: &str, user: &str) -> Result<String, Refusal> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Refusal::field(field, "is required"));
    }
    if value.contains('/') {
        return Err(Refusal::field(field, "must be a bare JID (no '/')"));
    }
    let jid = BareJid::new(value)
        .map_err(|e| Refusal::field(field, format!("{value:?} is not a valid JID: {e}")))?;
    let jid = jid.to_string();
    if jid == user {
        return Err(Refusal::field(
            field,
            "is your own JID; it must be the push app server",
        ));
    }
    Ok(jid)
}

/// A `node` (1..=1024 bytes).
pub fn node(field: &str, value: &str) -> Result<String, Refusal> {
    if value.is_empty() {
        return Err(Refusal::field(field, "is required"));
    }
    if value.len() > MAX_NODE_BYTES {
        return Err(Refusal::field(
            field,
            format!("is {} bytes, at most {MAX_NODE_BYTES}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Refusal::field(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// Optional short text (`label`) of at most `max` bytes, no control characters.
pub fn short_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, Refusal> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > max {
        return Err(Refusal::field(field, format!("is longer than {max} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(Refusal::field(field, "must not contain control characters"));
    }
    Ok(Some(v.to_owned()))
}

/// A room: a bare JID `room@service` on an allowed MUC service.
pub fn room(field: &str, value: &str, settings: &PushSettings) -> Result<String, Refusal> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Refusal::field(field, "is required"));
    }
    if value.contains('/') {
        return Err(Refusal::field(field, "must be a bare room JID (no '/')"));
    }
    let jid = BareJid::new(value)
        .map_err(|e| Refusal::field(field, format!("{value:?} is not a valid JID: {e}")))?;
    if jid.node().is_none() {
        return Err(Refusal::field(field, "must be a room JID (room@service)"));
    }
    let service = jid.domain().as_str().to_lowercase();
    let allowed = match &settings.muc_services {
        MucServices::Any => true,
        MucServices::Listed(list) => list.contains(&service),
        MucServices::UnderDomains => settings
            .domains
            .iter()
            .any(|d| service == *d || service.ends_with(&format!(".{d}"))),
    };
    if !allowed {
        return Err(Refusal::field(
            field,
            format!("{service} is not a MUC service herald watches rooms on"),
        ));
    }
    Ok(jid.to_string())
}

/// A nick valid as the resource of `room` (RFC 7622).
pub fn nick(field: &str, value: &str, room: &str) -> Result<String, Refusal> {
    if value.is_empty() {
        return Err(Refusal::field(field, "is required"));
    }
    FullJid::new(&format!("{room}/{value}"))
        .map_err(|e| Refusal::field(field, format!("{value:?} is not a valid nick: {e}")))?;
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(muc: MucServices) -> PushSettings {
        PushSettings::for_tests(muc)
    }

    #[test]
    fn only_users_of_served_domains_may_register() {
        let s = settings(MucServices::UnderDomains);
        assert_eq!(
            user_of("Alice@Example.org/phone", &s).unwrap(),
            "alice@example.org"
        );
        for bad in ["mallory@evil.example/x", "example.org", "muc.example.org"] {
            assert!(
                matches!(user_of(bad, &s), Err(Refusal::Forbidden(_))),
                "{bad}"
            );
        }
        let t = user_of("m@evil.example/x", &s).unwrap_err().text();
        assert!(
            t.contains("example.org") && t.contains("evil.example"),
            "{t}"
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let s = settings(MucServices::UnderDomains);
        let refused = |r: Result<String, Refusal>| r.unwrap_err().text();
        assert!(refused(app_server("jid", "a@b/c", "u@example.org")).starts_with("field 'jid'"));
        assert!(refused(app_server("jid", "", "u@example.org")).contains("required"));
        assert!(refused(app_server("jid", "u@example.org", "u@example.org")).contains("own"));
        assert!(refused(app_server("jid", "a b@c", "u@example.org")).contains("not a valid JID"));
        assert!(refused(node("node", &"n".repeat(1025))).contains("at most 1024"));
        assert_eq!(node("node", &"n".repeat(1024)).unwrap().len(), 1024);
        assert!(refused(room("room", "muc.example.org", &s)).contains("room@service"));
        assert!(refused(room("room", "r@conference.other.net", &s)).contains("other.net"));
        assert!(refused(nick("nick", "", "r@muc.example.org")).contains("required"));
        assert!(short_text("label", Some(&"x".repeat(300)), MAX_LABEL_BYTES).is_err());
        assert_eq!(short_text("label", Some("  "), 10), Ok(None));
    }

    #[test]
    fn rooms_must_be_on_allowed_services() {
        let under = settings(MucServices::UnderDomains);
        assert_eq!(
            room("room", "Dev@MUC.example.org", &under).unwrap(),
            "dev@muc.example.org"
        );
        let listed = settings(MucServices::Listed(vec!["conf.example.org".into()]));
        assert!(room("room", "dev@muc.example.org", &listed).is_err());
        assert!(room("room", "dev@conf.example.org", &listed).is_ok());
        assert!(room(
            "room",
            "dev@chat.elsewhere.net",
            &settings(MucServices::Any)
        )
        .is_ok());
    }
}
