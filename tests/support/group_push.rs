//! herald's side of the group-chat push tests: its config with a `[push]` section, an in-process
//! herald that is logged in, and a watcher's ad-hoc steps (register an app server, watch a room,
//! list the registrations) plus waits on herald's presence table.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use herald::app::Observers;
use herald::xmpp::iq_handlers::IqHandlers;
use herald::xmpp::routes::LinkStatus;

use super::adhoc::{column, command, note, rows, submit};
use super::client::C2s;
use super::herald::{Config, Herald};
use super::prosody::Prosody;

/// herald's JID on the test Prosody.
pub const HERALD: &str = "herald.localhost";
/// Longest wait for herald to log in or to change what a user can see.
pub const HERALD_T: Duration = Duration::from_secs(10);

/// herald's `component.toml` for `p` (fast reconnects, the XMPP sink) with `[push]` = `push`.
pub fn push_toml(p: &Prosody, store: &Path, push: &str) -> String {
    let base = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        store,
    )
    .fast_reconnect()
    .xmpp_sink()
    .toml();
    format!("{base}\n[push]\n{push}\n")
}

/// herald in-process with [`push_toml`]; returns once it is logged in to `p`.
pub async fn start_herald(p: &Prosody, store: &Path, push: &str) -> (Herald, Observers) {
    let toml = push_toml(p, store, push);
    let settings = herald::config::load_str(&toml)
        .unwrap_or_else(|e| panic!("herald rejects the test config:\n{e}\n{toml}"));
    let (herald, observers) = Herald::start_with_handlers(settings, IqHandlers::new()).await;
    let mut status = observers.status.clone();
    tokio::time::timeout(
        HERALD_T,
        status.wait_for(|s| matches!(s, LinkStatus::Up { .. })),
    )
    .await
    .expect("herald logs in to Prosody")
    .expect("herald's status channel");
    (herald, observers)
}

/// `push-register` in one round trip; panics unless herald registered it.
pub async fn register(c: &mut C2s, app: &str, node: &str, secret: Option<&str>) {
    let mut fields: Vec<(&str, &[&str])> = Vec::new();
    let app_v = [app];
    let node_v = [node];
    fields.push(("jid", &app_v));
    fields.push(("node", &node_v));
    let secret_v = [secret.unwrap_or_default()];
    if secret.is_some() {
        fields.push(("secret", &secret_v));
    }
    let a = command(
        c,
        HERALD,
        "push-register",
        None,
        None,
        Some(&submit(&fields)),
    )
    .await;
    let n = note(&a);
    assert!(n.starts_with("Registered"), "{n}");
}

/// `push-room` in one round trip (`mode`: `always`, `mentioned` or `never`).
pub async fn watch_room(c: &mut C2s, room: &str, nick: &str, mode: &str) {
    let form = submit(&[("room", &[room]), ("nick", &[nick]), ("mode", &[mode])]);
    note(&command(c, HERALD, "push-room", None, None, Some(&form)).await);
}

/// The user's registrations as `push-list` shows them: `(node, errors)`.
pub async fn registrations(c: &mut C2s) -> Vec<(String, String)> {
    let a = command(c, HERALD, "push-list", None, None, None).await;
    let r = rows(&a, 0);
    column(&r, "node")
        .into_iter()
        .zip(column(&r, "errors"))
        .collect()
}

/// Asks `push-list` until `pred` holds for the registrations; panics (with the last list) after
/// `within`.
pub async fn wait_registrations(
    c: &mut C2s,
    within: Duration,
    what: &str,
    pred: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + within;
    loop {
        let list = registrations(c).await;
        if pred(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; push-list shows {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until herald's presence table says `bare` is online (`true`) or offline (`false`).
pub async fn wait_presence(observers: &Observers, bare: &str, online: bool) {
    let deadline = Instant::now() + HERALD_T;
    loop {
        let now = observers
            .presence
            .is_online(bare)
            .await
            .expect("herald's presence reader");
        if now == online {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "herald never saw {bare} {}",
            if online { "online" } else { "offline" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
