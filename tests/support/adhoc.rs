//! A c2s client's side of herald's ad-hoc commands (XEP-0050) and disco: send an IQ and wait
//! for its answer, run a command stage, read notes, errors and result tables.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use minidom::Element;

use super::client::{parse_client_xml, to_xml, C2s};
use super::herald::Config;
use super::prosody::Prosody;
use herald::xmpp::iq_handlers::IqHandlers;
use herald::xmpp::routes::LinkStatus;
use std::path::Path;
use tokio::sync::oneshot;

pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
pub const NS_DATA: &str = "jabber:x:data";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// Longest wait for one answer.
pub const ANSWER: Duration = Duration::from_secs(10);

/// Sends `<iq type=TYPE to=TO id=…>PAYLOAD</iq>` and returns the answer (result or error).
pub async fn iq(c: &mut C2s, kind: &str, to: &str, payload: &str) -> Element {
    let id = format!("t{}", rand_id());
    let xml = format!("<iq type='{kind}' to='{to}' id='{id}'>{payload}</iq>");
    c.send(parse_client_xml(&xml).unwrap()).await;
    let want = id.clone();
    c.next_matching(ANSWER, move |el| {
        el.name() == "iq" && el.attr("id") == Some(want.as_str())
    })
    .await
    .unwrap_or_else(|| panic!("no answer to {xml} within {ANSWER:?}"))
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `<x type='submit'>` with `(var, values)` fields.
pub fn submit(fields: &[(&str, &[&str])]) -> String {
    let mut out = String::from("<x xmlns='jabber:x:data' type='submit'>");
    for (var, values) in fields {
        out.push_str(&format!("<field var='{var}'>"));
        for v in *values {
            out.push_str(&format!("<value>{}</value>", escape(v)));
        }
        out.push_str("</field>");
    }
    out.push_str("</x>");
    out
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// Runs one stage: `<command node action sessionid>FORM</command>` to `to`; returns the IQ answer.
pub async fn command(
    c: &mut C2s,
    to: &str,
    node: &str,
    action: Option<&str>,
    session: Option<&str>,
    form: Option<&str>,
) -> Element {
    let mut attrs = format!("node='{node}'");
    if let Some(a) = action {
        attrs.push_str(&format!(" action='{a}'"));
    }
    if let Some(s) = session {
        attrs.push_str(&format!(" sessionid='{s}'"));
    }
    let payload = format!(
        "<command xmlns='{NS_COMMANDS}' {attrs}>{}</command>",
        form.unwrap_or_default()
    );
    iq(c, "set", to, &payload).await
}

/// The `<command/>` of a result; panics (with the stanza) on an error.
pub fn cmd(answer: &Element) -> &Element {
    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(answer));
    answer
        .get_child("command", NS_COMMANDS)
        .unwrap_or_else(|| panic!("no <command/> in {}", to_xml(answer)))
}

pub fn note(answer: &Element) -> String {
    cmd(answer)
        .get_child("note", NS_COMMANDS)
        .map(|n| n.text())
        .unwrap_or_else(|| panic!("no <note/> in {}", to_xml(answer)))
}

/// An error answer as (type, condition, application condition, text).
pub fn error(answer: &Element) -> (String, String, Option<String>, String) {
    assert_eq!(answer.attr("type"), Some("error"), "{}", to_xml(answer));
    let e = answer
        .children()
        .find(|c| c.name() == "error")
        .expect("<error/>");
    let cond = e
        .children()
        .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let app = e
        .children()
        .find(|c| c.ns() != NS_STANZAS)
        .map(|c| c.name().to_owned());
    let text = e
        .children()
        .find(|c| c.ns() == NS_STANZAS && c.name() == "text")
        .map(|t| t.text())
        .unwrap_or_default();
    (
        e.attr("type").unwrap_or_default().to_owned(),
        cond,
        app,
        text,
    )
}

/// The rows of the `n`th form of a command answer (each row: var → value).
pub fn rows(answer: &Element, n: usize) -> Vec<Vec<(String, String)>> {
    let x = cmd(answer)
        .children()
        .filter(|c| c.name() == "x")
        .nth(n)
        .expect("result form");
    x.children()
        .filter(|c| c.name() == "item")
        .map(|item| {
            item.children()
                .map(|f| {
                    let v = f.children().next().map(|v| v.text()).unwrap_or_default();
                    (f.attr("var").unwrap_or_default().to_owned(), v)
                })
                .collect()
        })
        .collect()
}

/// The value of column `var` in each row.
pub fn column(rows: &[Vec<(String, String)>], var: &str) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The nodes disco#items lists on the commands node.
pub async fn command_nodes(c: &mut C2s, to: &str) -> Vec<String> {
    let a = iq(
        c,
        "get",
        to,
        &format!("<query xmlns='http://jabber.org/protocol/disco#items' node='{NS_COMMANDS}'/>"),
    )
    .await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
    a.children()
        .next()
        .map(|q| {
            q.children()
                .filter_map(|i| i.attr("node").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asks `to` for disco#info until it answers with a result (herald has logged in; the server
/// answers with an error while it has not), or panics after `within`.
pub async fn wait_until_answering(c: &mut C2s, to: &str, within: Duration) -> Element {
    let deadline = Instant::now() + within;
    loop {
        let a = iq(
            c,
            "get",
            to,
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
        if a.attr("type") == Some("result") {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{to} did not answer within {within:?}: {}",
            to_xml(&a)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prosody with `localhost` (alice, bob, admin) and a second host `other.localhost` (eve).
pub async fn push_prosody() -> Prosody {
    let p = Prosody::builder()
        .users(&[("alice", "pa"), ("bob", "pb"), ("admin", "px")])
        .extra_vhost("\nVirtualHost \"other.localhost\"\n")
        .start()
        .await;
    let out = p.prosodyctl(&["register", "eve", "other.localhost", "pe"]);
    assert!(out.status.success(), "{out:?}");
    p
}

/// herald in-process with `[admin] jids = ["admin@localhost"]`; returns once it is logged in.
pub async fn start_herald_with_admin(
    p: &Prosody,
    store: &Path,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let toml = format!(
        "{}\n[admin]\njids = [\"admin@localhost\"]\n",
        Config::new(
            &p.component_jid,
            &p.component_secret,
            p.component_addr(),
            store
        )
        .xmpp_sink()
        .toml()
    );
    let settings = herald::config::load_str(&toml).unwrap();
    let (stop, signal) = oneshot::channel::<()>();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        herald::app::run_with(
            settings,
            IqHandlers::new(),
            async move {
                let _ = signal.await;
            },
            |o| {
                let _ = tx.send(o.status);
            },
        )
        .await
        .unwrap();
    });
    let mut status = rx.await.unwrap();
    tokio::time::timeout(
        ANSWER,
        status.wait_for(|s| matches!(s, LinkStatus::Up { .. })),
    )
    .await
    .expect("herald logs in")
    .unwrap();
    (stop, task)
}
