//! Proves the test harness works against a real Prosody: the launcher (config, users, ports, stop),
//! the c2s client (presence, chat, clean close, TCP drop), and that the generated config grants the
//! XEP-0356 privileges herald relies on (advertisement, forwarded presences, snapshot, server-made
//! unavailable).
//!
//! Needs `prosody` + `prosody-modules`: `bash scripts/install-test-deps.sh`. Without them these tests
//! fail (they are never skipped).

mod support;

use std::time::Duration;

use futures::StreamExt;
use minidom::Element;
use support::client::{C2s, NS_CLIENT};
use support::prosody::Prosody;
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Component, Stanza};

const T: Duration = Duration::from_secs(5);
const NS_PRIVILEGE: &str = "urn:xmpp:privilege:2";

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn launcher_runs_independent_servers_and_stops_them() {
    let (mut a, b) = tokio::join!(
        Prosody::builder().users(&[("alice", "pw")]).start(),
        Prosody::start()
    );
    assert_ne!(a.c2s_port, b.c2s_port);
    assert_ne!(a.component_port, b.component_port);
    assert_ne!(a.dir.path(), b.dir.path());
    assert_eq!(a.domain, "localhost");
    assert_eq!(a.component_jid, "herald.localhost");
    assert!(a.is_running() && b.is_running());
    assert!(a.log_tail().contains("Activated service 'component'"));

    // Users from the builder and registered later can both log in; a wrong password is refused.
    a.register("bob", "secret-b");
    let alice = C2s::login(&a.c2s_addr(), "alice@localhost/r1", "pw").await;
    let bob = C2s::login(&a.c2s_addr(), "bob@localhost/r1", "secret-b").await;
    assert_eq!(alice.jid(), "alice@localhost/r1");
    let err = C2s::try_login(&a.c2s_addr(), "alice@localhost/r2", "wrong")
        .await
        .unwrap_err();
    assert!(err.contains("not-authorized"), "{err}");
    // Users are per server.
    assert!(C2s::try_login(&b.c2s_addr(), "alice@localhost", "pw")
        .await
        .is_err());
    alice.close().await;
    bob.drop_tcp();

    let pid = a.pid().unwrap();
    assert!(process_alive(pid));
    a.stop();
    assert!(
        !process_alive(pid),
        "prosody {pid} still running after stop"
    );
    assert!(!a.is_running());
    // Stopping twice is fine; `b` is stopped by Drop.
    a.stop();
}

#[tokio::test]
async fn clients_exchange_presence_and_chat() {
    let p = Prosody::builder()
        .users(&[("alice", "pa"), ("bob", "pb")])
        .start()
        .await;
    let mut phone = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    let mut laptop = C2s::login(&p.c2s_addr(), "alice@localhost/laptop", "pa").await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;

    laptop.send_presence(None, Some("at work"), 5).await;
    phone
        .send_presence(Some("away"), Some("on the move"), 1)
        .await;
    // A user's available resources see each other's presence.
    let pres = laptop
        .next_presence_from("alice@localhost/phone", T)
        .await
        .expect("laptop sees phone's presence");
    assert_eq!(pres.get_child("show", NS_CLIENT).unwrap().text(), "away");
    assert_eq!(
        pres.get_child("status", NS_CLIENT).unwrap().text(),
        "on the move"
    );

    bob.send_presence(None, None, 0).await;
    bob.send_chat("alice@localhost/laptop", "hello laptop")
        .await;
    let msg = laptop
        .next_message_with(NS_CLIENT, "body", T)
        .await
        .expect("laptop gets bob's chat");
    assert_eq!(msg.attr("from"), Some("bob@localhost/desk"));
    assert_eq!(msg.attr("type"), Some("chat"));
    assert_eq!(
        msg.get_child("body", NS_CLIENT).unwrap().text(),
        "hello laptop"
    );
    // The phone got nothing addressed to the laptop.
    assert!(phone
        .next_message_with(NS_CLIENT, "body", Duration::from_millis(300))
        .await
        .is_none());

    // Raw XML works too.
    bob.send_xml("<message to='alice@localhost/phone' type='chat'><body>raw</body></message>")
        .await;
    let msg = phone.next_message_with(NS_CLIENT, "body", T).await.unwrap();
    assert_eq!(msg.get_child("body", NS_CLIENT).unwrap().text(), "raw");

    // The phone closes its stream: the laptop sees it go unavailable.
    phone.close().await;
    let gone = laptop
        .next_presence_from("alice@localhost/phone", T)
        .await
        .expect("unavailable after close");
    assert_eq!(gone.attr("type"), Some("unavailable"));

    laptop.send_unavailable().await;
    assert!(laptop.is_connected());
    laptop.drop_tcp();
    bob.close().await;
}

async fn next_stanza(comp: &mut Component<TcpServerConnector>) -> Option<Element> {
    match tokio::time::timeout(T, comp.next()).await {
        Ok(Some(stanza)) => Some(match stanza {
            Stanza::Message(m) => Element::from(m),
            Stanza::Presence(p) => Element::from(p),
            Stanza::Iq(iq) => Element::from(iq),
        }),
        _ => None,
    }
}

/// The next presence the component gets, skipping anything else.
async fn next_presence(comp: &mut Component<TcpServerConnector>) -> Element {
    loop {
        let el = next_stanza(comp)
            .await
            .expect("component: no presence within timeout");
        if el.name() == "presence" {
            return el;
        }
    }
}

#[tokio::test]
async fn component_is_privileged_and_gets_forwarded_presences() {
    let p = Prosody::builder()
        .users(&[("alice", "pa"), ("carol", "pc"), ("dave", "pd")])
        .start()
        .await;
    // carol is online before the component connects: she comes as a snapshot.
    let mut carol = C2s::login(&p.c2s_addr(), "carol@localhost/harness", "pc").await;
    carol.send_presence(Some("dnd"), Some("first"), 0).await;

    let mut comp = Component::new_plaintext(
        &p.component_jid,
        &p.component_secret,
        DnsConfig::addr(&p.component_addr()),
        Timeouts::tight(),
    )
    .await
    .unwrap_or_else(|e| panic!("component handshake failed: {e}\n{}", p.log_tail()));

    // 1. The first stanza is the privilege advertisement.
    let adv = next_stanza(&mut comp)
        .await
        .expect("no privilege advertisement");
    assert_eq!(adv.name(), "message", "{}", String::from(&adv));
    assert_eq!(adv.attr("from"), Some("localhost"));
    let privilege = adv
        .get_child("privilege", NS_PRIVILEGE)
        .unwrap_or_else(|| panic!("no <privilege/>: {}", String::from(&adv)));
    let perms: Vec<(String, String)> = privilege
        .children()
        .filter(|c| c.is("perm", NS_PRIVILEGE))
        .map(|c| {
            (
                c.attr("access").unwrap_or_default().to_owned(),
                c.attr("type").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for want in [
        ("presence", "managed_entity"),
        ("roster", "both"),
        ("message", "outgoing"),
    ] {
        assert!(
            perms.iter().any(|(a, t)| a == want.0 && t == want.1),
            "missing perm {want:?} in {perms:?}"
        );
    }

    // 2. Snapshot of carol, with <delay/>.
    let snap = next_presence(&mut comp).await;
    assert_eq!(snap.attr("from"), Some("carol@localhost/harness"));
    assert!(snap.has_child("delay", "urn:xmpp:delay"));

    // 3. Live presences from full JIDs: available, changed, explicit unavailable.
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    alice.send_presence(Some("chat"), Some("hello"), 3).await;
    let pres = next_presence(&mut comp).await;
    assert_eq!(pres.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(pres.attr("to"), Some("herald.localhost"));
    assert_eq!(pres.attr("type"), None);
    let ns = pres.ns();
    assert_eq!(pres.get_child("show", ns.as_str()).unwrap().text(), "chat");
    assert_eq!(pres.get_child("priority", ns.as_str()).unwrap().text(), "3");
    alice.send_presence(Some("away"), Some("brb"), 3).await;
    let pres = next_presence(&mut comp).await;
    assert_eq!(pres.get_child("show", ns.as_str()).unwrap().text(), "away");
    alice.send_unavailable().await;
    let pres = next_presence(&mut comp).await;
    assert_eq!(pres.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(pres.attr("type"), Some("unavailable"));

    // 4. Prosody makes up the unavailable when a client closes its stream or its TCP drops.
    carol.close().await;
    let pres = next_presence(&mut comp).await;
    assert_eq!(pres.attr("from"), Some("carol@localhost/harness"));
    assert_eq!(pres.attr("type"), Some("unavailable"));

    let mut dave = C2s::login(&p.c2s_addr(), "dave@localhost/harness", "pd").await;
    dave.send_presence(None, None, 0).await;
    assert_eq!(
        next_presence(&mut comp).await.attr("from"),
        Some("dave@localhost/harness")
    );
    dave.drop_tcp();
    let pres = next_presence(&mut comp).await;
    assert_eq!(pres.attr("from"), Some("dave@localhost/harness"));
    assert_eq!(pres.attr("type"), Some("unavailable"));

    alice.close().await;
    let _ = comp.send_end().await;
}

#[tokio::test]
async fn privileges_can_be_narrowed() {
    // Only presence: the advertisement lists exactly that.
    let p = Prosody::builder()
        .component("push.localhost", "s3cret")
        .privileges(&[("presence", "managed_entity")])
        .muc(None)
        .start()
        .await;
    let mut comp = Component::new_plaintext(
        "push.localhost",
        "s3cret",
        DnsConfig::addr(&p.component_addr()),
        Timeouts::tight(),
    )
    .await
    .expect("component handshake");
    let adv = next_stanza(&mut comp).await.expect("advertisement");
    let perms: Vec<String> = adv
        .get_child("privilege", NS_PRIVILEGE)
        .expect("<privilege/>")
        .children()
        .map(|c| {
            format!(
                "{}={}",
                c.attr("access").unwrap_or(""),
                c.attr("type").unwrap_or("")
            )
        })
        .collect();
    assert_eq!(perms, vec!["presence=managed_entity".to_owned()]);
    let _ = comp.send_end().await;

    // A wrong secret is refused.
    assert!(Component::new_plaintext(
        "push.localhost",
        "wrong",
        DnsConfig::addr(&p.component_addr()),
        Timeouts::tight(),
    )
    .await
    .is_err());
}
