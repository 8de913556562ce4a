//! `push-room`, the admin commands and store failures through the framework.

use super::tests::*;
use crate::adhoc::CommandError;

#[tokio::test]
async fn push_room_modes_limits_and_services() {
    let e = env();
    let room = |r: &str, nick: &str, mode: Option<&str>| {
        let mut f: Vec<(&str, Vec<&str>)> = vec![("room", vec![r]), ("nick", vec![nick])];
        if let Some(m) = mode {
            f.push(("mode", vec![m]));
        }
        let fields: Vec<(&str, &[&str])> = f.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        x(&fields)
    };
    let first = e.run(ALICE, "push-room", None, None).await.unwrap();
    let mode = first
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("mode"))
        .unwrap();
    assert_eq!(
        mode.get_child("value", "jabber:x:data").unwrap().text(),
        "always",
        "default_room_mode"
    );
    let ok = e
        .run(
            ALICE,
            "push-room",
            None,
            Some(room("a@muc.example.org", "al", Some("mentioned"))),
        )
        .await
        .unwrap();
    assert_eq!(
        note(&ok),
        "Messages of a@muc.example.org that mention al will be pushed."
    );
    let bad = e
        .run(
            ALICE,
            "push-room",
            None,
            Some(room("a@muc.example.org", "al", Some("loud"))),
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, CommandError::BadPayload(ref t) if t.starts_with("field 'mode'")));
    let foreign = e
        .run(
            ALICE,
            "push-room",
            None,
            Some(room("a@conference.evil.net", "al", None)),
        )
        .await
        .unwrap_err();
    assert!(matches!(foreign, CommandError::BadPayload(ref t) if t.starts_with("field 'room'")));
    e.run(
        ALICE,
        "push-room",
        None,
        Some(room("b@muc.example.org", "al", None)),
    )
    .await
    .unwrap();
    let limit = e
        .run(
            ALICE,
            "push-room",
            None,
            Some(room("c@muc.example.org", "al", None)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(limit, CommandError::NotAllowed(ref t) if t.contains("max_rooms_per_user")),
        "{limit:?}"
    );
    // max_rooms = 3: bob may add one new room and join the existing ones, not a fourth.
    e.run(
        BOB,
        "push-room",
        None,
        Some(room("a@muc.example.org", "bo", None)),
    )
    .await
    .unwrap();
    e.run(
        BOB,
        "push-room",
        None,
        Some(room("c@muc.example.org", "bo", None)),
    )
    .await
    .unwrap();
    let all = e
        .run(
            ALICE,
            "push-room",
            None,
            Some(room("d@muc.example.org", "x", None)),
        )
        .await
        .unwrap_err();
    assert!(matches!(all, CommandError::NotAllowed(_)), "{all:?}");
    let never = e
        .run(
            ALICE,
            "push-room",
            None,
            Some(room("a@muc.example.org", "al", Some("never"))),
        )
        .await
        .unwrap();
    assert_eq!(note(&never), "Removed a@muc.example.org from your rooms.");
    assert_eq!(e.ctx.push.get("alice@example.org").unwrap().rooms.len(), 1);
}

#[tokio::test]
async fn admin_commands_inspect_and_clean_up_a_user() {
    let e = env();
    e.register(ALICE, "push.example.net", "n1", "phone").await;
    e.run(
        ALICE,
        "push-room",
        None,
        Some(x(&[("room", &["dev@muc.example.org"]), ("nick", &["al"])])),
    )
    .await
    .unwrap();
    assert!(matches!(
        e.run(ALICE, "admin-stats", None, None).await,
        Err(CommandError::Forbidden(_))
    ));
    let stats = e.run(ADMIN, "admin-stats", None, None).await.unwrap();
    assert_eq!(
        note(&stats),
        "1 registration(s) of 1 user(s), 1 watched room(s)."
    );

    let first = e.run(ADMIN, "admin-user", None, None).await.unwrap();
    let id = first.attr("sessionid").unwrap();
    let second = e
        .run(
            ADMIN,
            "admin-user",
            Some(id),
            Some(x(&[("user", &["alice@example.org"])])),
        )
        .await
        .unwrap();
    assert_eq!(second.attr("status"), Some("executing"));
    let remove = second
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("remove"))
        .unwrap();
    assert_eq!(
        remove.children().filter(|o| o.name() == "option").count(),
        2
    );
    let done = e
        .run(
            ADMIN,
            "admin-user",
            Some(id),
            Some(x(&[(
                "remove",
                &["push.example.net&lt;n1", "room:dev@muc.example.org"],
            )])),
        )
        .await
        .unwrap();
    assert_eq!(
        note(&done),
        "Removed 1 registration(s) and 1 room rule(s) of alice@example.org."
    );
    assert!(e.ctx.push.get("alice@example.org").unwrap().is_empty());
}

#[tokio::test]
async fn a_store_failure_is_answered_and_changes_nothing() {
    let e = env();
    e.ctx.push.store().fail_next_writes(1);
    let err = e
        .run(
            ALICE,
            "push-register",
            None,
            Some(x(&[("jid", &["push.example.net"]), ("node", &["n1"])])),
        )
        .await
        .unwrap_err();
    assert_eq!(err, CommandError::Store);
    let s = err.to_stanza_error();
    assert_eq!(
        (s.condition.as_str(), s.kind),
        (
            "internal-server-error",
            crate::xmpp::stanza::ErrorType::Wait
        )
    );
    assert!(e.ctx.push.get("alice@example.org").unwrap().is_empty());
    // The next attempt works.
    e.register(ALICE, "push.example.net", "n1", "phone").await;
}
