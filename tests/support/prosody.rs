//! A real Prosody (Debian's `prosody` + `mod_privilege` from `prosody-modules`) for integration tests.
//!
//! Each [`Prosody`] is an independent server: its own temp dir (config, data, pidfile, log) and its
//! own free loopback ports, so tests can run several in parallel. It runs in the foreground
//! (`prosody -F`) as a child process; [`Prosody::stop`] and `Drop` send SIGTERM, then SIGKILL. The child
//! is also started under `setpriv --pdeathsig KILL` from a dedicated thread that lives as long as the
//! server, so even a test binary that dies without unwinding (or a `Prosody` kept in a `static`) leaves
//! no `prosody` process behind.
//!
//! If the server cannot be started, [`ProsodyBuilder::start`] panics with the log tail: the tests fail,
//! they are never skipped. Install the server with `scripts/install-test-deps.sh`.
//!
//! Facts that cost time (Prosody 0.12.3):
//! - As root it refuses to run unless the config says `run_as_root = true`.
//! - A port that is already taken is only logged (`Failed to open server port`); the server keeps
//!   running without that listener. So readiness is read from the log (`Activated service 'c2s' on
//!   [127.0.0.1]:PORT`), and startup is retried on fresh ports after such a collision.
//! - `mod_privilege` must be enabled globally *and* in the `Component` section; `privileged_entities`
//!   goes under the `VirtualHost`. Debian installs it as
//!   `/usr/lib/prosody/modules/mod_privilege/mod_privilege.lua`, which is on the default plugin path.
//! - Readiness is also checked by one TCP connect to each listener, so every log starts with one
//!   "Client connected/disconnected" and one "Incoming Jabber component connection / component
//!   disconnected" that are not from the test.
//! - `prosodyctl --config FILE register USER HOST PASS` writes straight into `data_path` (internal
//!   storage) and takes ~50 ms; it works while the server runs.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`ProsodyBuilder::start`] waits for the listeners.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Prosody::stop`] waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Startup attempts (a fresh pair of ports each) when a port was taken between picking and binding.
const START_ATTEMPTS: usize = 4;

/// Where Debian and friends put prosody-modules' `mod_privilege`.
const MOD_PRIVILEGE_CANDIDATES: &[&str] = &[
    "/usr/lib/prosody/modules",
    "/usr/local/lib/prosody/modules",
    "/usr/share/prosody-modules",
    "/usr/lib/prosody-modules",
];

/// Builder for [`Prosody`]; `Prosody::builder()` has the defaults described on each method.
#[derive(Debug, Clone)]
pub struct ProsodyBuilder {
    domain: String,
    muc_domain: Option<String>,
    pubsub_domain: Option<String>,
    pubsub_admins: Vec<String>,
    component: Option<(String, String)>,
    extra_components: Vec<(String, String)>,
    privileges: Vec<(String, String)>,
    users: Vec<(String, String)>,
    modules: Vec<String>,
    extra_global: String,
    extra_vhost: String,
    log_level: String,
}

impl Default for ProsodyBuilder {
    fn default() -> Self {
        ProsodyBuilder {
            domain: "localhost".into(),
            muc_domain: Some("muc.localhost".into()),
            pubsub_domain: None,
            pubsub_admins: Vec::new(),
            component: Some(("herald.localhost".into(), "secret".into())),
            extra_components: Vec::new(),
            privileges: vec![
                ("roster".into(), "both".into()),
                ("message".into(), "outgoing".into()),
                ("presence".into(), "managed_entity".into()),
            ],
            users: Vec::new(),
            modules: Vec::new(),
            extra_global: String::new(),
            extra_vhost: String::new(),
            log_level: std::env::var("HERALD_TEST_PROSODY_LOG").unwrap_or_else(|_| "info".into()),
        }
    }
}

impl ProsodyBuilder {
    /// The user domain (`VirtualHost`). Default `localhost`.
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.into();
        self
    }

    /// The MUC service (`Component DOMAIN "muc"`), or `None` for none. Default `muc.localhost`.
    pub fn muc(mut self, muc_domain: Option<&str>) -> Self {
        self.muc_domain = muc_domain.map(Into::into);
        self
    }

    /// A pubsub service (`Component DOMAIN "pubsub"`, Prosody's `mod_pubsub`), or `None` for none.
    /// Default none. Nodes are not created on publish or subscribe: a [`Self::pubsub_admins`] user
    /// creates them (users without an affiliation may neither create nor publish, except to a node
    /// whose `pubsub#publish_model` is `open`).
    pub fn pubsub(mut self, pubsub_domain: Option<&str>) -> Self {
        self.pubsub_domain = pubsub_domain.map(Into::into);
        self
    }

    /// Bare JIDs written into the global `admins`: for `mod_pubsub` they are owners of every node
    /// (so they may create and configure nodes). Default none.
    pub fn pubsub_admins(mut self, jids: &[&str]) -> Self {
        self.pubsub_admins = jids.iter().map(|j| (*j).to_owned()).collect();
        self
    }

    /// One more XEP-0114 component (no privileges) with its secret, e.g. a test's own app server.
    pub fn extra_component(mut self, jid: &str, secret: &str) -> Self {
        self.extra_components.push((jid.into(), secret.into()));
        self
    }

    /// The XEP-0114 component (herald) and its secret. Default `herald.localhost` / `secret`.
    pub fn component(mut self, jid: &str, secret: &str) -> Self {
        self.component = Some((jid.into(), secret.into()));
        self
    }

    /// XEP-0356 permissions granted to the component, as `(access, type)` pairs written into
    /// `privileged_entities`. Default `roster=both, message=outgoing, presence=managed_entity`.
    /// An empty slice grants nothing (the component is not listed at all).
    pub fn privileges(mut self, perms: &[(&str, &str)]) -> Self {
        self.privileges = perms
            .iter()
            .map(|(a, t)| ((*a).to_owned(), (*t).to_owned()))
            .collect();
        self
    }

    /// Users registered before the server starts (more later with [`Prosody::register`]).
    pub fn users(mut self, users: &[(&str, &str)]) -> Self {
        self.users.extend(
            users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned())),
        );
        self
    }

    /// Extra global modules, e.g. `"vcard_legacy"` (adds `<x xmlns='vcard-temp:x:update'/>` to presences
    /// as Debian's default config does).
    pub fn modules(mut self, modules: &[&str]) -> Self {
        self.modules.extend(modules.iter().map(|m| (*m).to_owned()));
        self
    }

    /// Raw Lua lines appended to the global section, e.g. `component_conflict_resolve = "kick_old"`.
    pub fn extra_global(mut self, lua: &str) -> Self {
        self.extra_global.push_str(lua);
        self.extra_global.push('\n');
        self
    }

    /// Raw Lua lines appended to the `VirtualHost` section.
    pub fn extra_vhost(mut self, lua: &str) -> Self {
        self.extra_vhost.push_str(lua);
        self.extra_vhost.push('\n');
        self
    }

    /// Minimum log level (`debug`, `info`, ...). Default `info`, or `$HERALD_TEST_PROSODY_LOG`.
    /// `debug` logs every stanza: handy to read, but it slows Prosody down a lot under load.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// Writes the config, registers the users and starts the server; returns once the c2s and
    /// component listeners accept connections. Panics (with the log tail) if it cannot.
    pub async fn start(self) -> Prosody {
        let prosody_bin = which("prosody").unwrap_or_else(|| {
            panic!("`prosody` not found in PATH: run `bash scripts/install-test-deps.sh` first")
        });
        let plugin_path = find_mod_privilege().unwrap_or_else(|| {
            panic!(
                "mod_privilege.lua (package prosody-modules) not found under {MOD_PRIVILEGE_CANDIDATES:?} \
                 or $HERALD_PROSODY_PLUGIN_PATH: run `bash scripts/install-test-deps.sh` first"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("herald-prosody-")
            .tempdir()
            .expect("create temp dir for prosody");
        for sub in ["data", "certs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create prosody sub dir");
        }
        let (component_jid, component_secret) = self
            .component
            .clone()
            .unwrap_or_else(|| (String::new(), String::new()));
        let mut prosody = Prosody {
            domain: self.domain.clone(),
            muc_domain: self.muc_domain.clone().unwrap_or_default(),
            pubsub_domain: self.pubsub_domain.clone().unwrap_or_default(),
            extra_components: self.extra_components.clone(),
            component_jid,
            component_secret,
            c2s_port: 0,
            component_port: 0,
            config_path: dir.path().join("prosody.cfg.lua"),
            log_path: dir.path().join("prosody.log"),
            console_path: dir.path().join("console.log"),
            prosody_bin,
            plugin_path,
            builder: self,
            process: None,
            dir,
        };

        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let (c2s, component) = free_port_pair();
            prosody.c2s_port = c2s;
            prosody.component_port = component;
            prosody.write_config();
            if attempt == 1 {
                let users = prosody.builder.users.clone();
                for (user, password) in &users {
                    prosody.register(user, password);
                }
            }
            match prosody.launch().await {
                Ok(()) => return prosody,
                Err(StartError::PortTaken(msg)) => {
                    prosody.stop();
                    last_error = msg;
                    continue;
                }
                Err(StartError::Fatal(msg)) => {
                    let tail = prosody.log_tail();
                    prosody.stop();
                    panic!("prosody did not start: {msg}\n--- log tail ---\n{tail}");
                }
            }
        }
        let tail = prosody.log_tail();
        prosody.stop();
        panic!(
            "prosody did not start after {START_ATTEMPTS} attempts: {last_error}\n--- log tail ---\n{tail}"
        );
    }
}

enum StartError {
    /// A listener port was taken between picking it and Prosody binding it: retry on other ports.
    PortTaken(String),
    Fatal(String),
}

/// A running Prosody; stopped (and its temp dir removed) on drop.
pub struct Prosody {
    /// The user domain (`VirtualHost`), e.g. `localhost`.
    pub domain: String,
    /// The MUC service, e.g. `muc.localhost` (empty if none).
    pub muc_domain: String,
    /// The pubsub service, e.g. `pubsub.localhost` (empty if none).
    pub pubsub_domain: String,
    /// The other XEP-0114 components: `(jid, secret)`.
    pub extra_components: Vec<(String, String)>,
    /// The XEP-0114 component's JID, e.g. `herald.localhost` (empty if none).
    pub component_jid: String,
    pub component_secret: String,
    pub c2s_port: u16,
    pub component_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Temp dir holding config, `data/`, pidfile and logs. Removed on drop.
    pub dir: tempfile::TempDir,
    console_path: PathBuf,
    prosody_bin: PathBuf,
    plugin_path: Option<PathBuf>,
    builder: ProsodyBuilder,
    process: Option<Supervised>,
}

impl std::fmt::Debug for Prosody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prosody")
            .field("domain", &self.domain)
            .field("component_jid", &self.component_jid)
            .field("c2s_port", &self.c2s_port)
            .field("component_port", &self.component_port)
            .field("dir", &self.dir.path())
            .field("pid", &self.pid())
            .finish()
    }
}

impl Prosody {
    pub fn builder() -> ProsodyBuilder {
        ProsodyBuilder::default()
    }

    /// Starts a server with the defaults: `localhost`, `muc.localhost`, component `herald.localhost`
    /// (secret `secret`) with roster/message/presence privileges, no users.
    pub async fn start() -> Prosody {
        Prosody::builder().start().await
    }

    /// `"127.0.0.1:PORT"` of the XEP-0114 component listener.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// `"127.0.0.1:PORT"` of the c2s listener (plaintext, no TLS offered).
    pub fn c2s_addr(&self) -> String {
        format!("127.0.0.1:{}", self.c2s_port)
    }

    /// `user@domain`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Whether the server process is still alive.
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(|p| p.exited().is_none())
    }

    /// Creates (or overwrites the password of) `user@domain`. Panics if prosodyctl fails.
    pub fn register(&self, user: &str, password: &str) {
        let out = self.prosodyctl(&["register", user, &self.domain, password]);
        assert!(
            out.status.success(),
            "prosodyctl register {user} {} failed ({}):\n{}{}",
            self.domain,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes `user@domain`. Panics if prosodyctl fails.
    pub fn deluser(&self, user: &str) {
        let jid = self.jid(user);
        let out = self.prosodyctl(&["deluser", &jid]);
        assert!(
            out.status.success(),
            "prosodyctl deluser {jid} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `prosodyctl --config FILE ARGS...` and returns its output.
    pub fn prosodyctl(&self, args: &[&str]) -> std::process::Output {
        let bin = which("prosodyctl").unwrap_or_else(|| PathBuf::from("prosodyctl"));
        Command::new(bin)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run prosodyctl: {e}"))
    }

    /// The last lines of the server log (and of its stdout/stderr, where Lua errors end up).
    pub fn log_tail(&self) -> String {
        let mut out = tail_lines(&self.log_path, 80);
        let console = tail_lines(&self.console_path, 30);
        if !console.trim().is_empty() {
            let _ = write!(out, "--- stdout/stderr ---\n{console}");
        }
        out
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period). Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Stops and starts the server again with the same config, ports and data (users, rosters).
    /// Panics if it does not come back.
    pub async fn restart(&mut self) {
        self.stop();
        match self.launch().await {
            Ok(()) => {}
            Err(StartError::PortTaken(msg)) | Err(StartError::Fatal(msg)) => {
                let tail = self.log_tail();
                self.stop();
                panic!("prosody did not restart: {msg}\n--- log tail ---\n{tail}");
            }
        }
    }

    fn write_config(&self) {
        let b = &self.builder;
        let d = self.dir.path();
        let mut cfg = String::new();
        let q = lua_str;
        let _ = writeln!(cfg, "-- generated by tests/support/prosody.rs");
        let _ = writeln!(cfg, "run_as_root = true");
        let _ = writeln!(cfg, "data_path = {}", q(&d.join("data").to_string_lossy()));
        let _ = writeln!(
            cfg,
            "pidfile = {}",
            q(&d.join("prosody.pid").to_string_lossy())
        );
        let _ = writeln!(
            cfg,
            "log = {{ {{ levels = {{ min = {} }}, to = \"file\", filename = {} }} }}",
            q(&b.log_level),
            q(&self.log_path.to_string_lossy())
        );
        let _ = writeln!(
            cfg,
            "certificates = {}",
            q(&d.join("certs").to_string_lossy())
        );
        if let Some(p) = &self.plugin_path {
            let _ = writeln!(cfg, "plugin_paths = {{ {} }}", q(&p.to_string_lossy()));
        }
        // Loopback only, no TLS, no s2s, no HTTP.
        let _ = writeln!(cfg, "interfaces = {{ \"127.0.0.1\" }}");
        let _ = writeln!(cfg, "local_interfaces = {{ \"127.0.0.1\" }}");
        let _ = writeln!(cfg, "c2s_ports = {{ {} }}", self.c2s_port);
        let _ = writeln!(cfg, "c2s_interfaces = {{ \"127.0.0.1\" }}");
        let _ = writeln!(cfg, "c2s_direct_tls_ports = {{ }}");
        let _ = writeln!(cfg, "legacy_ssl_ports = {{ }}");
        let _ = writeln!(cfg, "component_ports = {{ {} }}", self.component_port);
        let _ = writeln!(cfg, "component_interfaces = {{ \"127.0.0.1\" }}");
        let _ = writeln!(cfg, "s2s_ports = {{ }}");
        let _ = writeln!(cfg, "s2s_direct_tls_ports = {{ }}");
        let _ = writeln!(cfg, "http_ports = {{ }}");
        let _ = writeln!(cfg, "https_ports = {{ }}");
        let _ = writeln!(cfg, "c2s_require_encryption = false");
        let _ = writeln!(cfg, "s2s_require_encryption = false");
        let _ = writeln!(cfg, "allow_unencrypted_plain_auth = true");
        let _ = writeln!(cfg, "authentication = \"internal_plain\"");
        let _ = writeln!(cfg, "storage = \"internal\"");
        let mut modules: Vec<String> =
            ["roster", "saslauth", "disco", "ping", "posix", "privilege"]
                .iter()
                .map(|m| (*m).to_owned())
                .collect();
        modules.extend(b.modules.iter().cloned());
        let _ = writeln!(
            cfg,
            "modules_enabled = {{ {} }}",
            modules.iter().map(|m| q(m)).collect::<Vec<_>>().join("; ")
        );
        let _ = writeln!(cfg, "modules_disabled = {{ \"s2s\" }}");
        if !b.pubsub_admins.is_empty() {
            let admins = b.pubsub_admins.iter().map(|j| q(j)).collect::<Vec<_>>();
            let _ = writeln!(cfg, "admins = {{ {} }}", admins.join("; "));
        }
        cfg.push_str(&b.extra_global);
        let _ = writeln!(cfg);
        let _ = writeln!(cfg, "VirtualHost {}", q(&self.domain));
        if !self.component_jid.is_empty() && !b.privileges.is_empty() {
            let perms = b
                .privileges
                .iter()
                .map(|(a, t)| format!("{a} = {}", q(t)))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                cfg,
                "    privileged_entities = {{ [{}] = {{ {perms} }} }}",
                q(&self.component_jid)
            );
        }
        cfg.push_str(&b.extra_vhost);
        if !self.component_jid.is_empty() {
            let _ = writeln!(cfg);
            let _ = writeln!(cfg, "Component {}", q(&self.component_jid));
            let _ = writeln!(cfg, "    component_secret = {}", q(&self.component_secret));
            let _ = writeln!(cfg, "    modules_enabled = {{ \"privilege\" }}");
        }
        if !self.muc_domain.is_empty() {
            let _ = writeln!(cfg);
            let _ = writeln!(cfg, "Component {} \"muc\"", q(&self.muc_domain));
        }
        if !self.pubsub_domain.is_empty() {
            let _ = writeln!(cfg);
            let _ = writeln!(cfg, "Component {} \"pubsub\"", q(&self.pubsub_domain));
            // The publisher's JID on each item, so a subscriber sees who published it.
            let _ = writeln!(cfg, "    expose_publisher = true");
        }
        for (jid, secret) in &self.extra_components {
            let _ = writeln!(cfg);
            let _ = writeln!(cfg, "Component {}", q(jid));
            let _ = writeln!(cfg, "    component_secret = {}", q(secret));
        }
        std::fs::write(&self.config_path, cfg).expect("write prosody config");
    }

    /// Starts the process and waits until both listeners are up (read from the log, then checked by
    /// connecting).
    async fn launch(&mut self) -> Result<(), StartError> {
        // Only log lines written by this run count (the log is kept across attempts and restarts).
        let log_start = std::fs::metadata(&self.log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console_path)
            .expect("open console log");
        let mut cmd;
        if let Some(setpriv) = which("setpriv") {
            // Dies with its parent thread (the supervisor thread below, i.e. with this process).
            cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"])
                .arg(&self.prosody_bin);
        } else {
            cmd = Command::new(&self.prosody_bin);
        }
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("-F")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console log"))
            .stderr(console);
        let process = Supervised::spawn(cmd).map_err(|e| {
            StartError::Fatal(format!("cannot spawn {}: {e}", self.prosody_bin.display()))
        })?;
        self.process = Some(process);

        let c2s_ready = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.c2s_port);
        let comp_ready = format!(
            "Activated service 'component' on [127.0.0.1]:{}",
            self.component_port
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.as_ref().and_then(|p| p.exited()) {
                return Err(StartError::Fatal(format!("prosody exited early: {status}")));
            }
            let log = self.log();
            let log = log.get(log_start..).unwrap_or("");
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("Failed to open server port"))
            {
                return Err(StartError::PortTaken(line.to_owned()));
            }
            if log.contains(&c2s_ready)
                && log.contains(&comp_ready)
                && port_open(self.c2s_port).await
                && port_open(self.component_port).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "listeners 127.0.0.1:{} (c2s) and 127.0.0.1:{} (component) not up within {:?}",
                    self.c2s_port, self.component_port, START_TIMEOUT
                )));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process owned by a dedicated thread. The thread spawns it (so `--pdeathsig` is tied to a
/// thread that lives exactly as long as the child), reaps it, and on request terminates it.
struct Supervised {
    pid: u32,
    stop_tx: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    exit: Arc<Mutex<Option<ExitStatus>>>,
}

impl Supervised {
    fn spawn(mut cmd: Command) -> std::io::Result<Supervised> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (pid_tx, pid_rx) = mpsc::channel::<std::io::Result<u32>>();
        let exit = Arc::new(Mutex::new(None));
        let exit2 = exit.clone();
        let thread = std::thread::Builder::new()
            .name("prosody-supervisor".into())
            .spawn(move || {
                let mut child: Child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = pid_tx.send(Err(e));
                        return;
                    }
                };
                let _ = pid_tx.send(Ok(child.id()));
                loop {
                    match stop_rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Ok(Some(status)) = child.try_wait() {
                                *exit2.lock().unwrap() = Some(status);
                                // Keep the thread until asked to stop; nothing left to kill.
                                let _ = stop_rx.recv();
                                return;
                            }
                        }
                    }
                }
                let status = terminate(&mut child);
                *exit2.lock().unwrap() = status;
            })?;
        let pid = pid_rx
            .recv()
            .map_err(|_| std::io::Error::other("supervisor thread died"))??;
        Ok(Supervised {
            pid,
            stop_tx,
            thread: Some(thread),
            exit,
        })
    }

    fn exited(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap()
    }

    fn stop(&mut self) {
        let _ = self.stop_tx.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM, wait up to [`TERM_GRACE`], then SIGKILL; always reaps.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Two distinct free loopback ports (both bound at once, then released).
fn free_port_pair() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let pa = a.local_addr().unwrap().port();
    let pb = b.local_addr().unwrap().port();
    (pa, pb)
}

async fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// `Some(dir)` to add to `plugin_paths`, `None` if mod_privilege is on Prosody's default path.
/// Panics via the caller when it is nowhere.
fn find_mod_privilege() -> Option<Option<PathBuf>> {
    let has = |dir: &Path| {
        dir.join("mod_privilege/mod_privilege.lua").is_file()
            || dir.join("mod_privilege.lua").is_file()
    };
    if let Some(dir) = std::env::var_os("HERALD_PROSODY_PLUGIN_PATH").map(PathBuf::from) {
        if has(&dir) {
            return Some(Some(dir));
        }
    }
    let default = Path::new("/usr/lib/prosody/modules");
    if has(default) {
        return Some(None);
    }
    MOD_PRIVILEGE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|d| has(d))
        .map(Some)
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    out.push('\n');
    out
}

/// A Lua string literal.
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
