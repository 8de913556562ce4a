//! A real ejabberd (Debian's `ejabberd` 23.01) for integration tests.
//!
//! Each [`Ejabberd`] is an independent server: its own temp dir (config, Mnesia dir, log) and its
//! own free loopback ports for c2s, the XEP-0114 component `herald.localhost` (secret `secret`,
//! granted presence `managed_entity`, message `outgoing` and roster `both` by `mod_privilege`)
//! and `mod_http_api` on `/api` (every command allowed from loopback by IP). It runs in the
//! foreground as a child process; `Drop` kills it. The start panics with the log tail when the
//! server does not come up: the tests fail, they are never skipped. Install it with
//! `scripts/install-test-deps.sh`.
//!
//! Facts that cost time (ejabberd 23.01, Erlang/OTP 25):
//! - Debian's `ejabberdctl` always switches to the `ejabberd` user, so the VM is started directly:
//!   `erl -noinput -mnesia dir '"DIR"' -s ejabberd` with `EJABBERD_CONFIG_PATH`,
//!   `EJABBERD_LOG_PATH` and `ERL_LIBS` (the directory holding `ejabberd-*/ebin`). Without
//!   `-sname` the node is `nonode@nohost`: no distribution, no epmd, no port to pick for it, and
//!   every command goes over the HTTP API instead (users are registered with `register`).
//! - Readiness: the log says `Start accepting TCP connections at 127.0.0.1:PORT` per listener;
//!   a fresh server is up in about 1.5 s.
//! - `s2s_access: none`, or ejabberd tries s2s (with a DNS lookup) to the component's domain
//!   while the component is down. `connected_users_info` needs `mod_admin_extra`.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`Ejabberd::start`] waits for the listeners.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Where Debian puts ejabberd's Erlang applications.
const ERL_LIBS: &str = "/usr/lib/x86_64-linux-gnu";

/// A running ejabberd; killed (and its temp dir removed) on drop.
pub struct Ejabberd {
    pub domain: String,
    pub component_jid: String,
    pub component_secret: String,
    pub c2s_port: u16,
    pub component_port: u16,
    pub http_port: u16,
    pub log_path: PathBuf,
    pub dir: tempfile::TempDir,
    console_path: PathBuf,
    child: Option<Child>,
}

impl Ejabberd {
    /// Starts a server for `localhost` and registers `users` (`(name, password)`).
    pub async fn start(users: &[(&str, &str)]) -> Ejabberd {
        let erl = which("erl").unwrap_or_else(|| {
            panic!("`erl` not found in PATH: run `bash scripts/install-test-deps.sh` first")
        });
        let has_ejabberd = std::fs::read_dir(ERL_LIBS)
            .map(|dir| {
                dir.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("ejabberd-"))
            })
            .unwrap_or(false);
        assert!(
            has_ejabberd,
            "no ejabberd-*/ under {ERL_LIBS}: run `bash scripts/install-test-deps.sh` first"
        );
        let dir = tempfile::Builder::new()
            .prefix("herald-ejabberd-")
            .tempdir()
            .expect("create temp dir for ejabberd");
        let [c2s_port, component_port, http_port] = free_ports();
        let mut server = Ejabberd {
            domain: "localhost".into(),
            component_jid: "herald.localhost".into(),
            component_secret: "secret".into(),
            c2s_port,
            component_port,
            http_port,
            log_path: dir.path().join("ejabberd.log"),
            console_path: dir.path().join("console.log"),
            dir,
            child: None,
        };
        let config = server.dir.path().join("ejabberd.yml");
        std::fs::write(&config, server.config()).expect("write ejabberd config");
        let console = std::fs::File::create(&server.console_path).expect("console log");
        let mnesia = format!("\"{}\"", server.dir.path().join("db").display());
        let mut cmd = match which("setpriv") {
            // Killed with the test process even if it dies without unwinding.
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&erl);
                c
            }
            None => Command::new(&erl),
        };
        cmd.args(["-noinput", "-mnesia", "dir", &mnesia, "-s", "ejabberd"])
            .env("EJABBERD_CONFIG_PATH", &config)
            .env("EJABBERD_LOG_PATH", &server.log_path)
            .env("ERL_LIBS", ERL_LIBS)
            .env("ERL_CRASH_DUMP", server.dir.path().join("erl_crash.dump"))
            .current_dir(server.dir.path())
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console log"))
            .stderr(console);
        server.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", erl.display())),
        );
        server.wait_ready().await;
        for (user, password) in users {
            server.register(user, password).await;
        }
        server
    }

    fn config(&self) -> String {
        let mut c = String::new();
        let _ = write!(
            c,
            r#"hosts:
  - {domain}
loglevel: info
log_rotate_count: 0
s2s_access: none
auth_method: internal
auth_password_format: plain
certfiles: []
listen:
  - port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
  - port: {component}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      {jid}:
        password: {secret}
  - port: {http}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
access_rules:
  local:
    allow: all
  c2s:
    allow: all
api_permissions:
  "loopback admin":
    who:
      ip: 127.0.0.0/8
    what: "*"
modules:
  mod_admin_extra: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_privilege:
    presence:
      managed_entity: all
    roster:
      both: all
    message:
      outgoing: all
"#,
            domain = self.domain,
            c2s = self.c2s_port,
            component = self.component_port,
            http = self.http_port,
            jid = self.component_jid,
            secret = self.component_secret,
        );
        c
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let ready: Vec<String> = [self.c2s_port, self.component_port, self.http_port]
            .iter()
            .map(|p| format!("Start accepting TCP connections at 127.0.0.1:{p} "))
            .collect();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "ejabberd exited early ({status})\n--- log tail ---\n{}",
                    self.log_tail()
                );
            }
            let log = self.log();
            if ready.iter().all(|line| log.contains(line.as_str())) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "ejabberd's listeners are not up within {START_TIMEOUT:?}\n--- log tail ---\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// `"127.0.0.1:PORT"` of the XEP-0114 component listener.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// `"127.0.0.1:PORT"` of the c2s listener (plaintext).
    pub fn c2s_addr(&self) -> String {
        format!("127.0.0.1:{}", self.c2s_port)
    }

    /// The base URL of `mod_http_api`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.http_port)
    }

    /// `user@domain`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// Runs an admin API command; panics unless it answers 200.
    pub async fn api(&self, command: &str, args: serde_json::Value) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/{command}", self.api_url()))
            .json(&args)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ejabberd API {command}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "ejabberd API {command} answered {status}: {body}"
        );
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
    }

    /// Creates `user@domain`.
    pub async fn register(&self, user: &str, password: &str) {
        self.api(
            "register",
            serde_json::json!({"user": user, "host": self.domain, "password": password}),
        )
        .await;
    }

    /// The full JIDs ejabberd has sessions for (`connected_users_info`).
    pub async fn sessions(&self) -> Vec<String> {
        let v = self
            .api("connected_users_info", serde_json::json!({}))
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["jid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the log and of the VM's own output.
    pub fn log_tail(&self) -> String {
        let mut out = tail_lines(&self.log_path, 80);
        let console = tail_lines(&self.console_path, 30);
        if !console.trim().is_empty() {
            let _ = write!(out, "--- stdout/stderr ---\n{console}");
        }
        out
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Mnesia is in a temp dir thrown away with it: no graceful stop needed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three distinct free loopback ports (all bound at once, then released).
fn free_ports() -> [u16; 3] {
    let l: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let port = |i: usize| l[i].local_addr().expect("local addr").port();
    [port(0), port(1), port(2)]
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    out.push('\n');
    out
}
