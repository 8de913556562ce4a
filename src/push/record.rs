//! What the push owner changes in the registration store: the error counter after an attempt
//! ([`super::answer::policy`]) and the registration an app server disables remotely
//! (XEP-0357 §8).

use minidom::Element;

use super::answer::{policy, Attempt, Counter, Next};
use super::publish::NS_PUBSUB;
use super::{Push, PushError, Refusal, Registration};

/// What an attempt did to its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub next: Next,
    /// The registration, when the attempt removed it (at `push.max_errors`).
    pub removed: Option<Registration>,
}

impl Push {
    /// `user`'s registration with this [`Registration::key`], if it is still there.
    pub fn registration(
        &self,
        user: &str,
        key: &str,
    ) -> Result<Option<Registration>, crate::store::StoreError> {
        Ok(self
            .store
            .get(user)?
            .registrations
            .into_iter()
            .find(|r| r.key() == key))
    }

    /// Applies the error policy to `user`'s registration `key` after `attempt` (it had
    /// `errors_seen` errors when the push was built). Writes (and flushes) only when the
    /// counter changes.
    pub async fn record_attempt(
        &self,
        user: &str,
        key: &str,
        errors_seen: u32,
        attempt: &Attempt,
    ) -> Result<Recorded, PushError> {
        let max = self.settings.max_errors;
        let (counter, next) = policy(attempt, errors_seen, max);
        if counter == Counter::Unchanged {
            return Ok(Recorded {
                next,
                removed: None,
            });
        }
        let out = self
            .store
            .update(user, |u, _| {
                let Some(i) = u.registrations.iter().position(|r| r.key() == key) else {
                    return Ok::<_, Refusal>(Recorded {
                        next: Next::Done,
                        removed: None,
                    });
                };
                // The stored counter may have moved meanwhile (another push of the same
                // registration): decide on it.
                let (counter, next) = policy(attempt, u.registrations[i].errors, max);
                let removed = match counter {
                    Counter::Unchanged => None,
                    Counter::Set(n) => {
                        u.registrations[i].errors = n;
                        None
                    }
                    Counter::Remove => Some(u.registrations.remove(i)),
                };
                Ok(Recorded { next, removed })
            })
            .await??;
        Ok(out)
    }
}

/// A XEP-0357 §8 remote disable: `(app server, node, user)`, all as the registration stores
/// them (bare JIDs, lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDisable {
    pub app: String,
    pub node: String,
    pub user: String,
}

fn bare_lowercase(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_lowercase()
}

/// Reads `<message from='APP'><pubsub xmlns='http://jabber.org/protocol/pubsub' node='N'>
/// <affiliation jid='user@domain' affiliation='none'/></pubsub></message>`.
pub fn remote_disable(el: &Element) -> Option<RemoteDisable> {
    if el.name() != "message" || el.attr("type") == Some("error") {
        return None;
    }
    let app = bare_lowercase(el.attr("from")?);
    let pubsub = el.get_child("pubsub", NS_PUBSUB)?;
    let node = pubsub.attr("node").filter(|n| !n.is_empty())?;
    let aff = pubsub
        .children()
        .find(|c| c.is("affiliation", NS_PUBSUB) && c.attr("affiliation") == Some("none"))?;
    let user = bare_lowercase(aff.attr("jid")?);
    (!app.is_empty() && !user.is_empty()).then(|| RemoteDisable {
        app,
        node: node.to_owned(),
        user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn a_remote_disable_names_the_app_server_node_and_user() {
        let m = el("<message xmlns='jabber:component:accept' from='Push.Localhost/x' to='herald.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub' node='yxs32uqsflafdk3iuqo'><affiliation jid='Alice@localhost' affiliation='none'/></pubsub></message>");
        assert_eq!(
            remote_disable(&m),
            Some(RemoteDisable {
                app: "push.localhost".into(),
                node: "yxs32uqsflafdk3iuqo".into(),
                user: "alice@localhost".into(),
            })
        );
    }

    #[test]
    fn other_messages_are_no_remote_disable() {
        for xml in [
            "<message xmlns='jabber:component:accept' from='push.localhost'><body>hi</body></message>",
            "<message xmlns='jabber:component:accept' from='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub' node='n'><affiliation jid='a@localhost' affiliation='publisher'/></pubsub></message>",
            "<message xmlns='jabber:component:accept' from='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><affiliation jid='a@localhost' affiliation='none'/></pubsub></message>",
            "<message xmlns='jabber:component:accept' from='push.localhost' type='error'><pubsub xmlns='http://jabber.org/protocol/pubsub' node='n'><affiliation jid='a@localhost' affiliation='none'/></pubsub></message>",
            "<message xmlns='jabber:component:accept'><pubsub xmlns='http://jabber.org/protocol/pubsub' node='n'><affiliation jid='a@localhost' affiliation='none'/></pubsub></message>",
        ] {
            assert_eq!(remote_disable(&el(xml)), None, "{xml}");
        }
    }
}
