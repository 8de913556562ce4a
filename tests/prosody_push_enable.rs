//! XEP-0357 `<enable/>` and `<disable/>` sent to herald by a real c2s client through a real
//! Prosody, with the Tigase filters Siskin and Snikket send.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use std::time::Duration;

use support::adhoc::{
    column, command, error, iq, push_prosody, rows, start_herald_with_admin, wait_until_answering,
};
use support::client::{to_xml, C2s};
use support::herald::stop_servers;

const HERALD: &str = "herald.localhost";
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn enable_and_disable_with_tigase_filters() {
    let p = push_prosody().await;
    let store = tempfile::tempdir().unwrap();
    let (stop, task) = start_herald_with_admin(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    wait_until_answering(&mut alice, HERALD, T).await;

    let enable = "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'>\
        <x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='secret'><value>eruio234vzxc2kla-91</value></field></x>\
        <groupchat xmlns='tigase:push:filter:groupchat:0'><room jid='dev@muc.localhost' allow='mentioned' nick='alice'/></groupchat>\
        <muted xmlns='tigase:push:filter:muted:0'><item jid='noisy@muc.localhost'/></muted></enable>";
    let a = iq(&mut alice, "set", HERALD, enable).await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
    let second = "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='second'/>";
    assert_eq!(
        iq(&mut alice, "set", HERALD, second).await.attr("type"),
        Some("result")
    );
    let list = command(&mut alice, HERALD, "push-list", None, None, None).await;
    assert_eq!(
        column(&rows(&list, 0), "node"),
        ["yxs32uqsflafdk3iuqo", "second"]
    );
    let rooms = rows(&list, 1);
    assert_eq!(column(&rooms, "room"), ["dev@muc.localhost"]);
    assert_eq!(column(&rooms, "mode"), ["mentioned"]);
    assert!(column(&rooms, "registration")[0].contains("yxs32uqsflafdk3iuqo"));

    let bad = iq(
        &mut alice,
        "set",
        HERALD,
        "<enable xmlns='urn:xmpp:push:0' node='x'/>",
    )
    .await;
    let (_, cond, _, text) = error(&bad);
    assert_eq!(cond, "bad-request");
    assert!(text.contains("'jid'"), "{text}");

    // disable without node removes every registration of that jid.
    let d = iq(
        &mut alice,
        "set",
        HERALD,
        "<disable xmlns='urn:xmpp:push:0' jid='push-5.client.example'/>",
    )
    .await;
    assert_eq!(d.attr("type"), Some("result"));
    let list = command(&mut alice, HERALD, "push-list", None, None, None).await;
    assert!(rows(&list, 0).is_empty());

    alice.close().await;
    let _ = stop.send(());
    task.await.unwrap();
    stop_servers(p).await;
}
