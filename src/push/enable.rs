//! XEP-0357 `<enable/>` and `<disable/>` addressed to herald (IQ set), with the Tigase filters
//! Siskin and Snikket send inside `<enable/>`:
//!
//! ```xml
//! <enable xmlns='urn:xmpp:push:0' jid='push.example.net' node='yxs32uqsflafdk3iuqo'>
//!   <x xmlns='jabber:x:data' type='submit'>…publish-options, e.g. the secret…</x>
//!   <groupchat xmlns='tigase:push:filter:groupchat:0'>
//!     <room jid='dev@muc.example.org' allow='mentioned' nick='alice'/>
//!   </groupchat>
//!   <muted xmlns='tigase:push:filter:muted:0'><item jid='noisy@muc.example.org'/></muted>
//! </enable>
//! ```
//!
//! The publish-options form is stored as it came (FORM_TYPE included) and sent back with each
//! push. xmpp-parsers' `push::Enable` refuses unknown children (the filters), so the element is
//! read here. The answer (an empty result) goes out only after the change is on disk.

use std::sync::Arc;

use minidom::Element;
use tracing::{info, warn};

use super::policy::{self, Refusal, MAX_OPTIONS_BYTES};
use super::{now_ms, Filter, Push, PushError, Registration, RoomMode, RoomRule};
use crate::config::PushSettings;
use crate::xmpp::iq_handlers::{IqFuture, IqKind, IqRequest};
use crate::xmpp::stanza::{ErrorType, StanzaError};

pub const NS_PUSH: &str = "urn:xmpp:push:0";
pub const NS_DATA: &str = "jabber:x:data";
pub const NS_FILTER_GROUPCHAT: &str = "tigase:push:filter:groupchat:0";
pub const NS_FILTER_MUTED: &str = "tigase:push:filter:muted:0";

/// A parsed `<enable/>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Enable {
    pub jid: String,
    pub node: String,
    /// The publish-options form, serialised as it came.
    pub options: Option<String>,
    pub filter: Option<Filter>,
}

impl std::fmt::Debug for Enable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enable")
            .field("jid", &self.jid)
            .field("node", &self.node)
            .field("options", &self.options.as_ref().map(|_| "<redacted>"))
            .field("filter", &self.filter)
            .finish()
    }
}

/// Reads `<enable/>` for `user`.
pub fn parse_enable(el: &Element, user: &str, s: &PushSettings) -> Result<Enable, Refusal> {
    let jid = policy::app_server("jid", el.attr("jid").unwrap_or_default(), user)?;
    let node = policy::node("node", el.attr("node").unwrap_or_default())?;
    let mut options = None;
    let mut filter: Option<Filter> = None;
    for child in el.children() {
        match (child.ns().as_str(), child.name()) {
            (NS_DATA, "x") => {
                let xml = String::from(child);
                if xml.len() > MAX_OPTIONS_BYTES {
                    return Err(Refusal::field(
                        "publish-options",
                        format!("the form is larger than {MAX_OPTIONS_BYTES} bytes"),
                    ));
                }
                options = Some(xml);
            }
            (NS_FILTER_GROUPCHAT, "groupchat") => {
                let f = filter.get_or_insert_with(Filter::default);
                for room in child.children().filter(|c| c.name() == "room") {
                    let jid =
                        policy::room("groupchat room", room.attr("jid").unwrap_or_default(), s)?;
                    let allow = room.attr("allow").unwrap_or("always");
                    let mode = RoomMode::parse(allow).ok_or_else(|| {
                        Refusal::field(
                            "groupchat room allow",
                            format!("{allow:?} is not always, mentioned or never"),
                        )
                    })?;
                    let nick = match room.attr("nick") {
                        Some(n) => policy::nick("groupchat room nick", n, &jid)?,
                        None => String::new(),
                    };
                    f.rooms.retain(|r| r.room != jid);
                    f.rooms.push(RoomRule {
                        room: jid,
                        nick,
                        mode,
                    });
                }
            }
            (NS_FILTER_MUTED, "muted") => {
                let f = filter.get_or_insert_with(Filter::default);
                for item in child.children().filter(|c| c.name() == "item") {
                    let raw = item.attr("jid").unwrap_or_default();
                    let jid = xmpp_parsers::jid::BareJid::new(raw).map_err(|e| {
                        Refusal::field("muted item", format!("{raw:?} is not a valid JID: {e}"))
                    })?;
                    let jid = jid.to_string();
                    if !f.muted.contains(&jid) {
                        f.muted.push(jid);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Enable {
        jid,
        node,
        options,
        filter,
    })
}

/// Reads `<disable/>`: the app server and the optional node.
pub fn parse_disable(el: &Element, user: &str) -> Result<(String, Option<String>), Refusal> {
    let jid = policy::app_server("jid", el.attr("jid").unwrap_or_default(), user)?;
    let node = match el.attr("node") {
        Some(n) => Some(policy::node("node", n)?),
        None => None,
    };
    Ok((jid, node))
}

/// The stanza error for a refusal or a store failure.
pub fn stanza_error(e: &PushError) -> StanzaError {
    match e {
        PushError::Refused(Refusal::Forbidden(t)) => {
            StanzaError::new(ErrorType::Auth, "forbidden").with_text(t.as_str())
        }
        PushError::Refused(r @ Refusal::BadField { .. }) => StanzaError::bad_request(&r.text()),
        PushError::Refused(Refusal::Limit(t)) => {
            StanzaError::new(ErrorType::Cancel, "not-allowed").with_text(t.as_str())
        }
        PushError::Store(_) => StanzaError::new(ErrorType::Wait, "internal-server-error")
            .with_text("herald could not store the change; nothing was changed"),
    }
}

/// Answers `<enable/>` and `<disable/>` (register it for [`NS_PUSH`]).
pub fn handler(push: Push) -> impl Fn(IqRequest) -> IqFuture + Send + Sync + 'static {
    let push = Arc::new(push);
    move |request: IqRequest| -> IqFuture {
        let push = push.clone();
        Box::pin(async move {
            let result = handle(&push, &request).await;
            result.map(|()| None).map_err(|e| {
                if let PushError::Store(err) = &e {
                    warn!(from = %request.from, error = %err, "cannot store a push change");
                }
                stanza_error(&e)
            })
        })
    }
}

async fn handle(push: &Push, request: &IqRequest) -> Result<(), PushError> {
    if request.kind != IqKind::Set {
        return Err(Refusal::field("iq", "enable and disable are IQ sets").into());
    }
    let user = push.user_of(&request.from)?;
    let el = &request.payload;
    match el.name() {
        "enable" => {
            let e = parse_enable(el, &user, push.settings())?;
            let mut reg = Registration::new(&e.jid, &e.node, now_ms());
            reg.options = e.options;
            reg.filter = e.filter;
            let out = push.register(&user, reg).await?;
            info!(user = %user, app = %e.jid, outcome = ?out, "push enabled");
            Ok(())
        }
        "disable" => {
            let (jid, node) = parse_disable(el, &user)?;
            let gone = push.disable(&user, &jid, node.as_deref()).await?;
            info!(user = %user, app = %jid, removed = gone.len(), "push disabled");
            Ok(())
        }
        other => Err(Refusal::field(other, "expected enable or disable").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MucServices;

    fn settings() -> PushSettings {
        PushSettings::for_tests(MucServices::UnderDomains)
    }

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    /// XEP-0357 Example 9 (with the typo in its secret's `<value>` fixed).
    const XEP_ENABLE: &str = "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'>\
        <x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable>";

    #[test]
    fn the_xep_example_keeps_its_publish_options_as_they_came() {
        let e = parse_enable(&el(XEP_ENABLE), "juliet@example.org", &settings()).unwrap();
        assert_eq!(e.jid, "push-5.client.example");
        assert_eq!(e.node, "yxs32uqsflafdk3iuqo");
        let options = el(e.options.as_deref().unwrap());
        assert_eq!(options.attr("type"), Some("submit"));
        let values: Vec<String> = options
            .children()
            .map(|f| f.children().next().unwrap().text())
            .collect();
        assert_eq!(
            values,
            [
                "http://jabber.org/protocol/pubsub#publish-options",
                "eruio234vzxc2kla-91"
            ]
        );
        assert!(e.filter.is_none());
        assert!(
            !format!("{e:?}").contains("eruio234"),
            "Debug hides the secret"
        );
    }

    #[test]
    fn tigase_filters_become_the_registrations_rules() {
        let xml = "<enable xmlns='urn:xmpp:push:0' jid='push.example.net' node='n1'>\
            <groupchat xmlns='tigase:push:filter:groupchat:0'>\
              <room jid='dev@muc.example.org' allow='mentioned' nick='alice'/>\
              <room jid='ops@muc.example.org' allow='always' nick='al'/>\
              <room jid='off@muc.example.org' allow='never'/>\
            </groupchat>\
            <muted xmlns='tigase:push:filter:muted:0'><item jid='noisy@muc.example.org'/></muted>\
            </enable>";
        let e = parse_enable(&el(xml), "alice@example.org", &settings()).unwrap();
        let f = e.filter.unwrap();
        let rooms: Vec<_> = f
            .rooms
            .iter()
            .map(|r| (r.room.as_str(), r.nick.as_str(), r.mode))
            .collect();
        assert_eq!(
            rooms,
            [
                ("dev@muc.example.org", "alice", RoomMode::Mentioned),
                ("ops@muc.example.org", "al", RoomMode::Always),
                ("off@muc.example.org", "", RoomMode::Never),
            ]
        );
        assert_eq!(f.muted, ["noisy@muc.example.org"]);
    }

    #[test]
    fn bad_enables_are_refused_naming_what_is_wrong() {
        let s = settings();
        let refused = |xml: &str| {
            parse_enable(&el(xml), "alice@example.org", &s)
                .unwrap_err()
                .text()
        };
        assert!(refused("<enable xmlns='urn:xmpp:push:0' node='n'/>").contains("'jid'"));
        assert!(refused("<enable xmlns='urn:xmpp:push:0' jid='p.example'/>").contains("'node'"));
        let long = format!(
            "<enable xmlns='urn:xmpp:push:0' jid='p.example' node='{}'/>",
            "n".repeat(1025)
        );
        assert!(refused(&long).contains("1024"));
        assert!(refused("<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'><groupchat xmlns='tigase:push:filter:groupchat:0'><room jid='r@muc.example.org' allow='sometimes'/></groupchat></enable>").contains("sometimes"));
        assert!(refused("<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'><groupchat xmlns='tigase:push:filter:groupchat:0'><room jid='r@conference.evil.net'/></groupchat></enable>").contains("evil.net"));
    }

    #[test]
    fn disable_with_and_without_node() {
        let d = |xml: &str| parse_disable(&el(xml), "alice@example.org");
        assert_eq!(
            d("<disable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'/>").unwrap(),
            ("push-5.client.example".to_string(), Some("yxs32uqsflafdk3iuqo".to_string()))
        );
        assert_eq!(
            d("<disable xmlns='urn:xmpp:push:0' jid='push-5.client.example'/>").unwrap(),
            ("push-5.client.example".to_string(), None)
        );
        assert!(d("<disable xmlns='urn:xmpp:push:0'/>").is_err());
    }
}
