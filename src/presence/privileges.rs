//! What each server granted herald on the current connection (XEP-0356), keyed by server domain.
//!
//! Privileges belong to a connection: a server advertises them right after `<handshake/>` and
//! ejabberd revokes them all when any connection of the component closes (`reference/servers.md`
//! §5). So the table is cleared on every disconnect and refilled from the next advertisements;
//! nothing here is persisted.
//!
//! The namespace the server advertised (`:1` or `:2`) is kept with its permissions, because a
//! privileged stanza in the other namespace is refused.

use std::collections::HashMap;

use crate::xep::privilege::Advertisement;

/// Per-server-domain privileges of the current connection.
#[derive(Debug, Default)]
pub struct Privileges {
    by_domain: HashMap<String, Advertisement>,
}

impl Privileges {
    /// Records a server's advertisement, replacing its previous one, which is returned.
    pub fn update(&mut self, adv: Advertisement) -> Option<Advertisement> {
        self.by_domain.insert(adv.server.clone(), adv)
    }

    /// The advertisement of `domain`, if it sent one on this connection.
    pub fn get(&self, domain: &str) -> Option<&Advertisement> {
        self.by_domain.get(domain)
    }

    /// Whether `domain` forwards its users' presence to herald (`managed_entity` or `roster`).
    pub fn has_presence(&self, domain: &str) -> bool {
        self.get(domain).is_some_and(Advertisement::has_presence)
    }

    /// Forgets everything: called on disconnect, because privileges are per connection.
    pub fn clear(&mut self) {
        self.by_domain.clear();
    }
}

/// Operator-facing text for the ERROR log when `server_domain` did not grant herald presence:
/// what is missing, and the configuration to add on Prosody and on ejabberd.
pub fn missing_presence_help(server_domain: &str, component_jid: &str) -> String {
    format!(
        "the server {server_domain} did not grant {component_jid} the XEP-0356 presence permission, \
so herald cannot see its users' presence and emits no presence events for it. \
Grant presence = managed_entity, restart or reload the server, and let herald reconnect \
(permissions are advertised only when the component connects).

Prosody (mod_privilege from prosody-modules): enable the module globally AND in the component's \
section, and list the component under the VirtualHost:

    modules_enabled = {{
        -- ...
        \"privilege\";
    }}

    VirtualHost \"{server_domain}\"
        privileged_entities = {{
            [\"{component_jid}\"] = {{ presence = \"managed_entity\" }};
        }}

    Component \"{component_jid}\"
        component_secret = \"...\"
        modules_enabled = {{ \"privilege\" }}

ejabberd (mod_privilege; each permission takes an access rule, matched against the component's JID):

    acl:
      herald_component:
        server: {component_jid}
    access_rules:
      herald_privileged:
        allow: herald_component
    modules:
      mod_privilege:
        presence:
          managed_entity: herald_privileged
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xep::privilege::{MessagePerm, PresencePerm, PrivilegeNs, RosterPerm};

    fn adv(server: &str, ns: PrivilegeNs, presence: PresencePerm) -> Advertisement {
        Advertisement {
            ns,
            server: server.into(),
            presence,
            roster: RosterPerm::None,
            message: MessagePerm::None,
            iq: vec![],
            ignored: vec![],
        }
    }

    #[test]
    fn kept_per_domain() {
        let mut p = Privileges::default();
        assert!(!p.has_presence("a.org"));
        assert!(p
            .update(adv("a.org", PrivilegeNs::V2, PresencePerm::ManagedEntity))
            .is_none());
        assert!(p
            .update(adv("b.org", PrivilegeNs::V1, PresencePerm::None))
            .is_none());
        assert!(p.has_presence("a.org"));
        assert!(!p.has_presence("b.org"));
        assert!(!p.has_presence("c.org"));
        assert_eq!(p.get("a.org").map(|a| a.ns), Some(PrivilegeNs::V2));
        assert_eq!(p.get("b.org").map(|a| a.ns), Some(PrivilegeNs::V1));
    }

    #[test]
    fn update_replaces_and_returns_previous() {
        let mut p = Privileges::default();
        p.update(adv("a.org", PrivilegeNs::V1, PresencePerm::None));
        let previous = p.update(adv("a.org", PrivilegeNs::V2, PresencePerm::Roster));
        assert_eq!(previous.map(|a| a.presence), Some(PresencePerm::None));
        assert!(p.has_presence("a.org"));
    }

    #[test]
    fn clear_forgets_everything() {
        let mut p = Privileges::default();
        p.update(adv("a.org", PrivilegeNs::V2, PresencePerm::ManagedEntity));
        p.clear();
        assert!(!p.has_presence("a.org"));
        assert_eq!(p.get("a.org"), None);
    }

    #[test]
    fn help_names_the_configuration_to_add() {
        let help = missing_presence_help("example.org", "herald.example.org");
        for needle in [
            "example.org",
            "herald.example.org",
            "privileged_entities",
            "[\"herald.example.org\"] = { presence = \"managed_entity\" }",
            "VirtualHost \"example.org\"",
            "Component \"herald.example.org\"",
            "\"privilege\"",
            "mod_privilege",
            "managed_entity: herald_privileged",
            "server: herald.example.org",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
        }
    }
}
