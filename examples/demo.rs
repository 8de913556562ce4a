//! herald end to end on this machine: a local Prosody (with mod_privilege, its MUC and its pubsub
//! service), herald attached to it, a server user `world` that receives the presence events, and
//! a few demo users coming and going. Every event is printed as JSON, exactly as the server user
//! receives it. Then a group-chat push: alice registers Prosody's pubsub service as her push app
//! server and watches a room; while she is away, bob writes in the room, and the notification
//! herald publishes is printed as the app server receives it.
//!
//! Run it with `scripts/demo.sh` (installs Prosody when missing), or
//! `cargo run --example demo` when Prosody and prosody-modules are installed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::client::C2s;
use support::group_push::{register, watch_room};
use support::groupchat::{create_room, say, wait_occupant, RoomConfig};
use support::prosody::Prosody;
use support::pubsub::{Subscriber, PUBSUB};
use tokio::sync::oneshot;

const PASSWORD: &str = "demo-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald::telemetry::init(herald::telemetry::LogFormat::Text);
    let users = [
        ("world", PASSWORD),
        ("alice", PASSWORD),
        ("bob", PASSWORD),
        ("carol", PASSWORD),
        ("appsrv", "papp"),
    ];
    eprintln!("== starting a local Prosody on loopback ports");
    let server = Prosody::builder()
        .users(&users)
        .pubsub(Some(PUBSUB))
        .pubsub_admins(&["appsrv@localhost"])
        .start()
        .await;

    // carol is online before herald starts: herald learns about her from Prosody's snapshot.
    let mut carol = C2s::login(&server.c2s_addr(), "carol@localhost/tablet", PASSWORD).await;
    carol
        .send_presence(Some("dnd"), Some("in a meeting"), 0)
        .await;

    let store = tempfile::tempdir()?;
    let config = format!(
        r#"
[component]
jid = "{jid}"
secret = "{secret}"
server = "{server}"

[store]
path = "{store}"

[presence]
changes = "all"

[[sinks.xmpp]]
domain = "localhost"
server_user = "world"

[push]
with_sender = true
coalesce = "0s"

[http]
listen = ""
"#,
        jid = server.component_jid,
        secret = server.component_secret,
        server = server.component_addr(),
        store = store.path().display(),
    );
    let settings = herald::config::load_str(&config)
        .map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;

    // The server user: a real XMPP client that prints every event it receives.
    let mut world = C2s::login(&server.c2s_addr(), "world@localhost/backend", PASSWORD).await;
    world.send_presence(None, None, 0).await;

    eprintln!("== starting herald ({})", server.component_jid);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let herald = tokio::spawn(herald::app::run(settings, async {
        let _ = stop_rx.await;
    }));

    let printer = tokio::spawn(async move {
        let mut printed = 0;
        while let Some(msg) = world
            .next_message_with("flux:xmpp", "event", Duration::from_secs(4))
            .await
        {
            if let Some(event) = msg.get_child("event", "flux:xmpp") {
                println!("{}", event.text());
                printed += 1;
            }
        }
        printed
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("== alice logs in on her phone and her laptop");
    let c2s = server.c2s_addr();
    let mut alice_phone = C2s::login(&c2s, "alice@localhost/phone", PASSWORD).await;
    alice_phone.send_presence(None, Some("hello"), 5).await;
    let mut alice_laptop = C2s::login(&c2s, "alice@localhost/laptop", PASSWORD).await;
    alice_laptop.send_presence(Some("chat"), None, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    eprintln!("== alice's phone goes away, bob logs in");
    alice_phone
        .send_presence(Some("away"), Some("brb"), 5)
        .await;
    let bob = C2s::login(&c2s, "bob@localhost/pc", PASSWORD).await;
    let mut bob = bob;
    bob.send_presence(None, None, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    eprintln!("== alice's laptop logs out, bob's network drops, carol closes her app");
    alice_laptop.send_unavailable().await;
    bob.drop_tcp();
    carol.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice_phone.close().await;

    let printed = printer.await?;
    if printed == 0 {
        anyhow::bail!("no events were received");
    }
    let pushed = group_chat_push(&server).await;
    let _ = stop_tx.send(());
    herald.await??;
    eprintln!("== {printed} events received by world@localhost, {pushed} push published; herald stopped cleanly");
    if pushed == 0 {
        anyhow::bail!("no push was published");
    }
    Ok(())
}

/// alice's phone registers Prosody's pubsub service as its push app server and watches a room;
/// bob writes there while alice is offline; prints the notification the app server receives.
async fn group_chat_push(server: &Prosody) -> usize {
    let c2s = server.c2s_addr();
    let room = "lunch@muc.localhost";
    let node = "alice-phone";
    eprintln!("== the push app server opens node {node} on {PUBSUB}; bob creates {room}");
    let mut app_server = Subscriber::login(server).await;
    app_server.open_node(node).await;
    let mut bob = C2s::login(&c2s, "bob@localhost/pc", PASSWORD).await;
    bob.send_presence(None, None, 0).await;
    create_room(&mut bob, room, "bob", RoomConfig::default()).await;

    eprintln!(
        "== alice registers her phone with herald (push-register) and watches {room} (push-room)"
    );
    let mut alice = C2s::login(&c2s, "alice@localhost/phone", PASSWORD).await;
    register(&mut alice, PUBSUB, node, Some("s3cret")).await;
    watch_room(&mut alice, room, "alice", "always").await;
    if wait_occupant(&mut bob, room, "herald", Duration::from_secs(10))
        .await
        .is_none()
    {
        eprintln!("herald did not join {room}");
        return 0;
    }
    eprintln!("== herald joined {room}; alice goes offline, bob writes");
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    say(&mut bob, room, "lunch at noon?").await;
    let pushed = match app_server
        .next_notification(node, Duration::from_secs(10))
        .await
    {
        Some(n) => {
            let summary = serde_json::json!({
                "push": {
                    "app_server": PUBSUB,
                    "node": n.node,
                    "publisher": n.publisher,
                    "message-count": n.summary.count(),
                    "last-message-sender": n.summary.sender(),
                    "last-message-body": n.summary.body(),
                }
            });
            println!("{summary}");
            1
        }
        None => {
            eprintln!("no push reached {PUBSUB} node {node}");
            0
        }
    };
    bob.close().await;
    app_server.close().await;
    pushed
}
