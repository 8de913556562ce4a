//! herald end to end on this machine: a local Prosody (with mod_privilege), herald attached to it,
//! a server user `world` that receives the presence events, and a few demo users coming and
//! going. Every event is printed as JSON, exactly as the server user receives it.
//!
//! Run it with `scripts/demo.sh` (installs Prosody when missing), or
//! `cargo run --example demo` when Prosody and prosody-modules are installed.

#[path = "../tests/support/client.rs"]
mod client;
#[path = "../tests/support/prosody.rs"]
mod prosody;

use std::time::Duration;

use client::C2s;
use prosody::Prosody;
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
    ];
    eprintln!("== starting a local Prosody on loopback ports");
    let server = Prosody::builder().users(&users).start().await;

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
    let _ = stop_tx.send(());
    herald.await??;
    eprintln!("== {printed} events received by world@localhost; herald stopped cleanly");
    if printed == 0 {
        anyhow::bail!("no events were received");
    }
    Ok(())
}
