//! Push registrations end to end against a real Prosody: real c2s clients discover herald's
//! ad-hoc commands, run each of them in stages and in one round trip, register, list, update
//! and unregister app servers, choose rooms, and send XEP-0357 `<enable/>`/`<disable/>`. Users
//! see only their own data, admin commands exist only for `[admin] jids`, and users of a domain
//! herald does not serve are refused. `<enable/>`/`<disable/>`: `prosody_push_enable.rs`.
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use std::time::Duration;

use support::adhoc::{
    column, command, command_nodes, error, iq, note, push_prosody, rows, start_herald_with_admin,
    submit, wait_until_answering, NS_COMMANDS,
};
use support::client::{to_xml, C2s};
use support::herald::stop_servers;

const HERALD: &str = "herald.localhost";
const T: Duration = Duration::from_secs(10);

fn sid(answer: &minidom::Element) -> String {
    support::adhoc::cmd(answer)
        .attr("sessionid")
        .unwrap()
        .to_owned()
}

fn status(answer: &minidom::Element) -> String {
    support::adhoc::cmd(answer)
        .attr("status")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn users_discover_run_and_manage_their_registrations() {
    let p = push_prosody().await;
    let store = tempfile::tempdir().unwrap();
    let (stop, task) = start_herald_with_admin(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;

    // Discovery.
    let info = wait_until_answering(&mut alice, HERALD, T).await;
    let features: Vec<&str> = info
        .children()
        .next()
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(
        features.contains(&NS_COMMANDS) && features.contains(&"urn:xmpp:push:0"),
        "{features:?}"
    );
    assert_eq!(
        command_nodes(&mut alice, HERALD).await,
        ["push-register", "push-list", "push-unregister", "push-room"]
    );

    // push-register in two stages.
    let first = command(
        &mut alice,
        HERALD,
        "push-register",
        Some("execute"),
        None,
        None,
    )
    .await;
    assert_eq!(status(&first), "executing");
    let actions = support::adhoc::cmd(&first)
        .get_child("actions", NS_COMMANDS)
        .unwrap();
    assert_eq!(actions.attr("execute"), Some("complete"));
    let form = submit(&[
        ("jid", &["push.example.net"]),
        ("node", &["phone-node"]),
        ("secret", &["s3cr3t"]),
        ("label", &["phone"]),
    ]);
    let done = command(
        &mut alice,
        HERALD,
        "push-register",
        Some("complete"),
        Some(&sid(&first)),
        Some(&form),
    )
    .await;
    assert_eq!(status(&done), "completed");
    assert_eq!(
        note(&done),
        "Registered phone (push.example.net node phone-node)."
    );
    // ...and in one round trip.
    let form = submit(&[
        ("jid", &["fcm.push.example"]),
        ("node", &["tablet-node"]),
        ("label", &["tablet"]),
    ]);
    let one = command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await;
    assert_eq!(
        (status(&one).as_str(), note(&one).as_str()),
        (
            "completed",
            "Registered tablet (fcm.push.example node tablet-node)."
        )
    );
    // The same jid + node again updates it.
    let form = submit(&[
        ("jid", &["push.example.net"]),
        ("node", &["phone-node"]),
        ("label", &["old phone"]),
    ]);
    let upd = command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await;
    assert_eq!(
        note(&upd),
        "Updated old phone (push.example.net node phone-node)."
    );

    // push-room, in two stages and in one.
    let first = command(&mut alice, HERALD, "push-room", None, None, None).await;
    let form = submit(&[
        ("room", &["dev@muc.localhost"]),
        ("nick", &["alice"]),
        ("mode", &["mentioned"]),
    ]);
    let done = command(
        &mut alice,
        HERALD,
        "push-room",
        None,
        Some(&sid(&first)),
        Some(&form),
    )
    .await;
    assert_eq!(
        note(&done),
        "Messages of dev@muc.localhost that mention alice will be pushed."
    );
    let form = submit(&[("room", &["ops@muc.localhost"]), ("nick", &["al"])]);
    command(&mut alice, HERALD, "push-room", None, None, Some(&form)).await;
    let bad = command(
        &mut alice,
        HERALD,
        "push-room",
        None,
        None,
        Some(&submit(&[
            ("room", &["x@conference.evil.example"]),
            ("nick", &["a"]),
        ])),
    )
    .await;
    let (_, cond, app, text) = error(&bad);
    assert_eq!(
        (cond.as_str(), app.as_deref()),
        ("bad-request", Some("bad-payload"))
    );
    assert!(text.starts_with("field 'room'"), "{text}");

    // push-list (completes at once), both one-shot and with a submitted form.
    for form in [None, Some(submit(&[]))] {
        let list = command(&mut alice, HERALD, "push-list", None, None, form.as_deref()).await;
        assert_eq!(status(&list), "completed");
        let regs = rows(&list, 0);
        assert_eq!(column(&regs, "label"), ["old phone", "tablet"]);
        assert_eq!(
            column(&regs, "jid"),
            ["push.example.net", "fcm.push.example"]
        );
        assert_eq!(column(&regs, "errors"), ["0", "0"]);
        let rooms = rows(&list, 1);
        assert_eq!(
            column(&rooms, "room"),
            ["dev@muc.localhost", "ops@muc.localhost"]
        );
        assert_eq!(column(&rooms, "mode"), ["mentioned", "always"]);
    }

    // Bob sees none of it and cannot remove it.
    let list = command(&mut bob, HERALD, "push-list", None, None, None).await;
    assert!(rows(&list, 0).is_empty() && rows(&list, 1).is_empty());
    let un = command(&mut bob, HERALD, "push-unregister", None, None, None).await;
    assert_eq!(note(&un), "You have no push registrations.");
    let forged = submit(&[("registrations", &["push.example.net<phone-node"])]);
    let refused = command(
        &mut bob,
        HERALD,
        "push-unregister",
        None,
        None,
        Some(&forged),
    )
    .await;
    assert_eq!(error(&refused).2.as_deref(), Some("bad-payload"));
    // Nor can he use alice's session.
    let a_session = command(&mut alice, HERALD, "push-unregister", None, None, None).await;
    let stolen = command(
        &mut bob,
        HERALD,
        "push-unregister",
        None,
        Some(&sid(&a_session)),
        Some(&forged),
    )
    .await;
    assert_eq!(error(&stolen).2.as_deref(), Some("bad-sessionid"));

    // Alice unregisters the tablet in two stages.
    let opts: Vec<String> = support::adhoc::cmd(&a_session)
        .get_child("x", support::adhoc::NS_DATA)
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("registrations"))
        .unwrap()
        .children()
        .filter(|o| o.name() == "option")
        .map(|o| o.children().next().unwrap().text())
        .collect();
    assert_eq!(
        opts,
        [
            "push.example.net<phone-node",
            "fcm.push.example<tablet-node"
        ]
    );
    let form = submit(&[("registrations", &["fcm.push.example<tablet-node"])]);
    let done = command(
        &mut alice,
        HERALD,
        "push-unregister",
        Some("complete"),
        Some(&sid(&a_session)),
        Some(&form),
    )
    .await;
    assert_eq!(
        note(&done),
        "Removed tablet (fcm.push.example node tablet-node)."
    );
    // Cancel, and the session is over.
    let c = command(&mut alice, HERALD, "push-register", None, None, None).await;
    let canceled = command(
        &mut alice,
        HERALD,
        "push-register",
        Some("cancel"),
        Some(&sid(&c)),
        None,
    )
    .await;
    assert_eq!(status(&canceled), "canceled");
    let late = command(
        &mut alice,
        HERALD,
        "push-register",
        Some("complete"),
        Some(&sid(&c)),
        Some(&submit(&[])),
    )
    .await;
    assert_eq!(error(&late).1, "not-allowed");
    assert_eq!(error(&late).2.as_deref(), Some("session-expired"));
    let unknown = command(&mut alice, HERALD, "push-nothing", None, None, None).await;
    assert_eq!(error(&unknown).1, "item-not-found");

    // The 6th registration evicts the least recently used (phone-node was used last when it
    // was updated, so after four more it is the oldest).
    for i in 1..=4 {
        let form = submit(&[
            ("jid", &["push.example.net"]),
            ("node", &[&format!("n{i}")]),
        ]);
        command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await;
    }
    let form = submit(&[("jid", &["push.example.net"]), ("node", &["n5"])]);
    let sixth = command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await;
    assert!(note(&sixth).contains("the least recently used one, old phone (push.example.net node phone-node), was removed"), "{}", note(&sixth));
    let list = command(&mut alice, HERALD, "push-list", None, None, None).await;
    assert_eq!(
        column(&rows(&list, 0), "node"),
        ["n1", "n2", "n3", "n4", "n5"]
    );

    alice.close().await;
    bob.close().await;
    let _ = stop.send(());
    task.await.unwrap();
    stop_servers(p).await;
}

#[tokio::test]
async fn admin_commands_only_for_admins_and_foreign_users_are_refused() {
    let p = push_prosody().await;
    let store = tempfile::tempdir().unwrap();
    let (stop, task) = start_herald_with_admin(&p, store.path()).await;
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    let mut admin = C2s::login(&p.c2s_addr(), "admin@localhost/console", "px").await;
    let mut eve = C2s::login(&p.c2s_addr(), "eve@other.localhost/x", "pe").await;
    wait_until_answering(&mut alice, HERALD, T).await;

    let form = submit(&[
        ("jid", &["push.example.net"]),
        ("node", &["a1"]),
        ("label", &["phone"]),
    ]);
    command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await;
    let form = submit(&[("room", &["dev@muc.localhost"]), ("nick", &["alice"])]);
    command(&mut alice, HERALD, "push-room", None, None, Some(&form)).await;

    // alice neither sees nor runs admin commands.
    assert!(!command_nodes(&mut alice, HERALD)
        .await
        .iter()
        .any(|n| n.starts_with("admin-")));
    for node in ["admin-stats", "admin-user"] {
        let a = command(&mut alice, HERALD, node, None, None, None).await;
        assert_eq!(error(&a).1, "forbidden", "{node}: {}", to_xml(&a));
    }
    let info = iq(
        &mut alice,
        "get",
        HERALD,
        "<query xmlns='http://jabber.org/protocol/disco#info' node='admin-stats'/>",
    )
    .await;
    assert_eq!(error(&info).1, "item-not-found");

    // The admin does.
    let nodes = command_nodes(&mut admin, HERALD).await;
    assert!(
        nodes.contains(&"admin-stats".to_string()) && nodes.contains(&"admin-user".to_string()),
        "{nodes:?}"
    );
    let stats = command(&mut admin, HERALD, "admin-stats", None, None, None).await;
    assert_eq!(
        note(&stats),
        "1 registration(s) of 1 user(s), 1 watched room(s)."
    );
    let sinks = rows(&stats, 0);
    assert_eq!(column(&sinks, "sink"), ["xmpp:world@localhost"]);
    let first = command(&mut admin, HERALD, "admin-user", None, None, None).await;
    let second = command(
        &mut admin,
        HERALD,
        "admin-user",
        Some("next"),
        Some(&sid(&first)),
        Some(&submit(&[("user", &["alice@localhost"])])),
    )
    .await;
    assert_eq!(status(&second), "executing");
    let remove = submit(&[("remove", &["push.example.net<a1", "room:dev@muc.localhost"])]);
    let done = command(
        &mut admin,
        HERALD,
        "admin-user",
        Some("complete"),
        Some(&sid(&second)),
        Some(&remove),
    )
    .await;
    assert_eq!(
        note(&done),
        "Removed 1 registration(s) and 1 room rule(s) of alice@localhost."
    );
    let list = command(&mut alice, HERALD, "push-list", None, None, None).await;
    assert!(rows(&list, 0).is_empty());

    // A user of a domain herald does not serve.
    assert!(command_nodes(&mut eve, HERALD).await.is_empty());
    let form = submit(&[("jid", &["push.example.net"]), ("node", &["e1"])]);
    let refused = command(&mut eve, HERALD, "push-register", None, None, Some(&form)).await;
    let (_, cond, _, text) = error(&refused);
    assert_eq!(cond, "forbidden");
    assert!(text.contains("users of the domains it serves"), "{text}");
    let enable = iq(
        &mut eve,
        "set",
        HERALD,
        "<enable xmlns='urn:xmpp:push:0' jid='push.example.net' node='e1'/>",
    )
    .await;
    let (_, cond, _, text) = error(&enable);
    assert_eq!(cond, "forbidden");
    assert!(text.contains("other.localhost"), "{text}");

    for c in [alice, admin, eve] {
        c.close().await;
    }
    let _ = stop.send(());
    task.await.unwrap();
    stop_servers(p).await;
}
