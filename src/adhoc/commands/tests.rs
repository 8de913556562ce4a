//! Each command through the framework, on a temporary store.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use minidom::Element;

use super::*;
use crate::adhoc::{CommandError, Commands, NS_COMMANDS};
use crate::config::{MucServices, PushSettings};
use crate::push::{policy, Push};

pub(super) const ALICE: &str = "alice@example.org/phone";
pub(super) const BOB: &str = "bob@example.org/desk";
pub(super) const ADMIN: &str = "admin@example.org/console";

pub(super) fn settings() -> PushSettings {
    PushSettings {
        max_rooms_per_user: 2,
        max_rooms: 3,
        ..PushSettings::for_tests(MucServices::UnderDomains)
    }
}

pub(super) struct Env {
    commands: Commands,
    pub(super) ctx: Arc<Ctx>,
    _dir: tempfile::TempDir,
}

pub(super) fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path(), 100, 1 << 20).unwrap();
    let s = settings();
    let ctx = Arc::new(Ctx {
        push: Push::new(s.clone(), store.push_store().unwrap()),
        store,
        presence: OnceLock::new(),
        rooms: OnceLock::new(),
    });
    let mut commands = Commands::new(
        "herald.example.org",
        vec!["admin@example.org".into()],
        move |bare| policy::user_of(bare, &s).is_ok(),
        Duration::from_secs(600),
        8,
    );
    install(&mut commands, ctx.clone());
    Env {
        commands,
        ctx,
        _dir: dir,
    }
}

pub(super) fn x(fields: &[(&str, &[&str])]) -> String {
    let mut out = String::from("<x xmlns='jabber:x:data' type='submit'>");
    for (var, values) in fields {
        out.push_str(&format!("<field var='{var}'>"));
        for v in *values {
            out.push_str(&format!("<value>{v}</value>"));
        }
        out.push_str("</field>");
    }
    out.push_str("</x>");
    out
}

impl Env {
    pub(super) async fn run(
        &self,
        from: &str,
        node: &str,
        session: Option<&str>,
        form: Option<String>,
    ) -> Result<Element, CommandError> {
        let sid = session
            .map(|s| format!(" sessionid='{s}'"))
            .unwrap_or_default();
        let xml = format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='{node}'{sid}>{}</command>",
            form.unwrap_or_default()
        );
        self.commands.execute(from, &xml.parse().unwrap()).await
    }

    pub(super) async fn register(&self, from: &str, jid: &str, node: &str, label: &str) -> Element {
        self.run(
            from,
            "push-register",
            None,
            Some(x(&[
                ("jid", &[jid]),
                ("node", &[node]),
                ("label", &[label]),
            ])),
        )
        .await
        .unwrap()
    }
}

pub(super) fn note(cmd: &Element) -> String {
    cmd.get_child("note", NS_COMMANDS).unwrap().text()
}

pub(super) fn vars(form: &Element) -> Vec<(String, String, bool)> {
    form.children()
        .filter(|f| f.name() == "field")
        .map(|f| {
            (
                f.attr("var").unwrap_or_default().to_owned(),
                // XEP-0004: a field without a type is text-single (xmpp-parsers leaves it out).
                f.attr("type").unwrap_or("text-single").to_owned(),
                f.children().any(|c| c.name() == "required"),
            )
        })
        .collect()
}

/// The rows of the `n`th result table: column var → value.
pub(super) fn rows(cmd: &Element, n: usize) -> Vec<Vec<(String, String)>> {
    let x = cmd.children().filter(|c| c.name() == "x").nth(n).unwrap();
    x.children()
        .filter(|c| c.name() == "item")
        .map(|item| {
            item.children()
                .map(|f| {
                    let v = f.children().next().map(|v| v.text()).unwrap_or_default();
                    (f.attr("var").unwrap().to_owned(), v)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn push_register_in_two_stages_and_in_one() {
    let e = env();
    let first = e.run(ALICE, "push-register", None, None).await.unwrap();
    assert_eq!(first.attr("status"), Some("executing"));
    let form = first.get_child("x", "jabber:x:data").unwrap();
    assert_eq!(
        vars(form),
        [
            ("jid".into(), "jid-single".into(), true),
            ("node".into(), "text-single".into(), true),
            ("secret".into(), "text-private".into(), false),
            ("label".into(), "text-single".into(), false),
        ]
    );
    let id = first.attr("sessionid").unwrap();
    let done = e
        .run(
            ALICE,
            "push-register",
            Some(id),
            Some(x(&[
                ("jid", &["push.example.net"]),
                ("node", &["n1"]),
                ("secret", &["s3cret"]),
                ("label", &["phone"]),
            ])),
        )
        .await
        .unwrap();
    assert_eq!(done.attr("status"), Some("completed"));
    assert_eq!(note(&done), "Registered phone (push.example.net node n1).");
    let stored = e.ctx.push.get("alice@example.org").unwrap();
    let options: Element = stored.registrations[0]
        .options
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let values: Vec<String> = options
        .children()
        .map(|f| f.children().next().unwrap().text())
        .collect();
    assert_eq!(
        values,
        [
            "http://jabber.org/protocol/pubsub#publish-options",
            "s3cret"
        ]
    );

    // One round trip; the same jid + node updates.
    let again = e.register(ALICE, "push.example.net", "n1", "tablet").await;
    assert_eq!(note(&again), "Updated tablet (push.example.net node n1).");
    let one = e.register(ALICE, "push.example.net", "n2", "laptop").await;
    assert_eq!(one.attr("status"), Some("completed"));
    assert_eq!(
        e.ctx
            .push
            .get("alice@example.org")
            .unwrap()
            .registrations
            .len(),
        2
    );
}

#[tokio::test]
async fn push_register_refuses_bad_input_naming_the_field_and_writes_nothing() {
    let e = env();
    type Fields<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: [(Fields, &str); 4] = [
        (&[("node", &["n"])], "field 'jid' is required"),
        (
            &[("jid", &["a@b/c"]), ("node", &["n"])],
            "field 'jid': must be a bare JID",
        ),
        (&[("jid", &["p.example"])], "field 'node' is required"),
        (
            &[("jid", &["p.example"]), ("node", &[&"n".repeat(1025)])],
            "field 'node': is 1025 bytes",
        ),
    ];
    for (fields, text) in cases {
        let err = e
            .run(ALICE, "push-register", None, Some(x(fields)))
            .await
            .unwrap_err();
        let s = err.to_stanza_error();
        assert_eq!(
            s.app.as_ref().map(|a| a.1.as_str()),
            Some("bad-payload"),
            "{text}"
        );
        assert!(
            s.text.as_deref().unwrap().starts_with(text),
            "{:?} vs {text}",
            s.text
        );
    }
    assert!(e.ctx.push.get("alice@example.org").unwrap().is_empty());
}

#[tokio::test]
async fn the_sixth_registration_evicts_the_least_recently_used_and_says_so() {
    let e = env();
    for i in 1..=5 {
        e.register(
            ALICE,
            "push.example.net",
            &format!("n{i}"),
            &format!("d{i}"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sixth = e.register(ALICE, "push.example.net", "n6", "d6").await;
    let text = note(&sixth);
    assert!(
        text.contains("the least recently used one, d1 (push.example.net node n1), was removed"),
        "{text}"
    );
    assert_eq!(
        sixth.get_child("note", NS_COMMANDS).unwrap().attr("type"),
        Some("warn")
    );
    let nodes: Vec<String> = e
        .ctx
        .push
        .get("alice@example.org")
        .unwrap()
        .registrations
        .iter()
        .map(|r| r.node.clone())
        .collect();
    assert_eq!(nodes, ["n2", "n3", "n4", "n5", "n6"]);
}

#[tokio::test]
async fn push_list_and_unregister_see_only_the_requesters_data() {
    let e = env();
    e.register(ALICE, "push.example.net", "n1", "phone").await;
    e.register(ALICE, "other.example.net", "n2", "laptop").await;
    e.register(BOB, "push.example.net", "b1", "bobs").await;
    e.run(
        ALICE,
        "push-room",
        None,
        Some(x(&[("room", &["dev@muc.example.org"]), ("nick", &["al"])])),
    )
    .await
    .unwrap();

    let list = e.run(ALICE, "push-list", None, None).await.unwrap();
    assert_eq!(list.attr("status"), Some("completed"), "completes at once");
    assert_eq!(
        note(&list),
        "You have 2 registration(s) and 1 room rule(s)."
    );
    let regs = rows(&list, 0);
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[0][0], ("label".into(), "phone".into()));
    assert_eq!(regs[0][1], ("jid".into(), "push.example.net".into()));
    assert_eq!(regs[0][5], ("errors".into(), "0".into()));
    assert_eq!(rows(&list, 1)[0][2], ("mode".into(), "always".into()));

    let form = e.run(ALICE, "push-unregister", None, None).await.unwrap();
    let field = form
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("registrations"))
        .unwrap();
    assert_eq!(field.attr("type"), Some("list-multi"));
    let options: Vec<String> = field
        .children()
        .filter(|o| o.name() == "option")
        .map(|o| o.children().next().unwrap().text())
        .collect();
    assert_eq!(options, ["push.example.net<n1", "other.example.net<n2"]);
    // Bob's registration is not one of alice's.
    let id = form.attr("sessionid").unwrap();
    let err = e
        .run(
            ALICE,
            "push-unregister",
            Some(id),
            Some(x(&[("registrations", &["push.example.net&lt;b1"])])),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::BadPayload(ref t) if t.contains("not one of your registrations")),
        "{err:?}"
    );
    let done = e
        .run(
            ALICE,
            "push-unregister",
            Some(id),
            Some(x(&[("registrations", &["push.example.net&lt;n1"])])),
        )
        .await
        .unwrap();
    assert_eq!(note(&done), "Removed phone (push.example.net node n1).");
    assert_eq!(
        e.ctx
            .push
            .get("alice@example.org")
            .unwrap()
            .registrations
            .len(),
        1
    );
    assert_eq!(
        e.ctx
            .push
            .get("bob@example.org")
            .unwrap()
            .registrations
            .len(),
        1
    );
}
