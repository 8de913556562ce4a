//! The framework with XEP-0050's own examples (its `list` and two-stage `config` commands),
//! every §4.6 error, and the session table's expiry and per-user bound.

use std::time::Duration;

use xmpp_parsers::data_forms::FieldType;

use super::session::Data;
use super::xml::{self, Note};
use super::*;

const ALICE: &str = "alice@example.org/phone";

/// XEP-0050's `list` (completes at once) and `config` (two stages: `mode`, then `state`).
struct List;
struct Config {
    admin: bool,
}

impl Command for List {
    fn node(&self) -> &'static str {
        "list"
    }
    fn name(&self) -> &'static str {
        "List Service Configurations"
    }
    fn start(&self, _: Requester) -> CommandFuture {
        Box::pin(async {
            Ok(Reply::Done {
                note: Note::info("httpd, postgresql, jabberd"),
                results: vec![],
            })
        })
    }
    fn submit(&self, i: Input) -> CommandFuture {
        self.start(i.requester)
    }
}

fn config_form(var: &str) -> minidom::Element {
    xml::form(
        "Configure Service",
        "Please select the run modes and state.",
        vec![xml::field(var, FieldType::ListSingle, var, true, &[])],
    )
}

impl Command for Config {
    fn node(&self) -> &'static str {
        if self.admin {
            "admin-config"
        } else {
            "config"
        }
    }
    fn name(&self) -> &'static str {
        "Configure Service"
    }
    fn admin_only(&self) -> bool {
        self.admin
    }
    fn start(&self, _: Requester) -> CommandFuture {
        Box::pin(async {
            Ok(Reply::Form {
                form: config_form("mode"),
                last: false,
                data: Data::new(),
            })
        })
    }
    fn submit(&self, i: Input) -> CommandFuture {
        Box::pin(async move {
            if i.stage == 0 {
                let mode = i.form.required("mode")?.to_owned();
                let mut data = Data::new();
                data.insert("mode".into(), mode);
                return Ok(Reply::Form {
                    form: config_form("state"),
                    last: true,
                    data,
                });
            }
            let state = i.form.required("state")?;
            Ok(Reply::Done {
                note: Note::info(format!(
                    "Service 'httpd' has been configured (mode {}, {state}).",
                    i.data["mode"]
                )),
                results: vec![],
            })
        })
    }
}

fn commands() -> Commands {
    let mut c = Commands::new(
        "herald.example.org",
        vec!["admin@example.org".into()],
        |bare| bare.ends_with("@example.org"),
        Duration::from_secs(600),
        2,
    );
    c.add(List);
    c.add(Config { admin: false });
    c.add(Config { admin: true });
    c
}

fn el(xml: &str) -> minidom::Element {
    xml.parse().unwrap()
}

async fn run(c: &Commands, from: &str, xml: &str) -> Result<minidom::Element, CommandError> {
    c.execute(from, &el(xml)).await
}

fn submit(session: &str, node: &str, var: &str, value: &str, action: &str) -> String {
    format!(
        "<command xmlns='http://jabber.org/protocol/commands' sessionid='{session}' node='{node}'{action}>\
         <x xmlns='jabber:x:data' type='submit'><field var='{var}'><value>{value}</value></field></x></command>"
    )
}

fn actions(cmd: &minidom::Element) -> (String, Vec<String>) {
    let a = cmd.get_child("actions", NS_COMMANDS).unwrap();
    (
        a.attr("execute").unwrap().to_owned(),
        a.children().map(|c| c.name().to_owned()).collect(),
    )
}

#[tokio::test]
async fn xep_example_simple_execution_completes_at_once() {
    // XEP-0050 Example 4.
    let r = run(
        &commands(),
        ALICE,
        "<command xmlns='http://jabber.org/protocol/commands' node='list' action='execute'/>",
    )
    .await
    .unwrap();
    assert_eq!(r.attr("status"), Some("completed"));
    assert_eq!(r.attr("node"), Some("list"));
    assert!(r.attr("sessionid").is_some_and(|s| !s.is_empty()));
    let note = r.get_child("note", NS_COMMANDS).unwrap();
    assert_eq!(
        (note.attr("type"), note.text().as_str()),
        (Some("info"), "httpd, postgresql, jabberd")
    );
}

#[tokio::test]
async fn xep_example_multiple_stages_with_prev_and_complete() {
    let c = commands();
    let first = run(
        &c,
        ALICE,
        "<command xmlns='http://jabber.org/protocol/commands' node='config' action='execute'/>",
    )
    .await
    .unwrap();
    assert_eq!(first.attr("status"), Some("executing"));
    assert_eq!(actions(&first), ("next".into(), vec!["next".into()]));
    let form = first.get_child("x", xml::NS_DATA).unwrap();
    assert_eq!(form.attr("type"), Some("form"));
    let id = first.attr("sessionid").unwrap().to_owned();

    // Example 9: submitted with the default action (execute = next here).
    let second = run(&c, ALICE, &submit(&id, "config", "mode", "3", ""))
        .await
        .unwrap();
    assert_eq!(second.attr("sessionid"), Some(id.as_str()));
    assert_eq!(
        actions(&second),
        ("complete".into(), vec!["prev".into(), "complete".into()])
    );
    // Back to the first stage, forward again.
    let back = run(&c, ALICE, &format!("<command xmlns='http://jabber.org/protocol/commands' sessionid='{id}' node='config' action='prev'/>"))
        .await
        .unwrap();
    assert_eq!(actions(&back).0, "next");
    let field = back
        .get_child("x", xml::NS_DATA)
        .unwrap()
        .children()
        .find(|f| f.name() == "field")
        .unwrap();
    assert_eq!(field.attr("var"), Some("mode"));
    run(
        &c,
        ALICE,
        &submit(&id, "config", "mode", "2", " action='next'"),
    )
    .await
    .unwrap();
    let done = run(
        &c,
        ALICE,
        &submit(&id, "config", "state", "on", " action='complete'"),
    )
    .await
    .unwrap();
    assert_eq!(done.attr("status"), Some("completed"));
    assert_eq!(
        done.get_child("note", NS_COMMANDS).unwrap().text(),
        "Service 'httpd' has been configured (mode 2, on)."
    );
    // The session is over.
    let again = run(&c, ALICE, &submit(&id, "config", "state", "on", ""))
        .await
        .unwrap_err();
    assert_eq!(again, CommandError::SessionExpired);
    let e = again.to_stanza_error();
    assert_eq!(
        (e.condition.as_str(), e.app.unwrap().1.as_str()),
        ("not-allowed", "session-expired")
    );
}

#[tokio::test]
async fn xep_example_cancel() {
    let c = commands();
    let first = run(
        &c,
        ALICE,
        "<command xmlns='http://jabber.org/protocol/commands' node='config'/>",
    )
    .await
    .unwrap();
    let id = first.attr("sessionid").unwrap();
    let r = run(&c, ALICE, &format!("<command xmlns='http://jabber.org/protocol/commands' sessionid='{id}' node='config' action='cancel'/>"))
        .await
        .unwrap();
    assert_eq!(
        (r.attr("status"), r.attr("sessionid")),
        (Some("canceled"), Some(id))
    );
    let late = run(&c, ALICE, &submit(id, "config", "mode", "1", ""))
        .await
        .unwrap_err();
    assert_eq!(late, CommandError::SessionExpired);
}

#[tokio::test]
async fn every_error_of_section_4_6() {
    let c = commands();
    let cmd =
        |attrs: &str| format!("<command xmlns='http://jabber.org/protocol/commands' {attrs}/>");
    let app = |e: CommandError| {
        let s = e.to_stanza_error();
        (s.condition, s.app.map(|a| a.1))
    };
    let err = |r: Result<minidom::Element, CommandError>| app(r.unwrap_err());
    let b = |name: &str| ("bad-request".to_string(), Some(name.to_string()));

    assert_eq!(
        err(run(&c, ALICE, &cmd("node='nope'")).await),
        ("item-not-found".into(), None)
    );
    assert_eq!(
        err(run(&c, ALICE, &cmd("node='config' action='dance'")).await),
        b("malformed-action")
    );
    assert_eq!(
        err(run(&c, ALICE, &cmd("node='config' xml:lang='de'")).await),
        b("bad-locale")
    );
    assert!(run(&c, ALICE, &cmd("node='list' xml:lang='en-GB'"))
        .await
        .is_ok());
    assert_eq!(
        err(run(&c, ALICE, &cmd("node='config' sessionid='forged'")).await),
        b("bad-sessionid")
    );
    assert_eq!(
        err(run(&c, ALICE, &cmd("node='config' action='next'")).await),
        b("bad-sessionid")
    );
    // Forbidden: an admin command for a user, anything for a foreign user.
    assert_eq!(
        err(run(&c, ALICE, &cmd("node='admin-config'")).await),
        ("forbidden".into(), None)
    );
    assert_eq!(
        err(run(&c, "eve@evil.example/x", &cmd("node='list'")).await),
        ("forbidden".into(), None)
    );
    assert!(
        run(&c, "admin@example.org/desk", &cmd("node='admin-config'"))
            .await
            .is_ok()
    );

    let id = run(&c, ALICE, &cmd("node='config'"))
        .await
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_owned();
    let with = |a: &str| cmd(&format!("node='config' sessionid='{id}' {a}"));
    assert_eq!(
        err(run(&c, ALICE, &with("action='complete'")).await),
        b("bad-action")
    );
    assert_eq!(
        err(run(&c, ALICE, &with("action='prev'")).await),
        b("bad-action")
    );
    assert_eq!(
        err(run(&c, ALICE, &with("action='next'")).await),
        b("bad-payload")
    );
    // Another resource, or another node, cannot use the session.
    assert_eq!(
        err(run(&c, "alice@example.org/laptop", &with("action='cancel'")).await),
        b("bad-sessionid")
    );
    let wrong_node = format!("<command xmlns='http://jabber.org/protocol/commands' node='list' sessionid='{id}' action='cancel'/>");
    assert_eq!(err(run(&c, ALICE, &wrong_node).await), b("bad-sessionid"));
    // A missing field names it, and the session stays for a corrected submission.
    let e = run(&c, ALICE, &submit(&id, "config", "other", "1", ""))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        CommandError::BadPayload("field 'mode' is required".into())
    );
    assert_eq!(
        e.to_stanza_error().text.as_deref(),
        Some("field 'mode' is required")
    );
    assert!(run(&c, ALICE, &submit(&id, "config", "mode", "1", ""))
        .await
        .is_ok());
    // A form of type 'form' is not a submission.
    let bad_form = format!("<command xmlns='http://jabber.org/protocol/commands' node='config' sessionid='{id}'><x xmlns='jabber:x:data' type='form'/></command>");
    assert_eq!(err(run(&c, ALICE, &bad_form).await), b("bad-payload"));
}

#[test]
fn commands_are_listed_per_requester() {
    let c = commands();
    let items = |from: &str| -> Vec<String> {
        let q = c
            .disco_items(from, &el("<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>"))
            .unwrap();
        q.children()
            .map(|i| i.attr("node").unwrap().to_owned())
            .collect()
    };
    assert_eq!(items(ALICE), ["list", "config"]);
    assert_eq!(
        items("admin@example.org/x"),
        ["list", "config", "admin-config"]
    );
    assert!(items("eve@evil.example/x").is_empty());
    let info = c
        .disco_info(
            ALICE,
            &el("<query xmlns='http://jabber.org/protocol/disco#info' node='config'/>"),
        )
        .unwrap();
    let id = info.children().find(|c| c.name() == "identity").unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("automation"), Some("command-node"))
    );
    assert!(c
        .disco_info(
            ALICE,
            &el("<query xmlns='http://jabber.org/protocol/disco#info' node='admin-config'/>")
        )
        .is_err());
}
