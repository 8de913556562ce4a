use std::sync::Arc;

use super::*;
use crate::config::MucServices;
use crate::muc::{Occupants, RoomMessage};
use crate::push::decide::counted;

const OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>KK4+H5WMfpRG/2zCbuKq6wpX</value></field></x>";

fn pending(count: u64, sender: Option<&str>, body: Option<&str>) -> PendingPush {
    PendingPush {
        user: "alice@localhost".into(),
        reg_key: "push.localhost<eKxTS5n3bOe0".into(),
        app: "push.localhost".into(),
        count,
        sender: sender.map(str::to_owned),
        body: body.map(str::to_owned),
        at_ms: 1,
        first_ms: 1,
    }
}

/// peers.md §2.2, on one line, with `from` = herald and no `id` (the request adds it).
fn expected(count: &str, sender: &str, body: &str, options: bool) -> Element {
    let options = if options {
        format!("<publish-options>{OPTIONS}</publish-options>")
    } else {
        String::new()
    };
    format!(
        "<iq xmlns='jabber:component:accept' type='set' from='herald.localhost' to='push.localhost'>\
<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='eKxTS5n3bOe0'><item>\
<notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>\
<field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>\
<field type='text-single' var='message-count'><value>{count}</value></field>\
<field type='text-single' var='pending-subscription-count'/>\
<field type='jid-single' var='last-message-sender'{sender}\
<field type='text-single' var='last-message-body'{body}\
</x></notification></item></publish>{options}</pubsub></iq>"
    )
    .parse()
    .unwrap()
}

fn iq(p: &PendingPush, options: Option<&str>) -> Element {
    let (iq, ok) = publish_iq(
        "herald.localhost",
        "push.localhost",
        "eKxTS5n3bOe0",
        p,
        options,
    );
    assert!(ok);
    iq
}

#[test]
fn the_placeholder_push_with_options_is_prosodys_layout() {
    let got = iq(&pending(1, None, Some("New Message!")), Some(OPTIONS));
    let want = expected("1", "/>", "><value>New Message!</value></field>", true);
    assert_eq!(got, want, "{}", String::from(&got));
}

#[test]
fn sender_and_body_and_no_options() {
    let p = pending(3, Some("room@muc.localhost/bob"), Some("hi <there> & all"));
    let got = iq(&p, None);
    let want = expected(
        "3",
        "><value>room@muc.localhost/bob</value></field>",
        "><value>hi &lt;there&gt; &amp; all</value></field>",
        false,
    );
    assert_eq!(got, want, "{}", String::from(&got));
    // No body at all: the field is there, empty.
    let got = iq(&pending(1, None, None), None);
    assert_eq!(got, expected("1", "/>", "/>", false));
}

#[test]
fn options_that_no_longer_parse_are_left_out_and_reported() {
    let (iq, ok) = publish_iq("h", "a", "n", &pending(1, None, None), Some("<x"));
    assert!(!ok);
    let pubsub = iq.get_child("pubsub", NS_PUBSUB).unwrap();
    assert!(pubsub.get_child("publish-options", NS_PUBSUB).is_none());
}

fn message(inner: &str) -> RoomMessage {
    RoomMessage {
        room: "room@muc.localhost".into(),
        own_nick: "herald".into(),
        element: format!("<message xmlns='jabber:component:accept' from='room@muc.localhost/bob' to='herald.localhost' type='groupchat'>{inner}</message>").parse().unwrap(),
        occupants: Arc::new(Occupants::default()),
        watchers: Arc::new([]),
        at_ms: 1,
    }
}

#[test]
fn the_settings_decide_what_a_push_says() {
    let mut s = PushSettings::for_tests(MucServices::Any);
    let plain = message("<body>secret plans</body>");
    let enc = message(
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>AA==</payload></encrypted>",
    );
    let (c, e) = (counted(&plain).unwrap(), counted(&enc).unwrap());
    let room = "room@muc.localhost";
    assert_eq!(content(&c, room, &s), (None, Some("New Message!".into())));
    s.with_body = true;
    s.with_sender = true;
    assert_eq!(
        content(&c, room, &s),
        (
            Some("room@muc.localhost/bob".into()),
            Some("secret plans".into())
        )
    );
    // An encrypted message has no body to show: the placeholder.
    assert_eq!(content(&e, room, &s).1, Some("New Message!".into()));
    s.with_body = false;
    s.important_body = String::new();
    assert_eq!(content(&c, room, &s).1, None);
}
