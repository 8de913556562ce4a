//! herald itself, as the integration tests run it: its configuration ([`Config`]), an in-process
//! instance with a shutdown trigger ([`Herald`]), its logs ([`init_test_tracing`], [`Logs`],
//! [`DumpOnPanic`], and all of a test's scaffolding at once: [`TestEnv`]) and the events it sends
//! ([`is_event_message`], [`event_json`]).
//!
//! Self-contained (only the `herald` crate and the dev-dependencies), so that it can be included
//! both as `support::herald` (with `mod support;`) and by path next to `support/fake_server.rs`
//! (`#[path = "support/herald.rs"] mod herald_support;`).

#![allow(dead_code)]

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::app::RunError;
use herald::config::Settings;
use minidom::Element;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The component JID the fake-server tests configure.
pub const JID: &str = "herald.localhost";
/// The component secret the fake-server tests configure.
pub const SECRET: &str = "s3cret";
/// Namespace of the `<event/>` element in herald's event messages.
pub const NS_FLUX: &str = "flux:xmpp";
const NS_COMPONENT: &str = "jabber:component:accept";

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/// A `component.toml` for a test: `[component]` (jid, secret, server, plus extra keys), `[store]`
/// (flushed every 10 ms), an optional `[presence]`, and the sinks.
#[derive(Clone, Debug)]
pub struct Config {
    component: Vec<String>,
    store: PathBuf,
    presence: Vec<String>,
    xmpp_sink: bool,
    webhooks: Vec<String>,
    http: Option<String>,
}

impl Config {
    pub fn new(jid: &str, secret: &str, server: impl Display, store: &Path) -> Config {
        Config {
            component: vec![
                format!("jid = \"{jid}\""),
                format!("secret = \"{secret}\""),
                format!("server = \"{server}\""),
            ],
            store: store.to_owned(),
            presence: Vec::new(),
            xmpp_sink: false,
            webhooks: Vec::new(),
            http: None,
        }
    }

    /// Adds `key = value` to `[component]`; `value` is TOML.
    pub fn component(mut self, key: &str, value: &str) -> Config {
        self.component.push(format!("{key} = {value}"));
        self
    }

    /// Reconnects after 50–200 ms instead of herald's default backoff.
    pub fn fast_reconnect(self) -> Config {
        self.component("reconnect_min", "\"50ms\"")
            .component("reconnect_max", "\"200ms\"")
    }

    /// Adds `lines` (TOML) to `[presence]`.
    pub fn presence(mut self, lines: &str) -> Config {
        self.presence.push(lines.to_owned());
        self
    }

    /// Adds the XMPP sink: server user `world@localhost`.
    pub fn xmpp_sink(mut self) -> Config {
        self.xmpp_sink = true;
        self
    }

    /// Sets `[http]` to `lines` (TOML). Without it the listener is on a free loopback port, so
    /// tests running at once never compete for herald's default port.
    pub fn http(mut self, lines: &str) -> Config {
        self.http = Some(lines.to_owned());
        self
    }

    /// Adds a `[[sinks.webhook]]` whose body is `body` (TOML).
    pub fn webhook(mut self, body: &str) -> Config {
        self.webhooks.push(body.to_owned());
        self
    }

    pub fn toml(&self) -> String {
        let mut toml = format!(
            "[component]\n{}\n\n[store]\npath = '{}'\nflush_interval = \"10ms\"\n",
            self.component.join("\n"),
            self.store.display()
        );
        if !self.presence.is_empty() {
            toml.push_str(&format!("\n[presence]\n{}\n", self.presence.join("\n")));
        }
        if self.xmpp_sink {
            toml.push_str("\n[[sinks.xmpp]]\ndomain = \"localhost\"\nserver_user = \"world\"\n");
        }
        for body in &self.webhooks {
            toml.push_str(&format!("\n[[sinks.webhook]]\n{}\n", body.trim_end()));
        }
        let http = self.http.as_deref().unwrap_or("listen = \"127.0.0.1:0\"");
        toml.push_str(&format!("\n[http]\n{http}\n"));
        toml
    }

    /// The loaded settings; panics (with the TOML) if herald rejects them.
    pub fn settings(&self) -> Settings {
        let toml = self.toml();
        herald::config::load_str(&toml)
            .unwrap_or_else(|e| panic!("test config rejected:\n{e}\n{toml}"))
    }
}

// ------------------------------------------------------------------------------------------------
// herald in-process
// ------------------------------------------------------------------------------------------------

/// herald's public `app::run` in a task on the test's runtime, with the trigger of its shutdown
/// future.
pub struct Herald {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
}

impl Herald {
    pub fn start(settings: Settings) -> Herald {
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(herald::app::run(settings, async move {
            let _ = signal.await;
        }));
        Herald {
            shutdown: Some(shutdown),
            task,
        }
    }

    /// `app::run_with` with extra IQ handlers; returns once herald has started, with its
    /// observers (presence read handle, connection status, store).
    pub async fn start_with_handlers(
        settings: Settings,
        handlers: herald::xmpp::iq_handlers::IqHandlers,
    ) -> (Herald, herald::app::Observers) {
        init_test_tracing();
        let (shutdown, signal) = oneshot::channel::<()>();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(herald::app::run_with(
            settings,
            handlers,
            async move {
                let _ = signal.await;
            },
            move |o| {
                let _ = tx.send(o);
            },
        ));
        let observers = rx.await.expect("herald starts");
        let herald = Herald {
            shutdown: Some(shutdown),
            task,
        };
        (herald, observers)
    }

    /// [`init_test_tracing`], then [`Herald::start`].
    pub fn start_with_test_log(settings: Settings) -> Herald {
        init_test_tracing();
        Herald::start(settings)
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Fires the shutdown future and returns what `app::run` returned; panics if it does not
    /// return within `within` or if the task panicked.
    pub async fn stop(mut self, within: Duration) -> Result<(), RunError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(within, &mut self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("the herald task panicked or was cancelled: {e}"),
            Err(_) => {
                self.task.abort();
                panic!("app::run did not return within {within:?} of the shutdown signal");
            }
        }
    }

    /// [`Herald::stop`], and panics unless `app::run` returned `Ok`.
    pub async fn stop_ok(self, within: Duration) {
        self.stop(within)
            .await
            .expect("app::run returns Ok after a graceful shutdown");
    }
}

impl Herald {
    /// [`Herald::start`] through `app::run_with`; returns once herald has started, with its
    /// observers (e.g. where its HTTP listener is bound).
    pub async fn start_observed(settings: Settings) -> (Herald, herald::app::Observers) {
        Herald::start_with_handlers(settings, herald::xmpp::iq_handlers::IqHandlers::new()).await
    }
}

/// Stops servers (or anything whose `Drop` blocks) off the runtime thread, so that the clients
/// still connected to them can answer the server's stream close meanwhile (Prosody waits for them
/// before it exits; blocking the runtime in `Drop` would cost the whole SIGTERM grace period).
pub async fn stop_servers<T: Send + 'static>(servers: T) {
    tokio::task::spawn_blocking(move || drop(servers))
        .await
        .expect("stopping the servers");
}

// ------------------------------------------------------------------------------------------------
// Logs
// ------------------------------------------------------------------------------------------------

/// A global subscriber writing to the test output, filtered by env `HERALD_TEST_LOG` (off by
/// default). Only the first call of a test binary installs it.
pub fn init_test_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_TEST_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// herald's log lines of one test, captured by a thread-local subscriber ([`Logs::install`]):
/// `#[tokio::test]` runs every task of a test on its own thread.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures everything logged on this thread (hence by every task of this test's runtime)
    /// until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The log lines for which `pred` holds, so far.
    pub fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.text().lines().filter(|l| pred(l)).count()
    }

    /// Waits until at least `n` log lines satisfy `pred`; false after `timeout`.
    pub async fn wait_for_lines(
        &self,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count_lines(&pred) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a log line for which `pred` holds, and returns it.
    pub async fn wait_for_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.text().lines().find(|l| pred(l)) {
                return Some(line.to_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The last `n` lines of the file at `path` (empty if it cannot be read).
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Prints herald's log and the tail of each server log if the test panics (always with env
/// `HERALD_TEST_DUMP` set). Declare it after the servers (it must drop first, while their temp
/// dirs still exist).
pub struct DumpOnPanic {
    logs: Logs,
    server_logs: Vec<PathBuf>,
}

impl DumpOnPanic {
    pub fn new<P: AsRef<Path>>(logs: &Logs, server_logs: &[P]) -> Self {
        DumpOnPanic {
            logs: logs.clone(),
            server_logs: server_logs
                .iter()
                .map(|p| p.as_ref().to_path_buf())
                .collect(),
        }
    }
}

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("HERALD_TEST_DUMP").is_none() {
            return;
        }
        eprintln!("===== herald log =====\n{}", self.logs.text());
        for path in &self.server_logs {
            eprintln!(
                "===== prosody log tail ({}) =====\n{}",
                path.display(),
                file_tail(path, 60)
            );
        }
    }
}

/// What every test running herald in-process against real servers sets up first: herald's log
/// captured on this thread ([`Logs::install`]), printed with the tail of each server log if the
/// test panics ([`DumpOnPanic`]), and a fresh store directory. Create it after the servers, so
/// that it is dropped before them (while their log files still exist).
pub struct TestEnv {
    // Fields drop in this order: the dump first, while the log capture is still installed.
    _dump: DumpOnPanic,
    _log_guard: tracing::subscriber::DefaultGuard,
    pub logs: Logs,
    pub store: tempfile::TempDir,
}

impl TestEnv {
    pub fn new<P: AsRef<Path>>(server_logs: &[P]) -> TestEnv {
        let logs = Logs::default();
        let log_guard = logs.install();
        TestEnv {
            _dump: DumpOnPanic::new(&logs, server_logs),
            _log_guard: log_guard,
            logs,
            store: tempfile::tempdir().expect("a temporary store directory"),
        }
    }

    /// The store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

// ------------------------------------------------------------------------------------------------
// Events
// ------------------------------------------------------------------------------------------------

/// A `<message/>` (component namespace) carrying an `<event xmlns='flux:xmpp'/>`.
pub fn is_event_message(el: &Element) -> bool {
    el.is("message", NS_COMPONENT) && el.has_child("event", NS_FLUX)
}

/// The JSON of the `<event xmlns='flux:xmpp'/>` in an event message.
pub fn event_json(msg: &Element) -> Value {
    let text = msg
        .get_child("event", NS_FLUX)
        .expect("<event xmlns='flux:xmpp'/>")
        .text();
    serde_json::from_str(&text).expect("the event is JSON")
}

/// The `seq` of an event.
pub fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}"))
}

/// `(args.user, args.presence)` of an event.
pub fn user_presence(e: &Value) -> (String, String) {
    (
        e["args"]["user"].as_str().unwrap_or_default().to_owned(),
        e["args"]["presence"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// `n` transitions, each of which changes availability: users `{prefix}0..{prefix}{users}` cycle
/// between available (even rounds) and unavailable (odd rounds). Returns `(full JID, presence)`.
pub fn transitions(n: usize, users: usize, prefix: &str) -> Vec<(String, &'static str)> {
    (0..n)
        .map(|i| {
            let user = format!("{prefix}{}@localhost/r", i % users);
            let presence = if (i / users) % 2 == 0 {
                "available"
            } else {
                "unavailable"
            };
            (user, presence)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// The real binary
// ------------------------------------------------------------------------------------------------

/// A running `herald` binary (`CARGO_BIN_EXE_herald`, logging to a file); killed (SIGKILL) and reaped on drop, so no test leaves one behind.
pub struct HeraldProcess {
    child: Child,
    log: PathBuf,
}

impl HeraldProcess {
    pub fn spawn(config: &Path, log: &Path) -> HeraldProcess {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the herald log");
        // Set by cargo for integration tests (the benchmarks that include this file never spawn it).
        let Some(binary) = option_env!("CARGO_BIN_EXE_herald") else {
            panic!("only integration tests, which cargo builds the herald binary for, spawn it");
        };
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,herald=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn herald");
        HeraldProcess {
            child,
            log: log.to_owned(),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL herald");
        self.child.wait().expect("reap herald");
    }

    /// SIGTERM, then waits (up to `within`) for a successful exit.
    pub async fn terminate(&mut self, within: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "herald exited with {status} after SIGTERM:\n{}",
                    file_tail(&self.log, 80)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
