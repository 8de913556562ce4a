//! The parts the group-chat push suite (`prosody_group_push.rs`) is built from, proven against a
//! real Prosody without herald: a component connected as `herald.localhost` publishes a push to
//! Prosody's pubsub service and the subscriber sees the item; the test's own app servers answer
//! results, errors or nothing and send a remote disable; c2s clients create, join, talk in, kick
//! from and leave rooms; and a directed-presence join leaves an occupant the server counts offline.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use std::time::Duration;

use support::adhoc::iq;
use support::app_server::{Answer, AppServer, RawComponent};
use support::client::{to_xml, C2s};
use support::groupchat::{
    create_room, join, kick, leave, next_groupchat, occupant_of, say, say_mentioning,
    send_encrypted, set_subject, status_codes, wait_departure, wait_occupant, RoomConfig,
    NS_MUC_USER, NS_OMEMO, NS_REFERENCE,
};
use support::herald::stop_servers;
use support::pubsub::{
    group_push_prosody, push_publish_payload, Subscriber, APPS, APP_SECRET, BROKEN, NS_PUBSUB,
    PUBSUB, PUSH_SUMMARY,
};

const HERALD: &str = "herald.localhost";
const ROOM: &str = "dev@muc.localhost";
const T: Duration = Duration::from_secs(10);

fn error_of(answer: &minidom::Element) -> (String, String) {
    assert_eq!(answer.attr("type"), Some("error"), "{}", to_xml(answer));
    let e = answer
        .children()
        .find(|c| c.name() == "error")
        .expect("<error/>");
    let cond = e
        .children()
        .find(|c| c.name() != "text" && c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (e.attr("type").unwrap_or_default().to_owned(), cond)
}

#[tokio::test]
async fn a_push_published_by_the_component_reaches_the_pubsub_subscriber() {
    let p = group_push_prosody().await;
    let mut sub = Subscriber::login(&p).await;
    sub.open_node("phone-1").await;
    let mut herald = RawComponent::connect(&p.component_addr(), HERALD, &p.component_secret).await;

    // A publish as XEP-0357 servers send it, with the secret in the publish-options.
    let fields = [
        ("message-count", "1"),
        ("last-message-body", "New Message!"),
    ];
    let payload = push_publish_payload("phone-1", &fields, Some("s3cr3t"));
    let a = herald.request("set", PUBSUB, &payload, T).await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
    let item_id = a
        .get_child("pubsub", NS_PUBSUB)
        .and_then(|p| p.get_child("publish", NS_PUBSUB))
        .and_then(|p| p.get_child("item", NS_PUBSUB))
        .and_then(|i| i.attr("id"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no item id in {}", to_xml(&a)));

    let n = sub
        .expect_notification("phone-1", T, "the component's publish")
        .await;
    assert_eq!(n.item_id, item_id);
    assert_eq!(n.publisher.as_deref(), Some(HERALD));
    assert_eq!(n.summary.form_type(), Some(PUSH_SUMMARY));
    assert_eq!(n.summary.count(), 1);
    assert_eq!(n.summary.body(), Some("New Message!"));
    assert_eq!(n.summary.sender(), None);

    // A c2s user may publish to the open node as well; the node keeps both items.
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    let payload = push_publish_payload("phone-1", &[("message-count", "2")], None);
    let a = iq(&mut bob, "set", PUBSUB, &payload).await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
    let n = sub.expect_notification("phone-1", T, "bob's publish").await;
    assert_eq!(n.publisher.as_deref(), Some("bob@localhost"));
    assert_eq!(n.summary.count(), 2);
    assert_eq!(sub.items("phone-1").await.len(), 2);

    // A node nobody opened is not created by a publish: without an affiliation the publish is
    // refused before the node is looked up.
    let payload = push_publish_payload("nobody", &fields, None);
    let a = herald.request("set", PUBSUB, &payload, T).await;
    assert_eq!(error_of(&a), ("auth".into(), "forbidden".into()));

    herald.close().await;
    bob.close().await;
    sub.close().await;
    stop_servers(p).await;
}

#[tokio::test]
async fn the_test_app_servers_answer_as_configured_count_and_disable_remotely() {
    let p = group_push_prosody().await;
    let mut apps = AppServer::connect(&p.component_addr(), APPS, APP_SECRET, Answer::Result).await;
    let mut broken = AppServer::connect(
        &p.component_addr(),
        BROKEN,
        APP_SECRET,
        Answer::error("cancel", "item-not-found"),
    )
    .await;
    let mut herald = RawComponent::connect(&p.component_addr(), HERALD, &p.component_secret).await;
    let fields = [
        ("message-count", "3"),
        ("last-message-sender", "dev@muc.localhost/bob"),
    ];

    let payload = push_publish_payload("tablet", &fields, Some("k3y"));
    let a = herald.request("set", APPS, &payload, T).await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
    let got = apps.expect_publish(T, "the publish to apps").await;
    assert_eq!((got.from.as_str(), got.node.as_str()), (HERALD, "tablet"));
    assert_eq!(got.secret(), Some("k3y"));
    assert_eq!(got.summary.form_type(), Some(PUSH_SUMMARY));
    assert_eq!(got.summary.count(), 3);
    assert_eq!(got.summary.sender(), Some("dev@muc.localhost/bob"));
    assert_eq!(got.answered, Answer::Result);
    assert_eq!(apps.count(), 1);

    let a = herald.request("set", BROKEN, &payload, T).await;
    assert_eq!(error_of(&a), ("cancel".into(), "item-not-found".into()));
    broken.set_answer(Answer::error("wait", "resource-constraint"));
    let a = herald.request("set", BROKEN, &payload, T).await;
    assert_eq!(error_of(&a), ("wait".into(), "resource-constraint".into()));
    assert_eq!(
        broken.expect_publish(T, "1st").await.answered,
        Answer::error("cancel", "item-not-found")
    );
    assert_eq!(broken.expect_publish(T, "2nd").await.secret(), Some("k3y"));
    assert_eq!(broken.count(), 2);

    // An answer set for one node wins over the default.
    broken.set_answer_for("other", Answer::Result);
    let other = push_publish_payload("other", &fields, None);
    let a = herald.request("set", BROKEN, &other, T).await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
    assert_eq!(
        broken.expect_publish(T, "other").await.answered,
        Answer::Result
    );

    // Silent: the publish arrives, no answer is sent.
    broken.set_answer(Answer::Silent);
    herald
        .send_xml(&format!(
            "<iq type='set' from='{HERALD}' to='{BROKEN}' id='quiet'>{payload}</iq>"
        ))
        .await;
    assert_eq!(
        broken.expect_publish(T, "silent").await.answered,
        Answer::Silent
    );
    let answer = herald
        .next_matching(Duration::from_millis(300), |el| {
            el.attr("id") == Some("quiet")
        })
        .await;
    assert!(answer.is_none(), "{answer:?}");

    // Anything else than a publish is refused.
    let a = herald
        .request(
            "get",
            APPS,
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
            T,
        )
        .await;
    assert_eq!(error_of(&a).1, "service-unavailable");

    // Remote disable reaches the component as XEP-0357 §8 shows it.
    broken
        .remote_disable(HERALD, "tablet", "alice@localhost")
        .await;
    let m = herald
        .next_matching(T, |el| {
            el.name() == "message" && el.attr("from") == Some(BROKEN)
        })
        .await
        .expect("the remote-disable message");
    let ps = m.get_child("pubsub", NS_PUBSUB).expect("<pubsub/>");
    assert_eq!(ps.attr("node"), Some("tablet"));
    let aff = ps
        .get_child("affiliation", NS_PUBSUB)
        .expect("<affiliation/>");
    assert_eq!(
        (aff.attr("jid"), aff.attr("affiliation")),
        (Some("alice@localhost"), Some("none"))
    );

    // A ping from an app server is answered to it (the stand-in answers by hand).
    let ping = tokio::spawn(async move {
        let pong = broken.ping(HERALD, T).await;
        (broken, pong)
    });
    let req = herald
        .next_matching(T, |el| el.name() == "iq" && el.attr("type") == Some("get"))
        .await
        .expect("the ping");
    let id = req.attr("id").unwrap().to_owned();
    herald
        .send_xml(&format!(
            "<iq type='result' from='{HERALD}' to='{BROKEN}' id='{id}'/>"
        ))
        .await;
    let (broken, pong) = ping.await.unwrap();
    assert_eq!(pong.attr("type"), Some("result"));

    herald.close().await;
    apps.close().await;
    broken.close().await;
    stop_servers(p).await;
}

#[tokio::test]
async fn clients_and_a_component_create_join_talk_kick_and_leave() {
    let p = group_push_prosody().await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    bob.send_presence(None, None, 0).await;
    alice.send_presence(None, None, 0).await;

    let created = create_room(&mut bob, ROOM, "bob", RoomConfig::default()).await;
    assert!(created.occupants.is_empty());
    let joined = join(&mut alice, ROOM, "alice").await;
    assert!(!joined.created);
    assert_eq!(joined.nicks(), ["bob"]);
    assert_eq!(joined.occupants[0].role, "moderator");
    let seen = wait_occupant(&mut bob, ROOM, "alice", T)
        .await
        .expect("bob sees alice");
    assert_eq!(
        seen.jid.as_deref(),
        Some("alice@localhost/phone"),
        "the owner sees real JIDs"
    );

    // A component joins as herald does, without history.
    let mut comp = RawComponent::connect(&p.component_addr(), HERALD, &p.component_secret).await;
    comp.send_xml(&format!(
        "<presence from='{HERALD}' to='{ROOM}/herald'><x xmlns='http://jabber.org/protocol/muc'>\
         <history maxstanzas='0'/></x></presence>"
    ))
    .await;
    let me = comp
        .next_matching(T, |el| {
            el.name() == "presence" && el.attr("from") == Some("dev@muc.localhost/herald")
        })
        .await
        .expect("the component's self-presence");
    assert!(status_codes(&me).contains(&110), "{}", to_xml(&me));
    assert_eq!(occupant_of(&me).jid.as_deref(), Some(HERALD));
    wait_occupant(&mut bob, ROOM, "herald", T)
        .await
        .expect("bob sees herald");

    // Body, mention, subject, encrypted: the component gets each from the room.
    let from_bob = |el: &minidom::Element| el.attr("from") == Some("dev@muc.localhost/bob");
    say(&mut bob, ROOM, "hello").await;
    say_mentioning(&mut bob, ROOM, "look", "xmpp:alice@localhost").await;
    set_subject(&mut bob, ROOM, "release day").await;
    send_encrypted(&mut bob, ROOM).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = comp
            .next_matching(T, |el| el.name() == "message" && from_bob(el))
            .await
            .expect("a groupchat message from bob");
        assert_eq!(m.attr("type"), Some("groupchat"));
        got.push(m);
    }
    let text = |m: &minidom::Element, name: &str| {
        m.children().find(|c| c.name() == name).map(|c| c.text())
    };
    assert_eq!(text(&got[0], "body").as_deref(), Some("hello"));
    let r = got[1]
        .get_child("reference", NS_REFERENCE)
        .expect("reference kept");
    assert_eq!(
        (r.attr("type"), r.attr("uri")),
        (Some("mention"), Some("xmpp:alice@localhost"))
    );
    assert_eq!(
        (text(&got[2], "subject").as_deref(), text(&got[2], "body")),
        (Some("release day"), None)
    );
    assert!(got[3].has_child("encrypted", NS_OMEMO) && text(&got[3], "body").is_none());
    let m = next_groupchat(&mut alice, ROOM, T, |el| {
        el.children().any(|c| c.name() == "body")
    })
    .await
    .expect("alice gets bob's message");
    assert_eq!(m.attr("from"), Some("dev@muc.localhost/bob"));

    // bob kicks the component: it gets 307 + 110, the occupants see it go.
    kick(&mut bob, ROOM, "herald", "testing").await;
    let out = comp
        .next_matching(T, |el| {
            el.name() == "presence" && el.attr("type") == Some("unavailable")
        })
        .await
        .expect("the component is told it was kicked");
    let codes = status_codes(&out);
    assert!(
        codes.contains(&307) && codes.contains(&110),
        "{}",
        to_xml(&out)
    );
    let gone = wait_departure(&mut alice, ROOM, "herald", T)
        .await
        .expect("alice sees it go");
    assert!(status_codes(&gone).contains(&307));
    assert!(gone.get_child("x", NS_MUC_USER).is_some());

    // Leaving; the persistent room outlives its last occupant.
    leave(&mut alice, ROOM, "alice").await;
    wait_departure(&mut bob, ROOM, "alice", T)
        .await
        .expect("bob sees alice leave");
    leave(&mut bob, ROOM, "bob").await;
    let again = join(&mut alice, ROOM, "alice").await;
    assert!(
        !again.created && again.occupants.is_empty(),
        "{} {:?}",
        to_xml(&again.self_presence),
        again.occupants
    );

    // It outlives a server restart too, and the component connects again on the same port.
    comp.close().await;
    alice.close().await;
    bob.close().await;
    let mut p = p;
    p.restart().await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    let after = join(&mut bob, ROOM, "bob").await;
    assert!(!after.created && after.occupants.is_empty());
    let comp = RawComponent::connect(&p.component_addr(), HERALD, &p.component_secret).await;
    comp.close().await;
    bob.close().await;
    stop_servers(p).await;
}

#[tokio::test]
async fn a_room_occupant_that_never_sent_a_broadcast_presence_is_offline_for_the_component() {
    let p = group_push_prosody().await;
    let mut comp = RawComponent::connect(&p.component_addr(), HERALD, &p.component_secret).await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    bob.send_presence(None, None, 0).await;
    create_room(&mut bob, ROOM, "bob", RoomConfig::default()).await;
    let is_presence_of = |user: &'static str| {
        move |el: &minidom::Element| {
            el.name() == "presence"
                && el
                    .attr("from")
                    .is_some_and(|f| f.starts_with(&format!("{user}@localhost")))
        }
    };
    comp.next_matching(T, is_presence_of("bob"))
        .await
        .expect("bob's forwarded presence");

    // alice joins from a session that sent no broadcast presence: an occupant...
    let mut ghost = C2s::login(&p.c2s_addr(), "alice@localhost/gone", "pa").await;
    join(&mut ghost, ROOM, "alice").await;
    wait_occupant(&mut bob, ROOM, "alice", T)
        .await
        .expect("the room lists alice");
    // ...whose presence the component never gets (carol's broadcast presence, sent later, comes
    // first and alone).
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/x", "pc").await;
    carol.send_presence(None, None, 0).await;
    comp.next_matching(T, is_presence_of("carol"))
        .await
        .expect("carol's forwarded presence");
    let alice_seen: Vec<String> = comp
        .drain()
        .iter()
        .filter(|el| is_presence_of("alice")(el))
        .map(to_xml)
        .collect();
    assert!(alice_seen.is_empty(), "{alice_seen:?}");

    // A TCP drop does not leave a ghost on Prosody: the room is told at once.
    ghost.drop_tcp();
    let gone = wait_departure(&mut bob, ROOM, "alice", T)
        .await
        .expect("the room drops alice");
    assert_eq!(gone.attr("type"), Some("unavailable"));

    comp.close().await;
    carol.close().await;
    bob.close().await;
    stop_servers(p).await;
}
