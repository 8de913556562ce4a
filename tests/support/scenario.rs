//! The steps the fake-server tests of herald's transport share: herald configured against the
//! fake server, its login, a live presence, and the events it sends.
//!
//! Include it by path next to `fake_server.rs` and `herald.rs`, as `fake_server` and
//! `herald_support`.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use crate::fake_server::{Conn, FakeServer};
use crate::herald_support::{event_json, is_event_message, Config, JID, SECRET};
use herald::config::Settings;
use serde_json::Value;

/// Long enough for anything herald does on loopback; only a failing test waits this long.
pub const EVENTUALLY: Duration = Duration::from_secs(10);
/// How long "nothing more comes" is watched for.
pub const QUIET: Duration = Duration::from_millis(400);

/// herald against `server`, reconnecting fast, with the XMPP sink.
pub fn settings(server: &FakeServer, store: &Path) -> Settings {
    Config::new(JID, SECRET, server.addr, store)
        .fast_reconnect()
        .xmpp_sink()
        .settings()
}

pub async fn connected(server: &mut FakeServer) -> Conn {
    server
        .next_connection(EVENTUALLY)
        .await
        .expect("herald logs in to the fake server")
}

/// An available presence of `from`, as the server forwards it live.
pub fn live_presence(from: &str) -> String {
    format!("<presence from='{from}' to='{JID}'/>")
}

/// The JSON of the next event message herald sends.
pub async fn next_event(conn: &mut Conn) -> Value {
    let msg = conn
        .recv_matching(is_event_message, EVENTUALLY)
        .await
        .expect("herald sends an event message");
    event_json(&msg)
}

pub async fn assert_no_event(conn: &mut Conn) {
    if let Some(msg) = conn.recv_matching(is_event_message, QUIET).await {
        panic!("unexpected event: {}", String::from(&msg));
    }
}
