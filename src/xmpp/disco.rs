//! Answers the IQ requests addressed to herald itself: service discovery, XEP-0199 ping, and a
//! `service-unavailable` error for everything else. Every get/set IQ gets exactly one answer.

use minidom::Element;

use super::stanza::{iq_error, iq_result, NS_DISCO_INFO, NS_PING};

/// Features herald advertises in disco#info.
pub const FEATURES: &[&str] = &[NS_DISCO_INFO, NS_PING];

/// The one answer to a get/set IQ addressed to herald (`me` = the component's JID).
pub fn answer(iq: &Element, me: &str) -> Element {
    let is_get = iq.attr("type") == Some("get");
    let payload = iq.children().next();
    match payload.map(|p| (p.name(), p.ns())) {
        Some(("query", ns)) if ns == NS_DISCO_INFO && is_get => {
            if payload.and_then(|p| p.attr("node")).is_some() {
                return iq_error(iq, me, "cancel", "item-not-found");
            }
            iq_result(iq, me, Some(info()))
        }
        Some(("ping", ns)) if ns == NS_PING && is_get => iq_result(iq, me, None),
        _ => iq_error(iq, me, "cancel", "service-unavailable"),
    }
}

fn info() -> Element {
    let mut q = Element::builder("query", NS_DISCO_INFO)
        .append(
            Element::builder("identity", NS_DISCO_INFO)
                .attr(crate::n!("category"), "component")
                .attr(crate::n!("type"), "generic")
                .attr(crate::n!("name"), "herald")
                .build(),
        )
        .build();
    for f in FEATURES {
        q.append_child(
            Element::builder("feature", NS_DISCO_INFO)
                .attr(crate::n!("var"), *f)
                .build(),
        );
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::error_condition;

    fn iq(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn disco_info_lists_identity_and_features() {
        let a = answer(
            &iq("<iq xmlns='jabber:component:accept' type='get' id='d1' from='alice@localhost/x' to='herald.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            "herald.localhost",
        );
        assert_eq!(a.attr("type"), Some("result"));
        assert_eq!(a.attr("id"), Some("d1"));
        assert_eq!(a.attr("to"), Some("alice@localhost/x"));
        assert_eq!(a.attr("from"), Some("herald.localhost"));
        let q = a.get_child("query", NS_DISCO_INFO).unwrap();
        let vars: Vec<_> = q.children().filter_map(|c| c.attr("var")).collect();
        assert!(vars.contains(&NS_PING));
        assert!(q.get_child("identity", NS_DISCO_INFO).is_some());
    }

    #[test]
    fn ping_gets_an_empty_result() {
        let a = answer(
            &iq("<iq xmlns='jabber:component:accept' type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"),
            "herald.localhost",
        );
        assert_eq!(a.attr("type"), Some("result"));
        assert_eq!(a.children().count(), 0);
    }

    #[test]
    fn unknown_get_and_set_are_service_unavailable() {
        for xml in [
            "<iq xmlns='jabber:component:accept' type='get' id='u1' from='a@b/c'><query xmlns='jabber:iq:version'/></iq>",
            "<iq xmlns='jabber:component:accept' type='set' id='u2' from='a@b/c'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:component:accept' type='get' id='u3' from='a@b/c'/>",
        ] {
            let a = answer(&iq(xml), "herald.localhost");
            assert_eq!(a.attr("type"), Some("error"), "{xml}");
            assert_eq!(error_condition(&a), Some("service-unavailable"));
        }
    }
}
