//! herald's HTTP listener as an operator and a backend use it: a real HTTP client (reqwest)
//! against the listener on a `:0` port, with herald on a real Prosody 0.12 (+ mod_privilege)
//! where the check needs a server.
//!
//! - `/readyz` is 503 before the handshake (a gate holds the connection to Prosody) and 200 once
//!   the snapshot is over; `/healthz` is 200 all along.
//! - After known traffic, `/metrics` parses as the Prometheus text format and its counters equal
//!   what happened: events by source, queued and delivered per sink, a retry and a dead letter.
//! - `/v1/presence` matches the users online, before and after a logout, with the `seq` of the
//!   last event; a missing or wrong token gets 401 and a log line without the token.
//! - Without a token the presence API is 404; with `listen = ""` herald binds nothing.
//!
//! Needs `prosody` + `prosody-modules` (`bash scripts/install-test-deps.sh`); without them the
//! Prosody tests fail, never skip.

mod support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald::app::Observers;
use herald::config::Settings;
use minidom::Element;
use serde_json::Value;
use support::client::C2s;
use support::herald::{event_json, stop_servers, Config, DumpOnPanic, Herald, Logs};
use support::prosody::Prosody;
use support::server_user::ServerUser;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use webhook_receiver::{Answer, Reply, WebhookReceiver};

const T: Duration = Duration::from_secs(10);
const STOP: Duration = Duration::from_secs(15);
const TOKEN: &str = "test-token-0123456789";

type World = ServerUser<Value>;

fn list(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "\n  #{} {} {} {}",
                e["seq"], e["source"], e["args"]["user"], e["args"]["presence"]
            )
        })
        .collect()
}

fn parse_event(msg: &Element) -> Value {
    event_json(msg)
}

async fn login_world(p: &Prosody) -> World {
    ServerUser::login(p, parse_event, list).await
}

/// `cfg` with an `[http]` section.
fn with_http(cfg: &Config, http: &str) -> Settings {
    cfg.clone().http(http).settings()
}

fn base(o: &Observers) -> String {
    format!("http://{}", o.http.expect("the HTTP listener is bound"))
}

async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap())
}

async fn get_json(url: &str, token: Option<&str>) -> (u16, Value) {
    let (code, body) = get(url, token).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
    (code, json)
}

/// Waits until the presence owner reports the current login's snapshot over.
async fn wait_ready(o: &Observers) {
    let mut r = o.presence.readiness();
    tokio::time::timeout(T, r.wait_for(|r| r.epoch >= 1 && r.snapshot_done))
        .await
        .expect("the snapshot ends")
        .expect("the presence owner runs");
}

/// A TCP forwarder to `upstream` that holds every connection until the gate opens.
async fn gate(upstream: String) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (open, opened) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut opened = opened.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if opened.wait_for(|o| *o).await.is_err() {
                    return;
                }
                if let Ok(mut out) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, open)
}

// ------------------------------------------------------------------------------------------------
// Prometheus text, parsed strictly enough
// ------------------------------------------------------------------------------------------------

/// Parses `/metrics`: with prometheus-parse, after checking that every sample's family was
/// declared (`# HELP` and `# TYPE`) before it and every value is a number.
fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let mut helped = BTreeSet::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge"].contains(&kind),
                "unexpected type: {line}"
            );
            assert!(helped.contains(&name), "TYPE before HELP: {line}");
            typed.insert(name);
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(typed.contains(name), "sample without TYPE: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

async fn scrape(base: &str) -> (prometheus_parse::Scrape, String) {
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.unwrap();
    (parse_metrics(&text), text)
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn readyz_is_503_before_the_handshake_and_200_after_the_snapshot() {
    let p = Prosody::builder().users(&[("world", "pw")]).start().await;
    let logs = Logs::default();
    let _log_guard = logs.install();
    let _dump = DumpOnPanic::new(&logs, &[&p.log_path]);
    let store = tempfile::tempdir().unwrap();
    let (proxy, open) = gate(p.component_addr()).await;
    let cfg = Config::new(&p.component_jid, &p.component_secret, proxy, store.path());
    let (herald, o) = Herald::start_observed(with_http(&cfg, "listen = \"127.0.0.1:0\"")).await;
    let base = base(&o);

    let (code, health) = get_json(&format!("{base}/healthz"), None).await;
    assert_eq!((code, &health["healthy"]), (200, &Value::Bool(true)));
    let (code, body) = get_json(&format!("{base}/readyz"), None).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["stream"]["ok"], false);
    assert_eq!(body["snapshot"]["ok"], false);
    assert_eq!(
        body["presence_permission"]["domains"]["localhost"],
        Value::Null
    );
    let problem = body["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("stream") && problem.contains("down"),
        "{body}"
    );

    open.send_replace(true);
    wait_ready(&o).await;
    let (code, body) = get_json(&format!("{base}/readyz"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["stream"]["epoch"], 1);
    assert_eq!(
        body["presence_permission"]["domains"]["localhost"],
        "managed_entity"
    );
    assert_eq!(body["problems"], serde_json::json!([]));
    let (code, _) = get_json(&format!("{base}/healthz"), None).await;
    assert_eq!(code, 200);

    herald.stop_ok(STOP).await;
    // The listener is gone with herald.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
    stop_servers(p).await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let p = Prosody::builder()
        .users(&[("world", "pw"), ("alice", "pa"), ("bob", "pb")])
        .start()
        .await;
    let logs = Logs::default();
    let _log_guard = logs.install();
    let _dump = DumpOnPanic::new(&logs, &[&p.log_path]);
    let store = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start().await;
    // The first request is refused for good (dead letter), the second is retried once.
    receiver.script_all([Reply::status(400), Reply::status(503)]);

    // alice is online before herald starts: herald learns her from the snapshot.
    let mut alice = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    alice.send_presence(None, None, 0).await;

    let cfg = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        store.path(),
    )
    .xmpp_sink()
    .webhook(&format!(
        "name = \"game\"\nurl = \"{}\"\nretry_min = \"50ms\"\nretry_max = \"100ms\"\ntimeout = \"2s\"\n",
        receiver.url("/hook")
    ));
    let (herald, o) = Herald::start_observed(with_http(&cfg, "listen = \"127.0.0.1:0\"")).await;
    let base = base(&o);
    wait_ready(&o).await;
    // alice's snapshot event is alone in the first request.
    assert!(
        receiver.wait_for(T, |r| !r.is_empty()).await,
        "no webhook request"
    );

    let mut world = login_world(&p).await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    bob.send_presence(None, None, 0).await;
    world
        .wait_until("alice, world and bob online", T, |g| g.len() >= 3)
        .await;
    bob.send_unavailable().await;
    world.wait_until("bob offline", T, |g| g.len() >= 4).await;
    let events = world.got.clone();
    assert_eq!(events.len(), 4, "{}", list(&events));

    let reqs = receiver.requests();
    let dead: usize = reqs
        .iter()
        .filter(|r| r.answer == Answer::Status(400))
        .map(|r| r.events().len())
        .sum();
    assert_eq!(dead, 1, "the first request carried alice's snapshot event");
    assert!(
        receiver
            .wait_for_accepted_seqs(events.len() - dead, T)
            .await,
        "the webhook did not accept the other events"
    );
    let mut by_source: BTreeMap<String, f64> = BTreeMap::new();
    for e in &events {
        *by_source
            .entry(e["source"].as_str().unwrap().to_owned())
            .or_default() += 1.0;
    }
    assert_eq!(by_source.get("snapshot"), Some(&1.0), "{}", list(&events));

    // The XMPP sink counts a delivery when the server acknowledges it (a ping round trip).
    let xmpp = "xmpp:world@localhost";
    let deadline = Instant::now() + T;
    let (m, text) = loop {
        let (m, text) = scrape(&base).await;
        if value(&m, "herald_sink_delivered_total", &[("sink", xmpp)]) == Some(4.0)
            || Instant::now() > deadline
        {
            break (m, text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for metric in herald::metrics::ALL {
        assert!(
            text.contains(&format!("# HELP {}", metric.name)),
            "{} missing:\n{text}",
            metric.name
        );
    }
    for source in ["live", "snapshot", "resync", "liveness"] {
        assert_eq!(
            value(&m, "herald_events_emitted_total", &[("source", source)]),
            Some(by_source.get(source).copied().unwrap_or(0.0)),
            "events of source {source}:\n{text}"
        );
    }
    let n = events.len() as f64;
    let sink = |name: &str, sink: &str| value(&m, name, &[("sink", sink)]);
    assert_eq!(sink("herald_sink_queued_total", "game"), Some(n), "{text}");
    assert_eq!(sink("herald_sink_queued_total", xmpp), Some(n), "{text}");
    assert_eq!(sink("herald_sink_delivered_total", xmpp), Some(n), "{text}");
    assert_eq!(
        sink("herald_sink_delivered_total", "game"),
        Some(receiver.accepted_events().len() as f64),
        "{text}"
    );
    assert_eq!(sink("herald_sink_delivered_total", "game"), Some(n - 1.0));
    assert_eq!(sink("herald_sink_dead_lettered_total", "game"), Some(1.0));
    assert_eq!(sink("herald_sink_dead_lettered_total", xmpp), Some(0.0));
    assert_eq!(
        sink("herald_sink_retries_total", "game"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sink("herald_sink_backlog", "game"), Some(0.0));
    assert_eq!(sink("herald_sink_backlog", xmpp), Some(0.0));
    assert_eq!(
        sink("herald_sink_oldest_event_age_seconds", "game"),
        Some(0.0)
    );
    assert_eq!(value(&m, "herald_connection_up", &[]), Some(1.0));
    assert_eq!(
        value(&m, "herald_connection_reconnects_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "herald_privilege",
            &[
                ("domain", "localhost"),
                ("privilege", "presence"),
                ("access", "managed_entity")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    // alice/phone and world's resource.
    assert_eq!(
        value(&m, "herald_presence_resources_online", &[]),
        Some(2.0)
    );
    assert!(value(&m, "herald_presences_received_total", &[]).unwrap() >= n);
    assert!(value(&m, "herald_store_size_bytes", &[]).unwrap() > 0.0);

    herald.stop_ok(STOP).await;
    drop(o);

    // `herald dead-letters`, no subcommand: the dead letter is listed.
    let file = store.path().join("component.toml");
    std::fs::write(&file, cfg.toml()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["dead-letters", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sink game: 0 queued, 1 dead letters"),
        "{stdout}"
    );
    assert!(stdout.contains("HTTP 400"), "{stdout}");
    drop((world, alice));
    stop_servers(p).await;
}

fn jids(table: &Value) -> BTreeSet<String> {
    table["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jid"].as_str().unwrap().to_owned())
        .collect()
}

fn last_seq(world: &World) -> u64 {
    world.got.last().and_then(|e| e["seq"].as_u64()).unwrap()
}

#[tokio::test]
async fn presence_api_matches_who_is_online_before_and_after_a_logout() {
    let p = Prosody::builder()
        .users(&[("world", "pw"), ("alice", "pa"), ("bob", "pb")])
        .start()
        .await;
    let logs = Logs::default();
    let _log_guard = logs.install();
    let _dump = DumpOnPanic::new(&logs, &[&p.log_path]);
    let store = tempfile::tempdir().unwrap();
    let cfg = Config::new(
        &p.component_jid,
        &p.component_secret,
        p.component_addr(),
        store.path(),
    )
    .xmpp_sink();
    let (herald, o) = Herald::start_observed(with_http(
        &cfg,
        &format!("listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\""),
    ))
    .await;
    let base = base(&o);
    wait_ready(&o).await;
    let all = format!("{base}/v1/presence");

    let (code, table) = get_json(&all, Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(jids(&table), BTreeSet::new());

    let mut world = login_world(&p).await;
    let mut phone = C2s::login(&p.c2s_addr(), "alice@localhost/phone", "pa").await;
    phone
        .send_presence(Some("away"), Some("on the train"), 5)
        .await;
    let mut laptop = C2s::login(&p.c2s_addr(), "alice@localhost/laptop", "pa").await;
    laptop.send_presence(None, None, 0).await;
    let mut bob = C2s::login(&p.c2s_addr(), "bob@localhost/desk", "pb").await;
    bob.send_presence(Some("dnd"), Some("busy"), -1).await;
    world.wait_until("four online", T, |g| g.len() >= 4).await;

    let (code, table) = get_json(&all, Some(TOKEN)).await;
    assert_eq!(code, 200);
    let online: BTreeSet<String> = [
        world.c2s.jid(),
        "alice@localhost/phone",
        "alice@localhost/laptop",
        "bob@localhost/desk",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(jids(&table), online);
    assert_eq!(table["seq"].as_u64(), Some(last_seq(&world)));
    let phone_json = table["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["jid"] == "alice@localhost/phone")
        .unwrap();
    assert_eq!(phone_json["show"], "away");
    assert_eq!(phone_json["status"], "on the train");
    assert_eq!(phone_json["priority"], 5);
    assert!(
        chrono::DateTime::parse_from_rfc3339(phone_json["since"].as_str().unwrap()).is_ok(),
        "{phone_json}"
    );

    let (code, alice) = get_json(&format!("{all}/Alice@localhost"), Some(TOKEN)).await;
    assert_eq!(code, 200, "{alice}");
    assert_eq!(alice["jid"], "alice@localhost");
    assert_eq!(
        jids(&alice),
        BTreeSet::from([
            "alice@localhost/laptop".into(),
            "alice@localhost/phone".into()
        ])
    );

    // alice's phone logs out.
    phone.send_unavailable().await;
    world
        .wait_until("alice/phone offline", T, |g| g.len() >= 5)
        .await;
    let (_, table) = get_json(&all, Some(TOKEN)).await;
    let mut expected = online.clone();
    expected.remove("alice@localhost/phone");
    assert_eq!(jids(&table), expected);
    assert_eq!(table["seq"].as_u64(), Some(last_seq(&world)));
    // Then the laptop: alice is offline.
    laptop.send_unavailable().await;
    world.wait_until("alice offline", T, |g| g.len() >= 6).await;
    let (code, alice) = get_json(&format!("{all}/alice@localhost"), Some(TOKEN)).await;
    assert_eq!(code, 404, "{alice}");
    assert_eq!(alice["error"], "offline");
    assert_eq!(alice["seq"].as_u64(), Some(last_seq(&world)));
    let (code, _) = get(&format!("{all}/alice@localhost%2Fphone"), Some(TOKEN)).await;
    assert_eq!(code, 400, "a full JID is not a user");

    // Missing, wrong or non-bearer credentials.
    let wrong = "wrong-token-SHOULD-NOT-BE-LOGGED";
    for url in [all.clone(), format!("{all}/bob@localhost")] {
        assert_eq!(get(&url, None).await.0, 401);
        assert_eq!(get(&url, Some(wrong)).await.0, 401);
        let resp = reqwest::Client::new()
            .get(&url)
            .header("authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let text = logs.text();
    assert!(text.contains("presence API request refused"), "{text}");
    assert!(text.contains("wrong bearer token"), "{text}");
    assert!(!text.contains(wrong), "the token was logged");

    herald.stop_ok(STOP).await;
    drop((world, bob));
    stop_servers(p).await;
}

/// A component listener that accepts TCP connections and never answers: herald stays before
/// its handshake.
async fn silent_server() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn without_a_token_the_presence_api_is_404_and_the_rest_is_served() {
    let server = silent_server().await;
    let store = tempfile::tempdir().unwrap();
    let cfg = Config::new(
        "herald.localhost",
        "s3cret",
        server.local_addr().unwrap(),
        store.path(),
    );
    let (herald, o) = Herald::start_observed(with_http(&cfg, "listen = \"127.0.0.1:0\"")).await;
    let base = base(&o);
    assert_eq!(get(&format!("{base}/v1/presence"), None).await.0, 404);
    assert_eq!(
        get(&format!("{base}/v1/presence"), Some(TOKEN)).await.0,
        404
    );
    assert_eq!(
        get(&format!("{base}/v1/presence/a@localhost"), Some(TOKEN))
            .await
            .0,
        404
    );
    assert_eq!(get(&format!("{base}/healthz"), None).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz"), None).await.0, 503);
    let (m, _) = scrape(&base).await;
    assert_eq!(value(&m, "herald_connection_up", &[]), Some(0.0));
    herald.stop_ok(STOP).await;
}

#[tokio::test]
async fn listen_empty_binds_nothing() {
    let server = silent_server().await;
    let store = tempfile::tempdir().unwrap();
    let cfg = Config::new(
        "herald.localhost",
        "s3cret",
        server.local_addr().unwrap(),
        store.path(),
    );
    let (herald, o) = Herald::start_observed(with_http(&cfg, "listen = \"\"")).await;
    assert_eq!(o.http, None);
    herald.stop_ok(STOP).await;
    drop(o);

    // The binary, as an operator runs it: with the listener off it has no listening socket;
    // with it on (port 0) exactly one, so the count does see a listener.
    for (http, listening) in [("listen = \"\"", 0), ("listen = \"127.0.0.1:0\"", 1)] {
        let file = store.path().join("component.toml");
        std::fs::write(&file, cfg.clone().http(http).toml()).unwrap();
        assert_eq!(listening_sockets_of_herald(&file), listening, "with {http}");
    }
    drop(server);
}

/// Starts the herald binary with `config`, waits for "herald started", counts its listening TCP
/// sockets, and kills it.
fn listening_sockets_of_herald(config: &Path) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("herald started") {
            break;
        }
    }
    assert!(
        seen.contains("herald started"),
        "herald did not start:\n{seen}"
    );
    let pid = child.id();
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut listening = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st == 0A is LISTEN; column 9 is the inode.
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                listening += 1;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    listening
}
