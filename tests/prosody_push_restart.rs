//! Push registrations and room rules are durable: with the real `herald` binary against a real
//! Prosody, what a user registered survives a graceful restart and a `kill -9` sent the moment
//! the `completed` answer arrived (herald answers only after the change is flushed).
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`.

mod support;

use std::time::Duration;

use support::adhoc::{column, command, note, rows, submit, wait_until_answering};
use support::client::C2s;
use support::herald::{file_tail, stop_servers, Config, HeraldProcess};
use support::prosody::Prosody;

const HERALD: &str = "herald.localhost";
const T: Duration = Duration::from_secs(15);

async fn list(c: &mut C2s) -> (Vec<String>, Vec<String>) {
    let l = command(c, HERALD, "push-list", None, None, None).await;
    (column(&rows(&l, 0), "node"), column(&rows(&l, 1), "room"))
}

#[tokio::test]
async fn registrations_and_rooms_survive_a_restart_and_a_kill_9_right_after_completed() {
    let p = Prosody::builder().users(&[("alice", "pa")]).start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("component.toml");
    let log = dir.path().join("herald.log");
    // A long flush interval: only the flush before each answer can make a change durable.
    let toml = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        &dir.path().join("store"),
    )
    .xmpp_sink()
    .toml()
    .replace("flush_interval = \"10ms\"", "flush_interval = \"10s\"");
    std::fs::write(&config, toml).unwrap();
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;

    let mut herald = HeraldProcess::spawn(&config, &log);
    wait_until_answering(&mut alice, HERALD, T).await;
    let form = submit(&[
        ("jid", &["push.example.net"]),
        ("node", &["first"]),
        ("secret", &["s"]),
    ]);
    note(&command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await);
    herald.terminate(T).await;

    let mut herald = HeraldProcess::spawn(&config, &log);
    wait_until_answering(&mut alice, HERALD, T).await;
    assert_eq!(
        list(&mut alice).await,
        (vec!["first".into()], vec![]),
        "after a graceful restart"
    );
    let form = submit(&[("room", &["dev@muc.localhost"]), ("nick", &["alice"])]);
    note(&command(&mut alice, HERALD, "push-room", None, None, Some(&form)).await);
    let form = submit(&[("jid", &["push.example.net"]), ("node", &["second"])]);
    let done = command(&mut alice, HERALD, "push-register", None, None, Some(&form)).await;
    herald.kill9();
    assert_eq!(note(&done), "Registered push.example.net node second.");

    let _herald = HeraldProcess::spawn(&config, &log);
    wait_until_answering(&mut alice, HERALD, T).await;
    assert_eq!(
        list(&mut alice).await,
        (
            vec!["first".into(), "second".into()],
            vec!["dev@muc.localhost".into()]
        ),
        "after kill -9:\n{}",
        file_tail(&log, 30)
    );
    alice.close().await;
    stop_servers(p).await;
}
