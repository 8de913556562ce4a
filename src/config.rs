//! Configuration: the `component.toml` schema, layered loading and validation.
//!
//! Loading happens in two stages, so that the rest of herald never re-checks configuration:
//!
//! 1. **Raw** ([`Config`] and its sections): what serde reads from the layers *defaults ← TOML
//!    file ← environment*. Defaults are serde defaults on the raw structs; environment variables
//!    are `HERALD_<SECTION>__<KEY>` (`__` nests, e.g. `HERALD_COMPONENT__SECRET`,
//!    `HERALD_PRESENCE__CHANGES=all`). Every struct denies unknown keys, durations are strings
//!    such as `"30s"` or `"1m 30s"`.
//! 2. **Validated** ([`Settings`]): typed values ([`BareJid`], resolved secret, resolved server
//!    user, parsed webhook URL and headers) whose invariants hold (e.g. `keepalive <
//!    read_timeout / 2`, sink names unique).
//!
//! Both stages report *every* problem they find, each with the key it concerns, as
//! [`ConfigErrors`]: an operator fixes a file in one round, and `herald check-config` prints the
//! same list. Each section is deserialised on its own so that a typo in `[presence]` does not hide
//! a missing `component.jid`; a section that failed to deserialise is not validated further (its
//! defaults would only produce noise).
//!
//! Environment variables without `__` (such as a `HERALD_CONFIG` or `HERALD_LOG` read by the
//! command line) are not configuration keys and are ignored. Values of string-typed keys (jid,
//! secret, secret_file, server, store path) are taken verbatim from the environment, so a numeric
//! secret like `0123` stays a string; other values are parsed like TOML values (`all`, `30s`,
//! `16777216`, `["a@example.org"]`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use xmpp_parsers::jid::{BareJid, DomainPart, NodePart};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "HERALD_";
/// Environment variable giving the default `server_user` of `[[sinks.xmpp]]` entries.
pub const WORLD_SERVER_USERNAME: &str = "WORLD_SERVER_USERNAME";
/// `server_user` when neither the config nor [`WORLD_SERVER_USERNAME`] names one.
pub const DEFAULT_SERVER_USER: &str = "server";

/// The top-level sections, in documentation order.
const SECTIONS: &[&str] = &["component", "store", "presence", "sinks", "admin"];
/// Keys whose environment values are strings verbatim (never parsed as numbers or booleans).
const ENV_STRING_KEYS: &[&str] = &[
    "component.jid",
    "component.secret",
    "component.secret_file",
    "component.server",
    "store.path",
];
/// Name of the environment layer in figment metadata; used to say where a bad value came from.
const ENV_SOURCE: &str = "`HERALD_` environment variable(s)";
const MIN_CACHE_BYTES: u64 = 1024 * 1024;
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Largest `batch_max` of a webhook sink.
pub const MAX_WEBHOOK_BATCH: usize = 10_000;
/// Longest sink name (it names the sink's queue in the store and appears in every log line).
const MAX_SINK_NAME: usize = 128;
/// Headers a webhook sink sets itself (or HTTP framing needs): not configurable in `headers`.
/// Every `X-Herald-…` name is reserved as well.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Loads `path` (TOML) over the defaults, applies `HERALD_…` environment overrides, validates.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigProblem::new(
            "",
            format!("cannot read {}: {}", path.display(), io_message(&e)),
        )])
    })?;
    load_layers(&text, Some(path))
}

/// Like [`load`], with the TOML text given directly (tests, the demo).
pub fn load_str(toml: &str) -> Result<Settings, ConfigErrors> {
    load_layers(toml, None)
}

fn load_layers(toml: &str, origin: Option<&Path>) -> Result<Settings, ConfigErrors> {
    let figment = Figment::new()
        .merge(Toml::string(toml))
        .merge(EnvLayer::new());
    let world_server_username = std::env::var(WORLD_SERVER_USERNAME).ok();
    from_figment(&figment, origin, world_server_username.as_deref())
}

/// Deserialises each section of `figment` and validates the result, collecting all problems.
fn from_figment(
    figment: &Figment,
    origin: Option<&Path>,
    world_server_username: Option<&str>,
) -> Result<Settings, ConfigErrors> {
    let top: Dict = figment
        .extract()
        .map_err(|e| ConfigErrors(figment_problems(e, origin)))?;
    let mut problems = Problems::default();
    for key in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        let from = origin_note(figment.find_metadata(key), &format!("{key}__…"));
        problems.push(
            key.as_str(),
            format!(
                "unknown key (expected one of: {}){from}",
                SECTIONS.join(", ")
            ),
        );
    }
    let mut sections = Sections {
        figment,
        top: &top,
        origin,
        failed: Vec::new(),
        problems,
    };
    let raw = Config {
        component: sections.read("component"),
        store: sections.read("store"),
        presence: sections.read("presence"),
        sinks: sections.read("sinks"),
        admin: sections.read("admin"),
    };
    let Sections {
        failed,
        mut problems,
        ..
    } = sections;
    match Settings::from_raw_with_env(raw, world_server_username) {
        Ok(settings) if problems.0.is_empty() => Ok(settings),
        Ok(_) => Err(ConfigErrors(problems.0)),
        Err(ConfigErrors(found)) => {
            // A section that failed to deserialise was replaced by its defaults: its validation
            // problems would only be noise.
            let in_failed_section = |p: &ConfigProblem| {
                failed.iter().any(|s| {
                    p.key == *s
                        || p.key.starts_with(&format!("{s}."))
                        || p.key.starts_with(&format!("{s}["))
                })
            };
            problems
                .0
                .extend(found.into_iter().filter(|p| !in_failed_section(p)));
            Err(ConfigErrors(problems.0))
        }
    }
}

/// Deserialises the top-level sections one by one, so that each reports its own first error.
struct Sections<'a> {
    figment: &'a Figment,
    top: &'a Dict,
    origin: Option<&'a Path>,
    /// Sections that failed to deserialise.
    failed: Vec<&'static str>,
    problems: Problems,
}

impl Sections<'_> {
    /// The section `name`, its defaults when absent or broken (then `problems` says why).
    fn read<T: DeserializeOwned + Default>(&mut self, name: &'static str) -> T {
        match self.top.get(name) {
            None => return T::default(),
            Some(Value::Dict(..)) => {}
            Some(other) => {
                self.failed.push(name);
                self.problems.push(
                    name,
                    format!("expected a table [{name}], found {}", other.to_actual()),
                );
                return T::default();
            }
        }
        // Not `extract_inner`: figment 0.10 appends its path to the error's path instead of
        // prepending it.
        match self.figment.focus(name).extract() {
            Ok(section) => section,
            Err(errors) => {
                self.failed.push(name);
                let errors = errors.into_iter().map(|mut e| {
                    e.path.insert(0, name.to_owned());
                    e
                });
                self.problems
                    .0
                    .extend(figment_problems(errors, self.origin));
                T::default()
            }
        }
    }
}

/// The `HERALD_…` layer: figment's [`Env`] for the variables, with string-typed keys kept verbatim.
struct EnvLayer(Env);

impl EnvLayer {
    fn new() -> Self {
        EnvLayer(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.0.iter() {
            let value = if ENV_STRING_KEYS.contains(&key.as_str()) {
                Value::from(raw)
            } else {
                match raw.parse::<Value>() {
                    Ok(value) => value,
                    Err(never) => match never {},
                }
            };
            if let Value::Dict(_, nested) = figment::util::nest(key.as_str(), value) {
                merge_dicts(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Merges `from` into `into`, recursing into tables present in both.
fn merge_dicts(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, nested)) => {
                merge_dicts(existing, nested)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything wrong with a configuration; `Display` prints one `key: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// One problem: the dotted key it concerns (`sinks.xmpp[1].domain`; empty when it concerns the
/// file as a whole, e.g. a TOML syntax error) and what is wrong, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl ConfigErrors {
    /// The first problem about exactly `key`.
    pub fn for_key(&self, key: &str) -> Option<&ConfigProblem> {
        self.0.iter().find(|p| p.key == key)
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems during validation.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }
}

/// Turns figment's errors (one per failure) into problems keyed like the TOML file.
fn figment_problems(
    errors: impl IntoIterator<Item = figment::Error>,
    origin: Option<&Path>,
) -> Vec<ConfigProblem> {
    use figment::error::Kind;
    errors
        .into_iter()
        .map(|e| {
            let mut key = render_path(&e.path);
            let message = match &e.kind {
                Kind::UnknownField(_, []) => "unknown key".to_owned(),
                Kind::UnknownField(_, expected) => {
                    format!("unknown key (expected one of: {})", expected.join(", "))
                }
                Kind::MissingField(field) => {
                    key = join_key(&key, field);
                    "required key is missing".to_owned()
                }
                Kind::UnknownVariant(found, expected) => {
                    format!(
                        "unknown value {found:?} (expected one of: {})",
                        expected.join(", ")
                    )
                }
                // Never echo what was found under a key named `secret`, or in a webhook's
                // `headers`: it may be the secret (or a bearer token).
                Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected)
                    if e.path.last().is_some_and(|k| k == "secret")
                        || e.path.iter().any(|k| k == "headers") =>
                {
                    format!("expected {expected}")
                }
                Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
                    let hint = if expected == "a duration" {
                        " such as \"30s\", \"100ms\" or \"1m 30s\""
                    } else {
                        ""
                    };
                    format!("expected {expected}{hint}, found {found}")
                }
                Kind::Message(message) if e.path.is_empty() => match origin {
                    Some(path) => format!("{}: {}", path.display(), one_line(message)),
                    None => one_line(message),
                },
                Kind::Message(message) => one_line(message),
                other => one_line(&other.to_string()),
            };
            let env_name = e.path.join("__");
            let from = origin_note(e.metadata.as_ref(), &env_name);
            ConfigProblem::new(key, format!("{message}{from}"))
        })
        .collect()
}

/// `" (from HERALD_…)"` when `metadata` is the environment layer, else nothing.
fn origin_note(metadata: Option<&Metadata>, env_name: &str) -> String {
    match metadata {
        Some(md) if md.name == ENV_SOURCE => {
            format!(" (from {ENV_PREFIX}{})", env_name.to_ascii_uppercase())
        }
        _ => String::new(),
    }
}

/// `["sinks", "xmpp", "1", "domain"]` → `sinks.xmpp[1].domain`.
fn render_path(path: &[String]) -> String {
    path.iter()
        .fold(String::new(), |key, part| join_key(&key, part))
}

fn join_key(key: &str, part: &str) -> String {
    if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
        format!("{key}[{part}]")
    } else if key.is_empty() {
        part.to_owned()
    } else {
        format!("{key}.{part}")
    }
}

/// Squeezes a multi-line message (TOML parse errors quote the offending line) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_snippet_line(line))
        .collect::<Vec<_>>()
        .join(": ")
}

/// `|`, `1 | [component`, `|    ^`: the source excerpt of a TOML parse error.
fn is_snippet_line(line: &str) -> bool {
    line.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// `No such file or directory`, without the `(os error 2)` suffix.
fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared value types
// ---------------------------------------------------------------------------------------------

/// A secret (component password, webhook HMAC key, webhook header value): `Debug` prints
/// `<redacted>`, there is no `Display`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Secret(secret)
    }

    /// The secret itself; call only where it is used (the handshake, signing), never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which presence changes produce an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Changes {
    /// Only a resource becoming available or unavailable.
    #[default]
    Availability,
    /// Also show, status and priority changes.
    All,
}

/// How herald learns users' presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceSource {
    /// XEP-0356 privileged entity (`presence = "managed_entity"`): Prosody, ejabberd.
    #[default]
    Privilege,
    /// herald in each user's roster with subscription `from` (servers without XEP-0356, e.g.
    /// MongooseIM).
    Subscription,
}

/// Whether the server sends a presence snapshot after each (re)connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Ask the server who it is (disco#info identity): Prosody → `always`, ejabberd → `never`;
    /// any other server: trust a snapshot when one arrives (at least one `<delay/>` presence).
    #[default]
    Auto,
    /// The server always sends one (Prosody): resources missing from it went offline while
    /// herald was away, even when it is empty.
    Always,
    /// The server never sends one (ejabberd): keep the table as it is across reconnects.
    Never,
}

impl SnapshotMode {
    /// What `auto` means for a server that names itself `name` in its disco#info identity:
    /// Prosody always sends a snapshot, ejabberd never does, anything else is judged by
    /// whether a snapshot arrives.
    pub fn for_server(name: &str) -> SnapshotMode {
        let name = name.to_ascii_lowercase();
        if name.contains("prosody") {
            SnapshotMode::Always
        } else if name.contains("ejabberd") {
            SnapshotMode::Never
        } else {
            SnapshotMode::Auto
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw schema: what the layers deserialise into (defaults are serde defaults)
// ---------------------------------------------------------------------------------------------

/// The whole `component.toml`, as deserialised; [`Settings::from_raw`] validates it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[component]`: the connection to the XMPP server. Required (`jid`, and `secret` or
    /// `secret_file`).
    pub component: ComponentConfig,
    /// `[store]`: the on-disk state. Default: all defaults.
    pub store: StoreConfig,
    /// `[presence]`: how presence is learnt and which changes become events. Default: all
    /// defaults.
    pub presence: PresenceConfig,
    /// `[sinks]`: where events go. Default: none.
    pub sinks: SinksConfig,
    /// `[admin]`: who may run admin commands. Default: nobody.
    pub admin: AdminConfig,
}

/// `[component]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentConfig {
    /// The component's domain, a bare domain JID without `@` or `/`. Required.
    /// Example: `jid = "herald.example.org"`.
    pub jid: Option<String>,
    /// The shared secret of the server's component listener; exactly one of `secret` and
    /// `secret_file` is required. No default. Example: `secret = "s3cr3t"`.
    pub secret: Option<Secret>,
    /// A file holding the secret (trailing whitespace and newline trimmed, must not be empty);
    /// exactly one of `secret` and `secret_file` is required. No default.
    /// Example: `secret_file = "/run/secrets/herald"`.
    pub secret_file: Option<PathBuf>,
    /// `host:port` of the server's component listener (port required).
    /// Default: `"127.0.0.1:5347"`. Example: `server = "xmpp.internal:5275"`.
    pub server: String,
    /// Interval of keepalive pings to the server; must be less than half of `read_timeout`.
    /// Default: `"20s"`. Example: `keepalive = "10s"`.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Silence after which the stream is considered stale and reconnected.
    /// Default: `"60s"`. Example: `read_timeout = "2m"`.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How long herald waits for the answer to its own IQs. Default: `"15s"`.
    /// Example: `request_timeout = "30s"`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First reconnect delay (doubled, with jitter, after each failure). Default: `"1s"`.
    /// Example: `reconnect_min = "500ms"`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect backoff; at least `reconnect_min`. Default: `"60s"`.
    /// Example: `reconnect_max = "5m"`.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// A connection that stays up this long resets the backoff to `reconnect_min`.
    /// Default: `"60s"`. Example: `stable_after = "5m"`.
    #[serde(with = "humantime_serde")]
    pub stable_after: Duration,
}

impl Default for ComponentConfig {
    fn default() -> Self {
        ComponentConfig {
            jid: None,
            secret: None,
            secret_file: None,
            server: "127.0.0.1:5347".to_owned(),
            keepalive: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(15),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled directory (created if missing). Default: `"/var/lib/herald"`.
    /// Example: `path = "/srv/herald/db"`.
    pub path: PathBuf,
    /// Group-commit interval of the store: writes are flushed to disk at least this often.
    /// More than 0, at most 10s. Default: `"100ms"`. Example: `flush_interval = "1s"`.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Size of the store's page cache in bytes, at least 1 MiB (1048576).
    /// Default: `16777216` (16 MiB). Example: `cache_bytes = 67108864`.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("/var/lib/herald"),
            flush_interval: Duration::from_millis(100),
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[presence]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// `"privilege"` (XEP-0356, Prosody and ejabberd) or `"subscription"` (roster
    /// subscriptions, e.g. MongooseIM). Default: `"privilege"`. Example: `source = "subscription"`.
    pub source: PresenceSource,
    /// `"availability"` (an event when a resource comes or goes) or `"all"` (also show, status
    /// and priority changes). Default: `"availability"`. Example: `changes = "all"`.
    pub changes: Changes,
    /// Longest wait for the end of the server's presence snapshot after a (re)connect.
    /// Default: `"30s"`. Example: `snapshot_timeout = "2m"`.
    #[serde(with = "humantime_serde")]
    pub snapshot_timeout: Duration,
    /// Whether the server sends a presence snapshot after each (re)connect: `"auto"` (trust
    /// one when it comes), `"always"` (Prosody: an empty snapshot means everyone went offline
    /// while herald was away) or `"never"` (ejabberd 23.01). Default: `"auto"`.
    /// Example: `snapshot = "always"`.
    pub snapshot: SnapshotMode,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            source: PresenceSource::default(),
            changes: Changes::default(),
            snapshot_timeout: Duration::from_secs(30),
            snapshot: SnapshotMode::default(),
        }
    }
}

/// `[sinks]`: one list per kind of sink, each an array of tables (`[[sinks.xmpp]]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// `[[sinks.xmpp]]`: server users that receive every event as a `<message/>`.
    /// Default: none. Example: `[[sinks.xmpp]]` `domain = "example.org"`.
    pub xmpp: Vec<XmppSinkConfig>,
    /// `[[sinks.webhook]]`: HTTP endpoints that receive batches of events as a JSON array, with
    /// durable delivery (outbox, retry, dead letters). Default: none.
    /// Example: `[[sinks.webhook]]` `url = "https://game.example.org/hooks/presence"`.
    pub webhook: Vec<WebhookSinkConfig>,
}

/// One `[[sinks.xmpp]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppSinkConfig {
    /// The server user's domain. Required. Example: `domain = "example.org"`.
    pub domain: String,
    /// The server user's localpart. Default: env `WORLD_SERVER_USERNAME`, else `"server"`.
    /// Example: `server_user = "world"`.
    #[serde(default)]
    pub server_user: Option<String>,
}

/// One `[[sinks.webhook]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The endpoint herald `POST`s batches to: an `http` or `https` URL, without credentials
    /// (`user:password@`; use `headers` instead, they are never logged). Required.
    /// Example: `url = "https://game.example.org/hooks/presence"`.
    pub url: Option<String>,
    /// The sink's name in logs, metrics and the store: the store keys the sink's queue and dead
    /// letters by it, so renaming a sink (or, without a `name`, changing its URL) starts a new,
    /// empty queue and leaves the old one's undelivered events behind. Unique among all sinks
    /// (XMPP sinks are named `xmpp:<server user>`); at most 128 characters, no control
    /// characters. Set it when the URL's path holds a token. Default: the URL's host, port (if
    /// not the scheme's default) and path without the trailing `/`, e.g.
    /// `"game.example.org/hooks/presence"`. Example: `name = "game"`.
    pub name: Option<String>,
    /// HMAC-SHA256 key: each request carries `X-Herald-Signature: sha256=<hex HMAC of the
    /// body>`. At most one of `secret` and `secret_file`; neither means unsigned requests.
    /// No default. Example: `secret = "0b7c…"`.
    pub secret: Option<Secret>,
    /// A file holding the HMAC key (trailing whitespace and newline trimmed, must not be empty).
    /// No default. Example: `secret_file = "/run/secrets/herald-webhook"`.
    pub secret_file: Option<PathBuf>,
    /// Extra request headers, name → value, e.g. for the endpoint's authentication. Values are
    /// treated as secrets (never logged). `Content-Type`, `Content-Length`, `Transfer-Encoding`,
    /// `Host`, `Connection` and every `X-Herald-…` header are herald's and cannot be set.
    /// Default: none. Example: `headers = { Authorization = "Bearer 3q2+7w==" }`.
    pub headers: BTreeMap<String, Secret>,
    /// Longest time one delivery attempt may take, from connecting to reading the answer;
    /// more than 0. Default: `"10s"`. Example: `timeout = "30s"`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most events in one request, 1..=10000. Default: `500`. Example: `batch_max = 100`.
    pub batch_max: usize,
    /// When fewer than `batch_max` events are queued, how long the worker waits for more before
    /// sending a smaller batch; `"0ms"` sends at once. Default: `"0ms"`.
    /// Example: `batch_delay = "200ms"`.
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// Most undelivered events kept for this sink (at least 1); beyond it the oldest move to the
    /// dead letters, so a dead endpoint cannot fill the disk. Default: `1000000`.
    /// Example: `max_backlog = 100000`.
    pub max_backlog: usize,
    /// First delay before retrying a failed batch (doubled, with jitter, after each failure);
    /// more than 0. Default: `"1s"`. Example: `retry_min = "500ms"`.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Cap of the retry delay; at least `retry_min`. A `Retry-After` from the endpoint (on 429
    /// and 503, at most one hour) replaces the delay. Default: `"5m"`.
    /// Example: `retry_max = "1m"`.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for WebhookSinkConfig {
    fn default() -> Self {
        WebhookSinkConfig {
            url: None,
            name: None,
            secret: None,
            secret_file: None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            batch_max: 500,
            batch_delay: Duration::ZERO,
            max_backlog: 1_000_000,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(5 * 60),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bare JIDs allowed to run admin commands. Default: `[]`.
    /// Example: `jids = ["admin@example.org"]`.
    pub jids: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------------------------

/// The validated configuration: every invariant documented on the raw fields holds.
#[derive(Debug, Clone)]
pub struct Settings {
    pub component: ComponentSettings,
    pub store: StoreSettings,
    pub presence: PresenceSettings,
    /// One per `[[sinks.xmpp]]`, in file order, no two with the same `to`.
    pub xmpp_sinks: Vec<XmppSinkSettings>,
    /// One per `[[sinks.webhook]]`, in file order. No two sinks of any kind share a `name`.
    pub webhook_sinks: Vec<WebhookSinkSettings>,
    pub admin: AdminSettings,
}

/// `[component]`, validated; see [`ComponentConfig`] for meanings.
#[derive(Debug, Clone)]
pub struct ComponentSettings {
    /// A domain JID (no node, no resource).
    pub jid: BareJid,
    /// From `secret`, or read from `secret_file`; never empty.
    pub secret: Secret,
    /// `host:port`, port in 1..=65535.
    pub server: String,
    /// Non-zero, and `keepalive * 2 < read_timeout`.
    pub keepalive: Duration,
    pub read_timeout: Duration,
    /// Non-zero.
    pub request_timeout: Duration,
    /// Non-zero.
    pub reconnect_min: Duration,
    /// At least `reconnect_min`.
    pub reconnect_max: Duration,
    /// Non-zero.
    pub stable_after: Duration,
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub path: PathBuf,
    /// In (0, 10s].
    pub flush_interval: Duration,
    /// At least 1 MiB.
    pub cache_bytes: u64,
}

/// `[presence]`, validated.
#[derive(Debug, Clone)]
pub struct PresenceSettings {
    pub source: PresenceSource,
    pub changes: Changes,
    /// Non-zero.
    pub snapshot_timeout: Duration,
    pub snapshot: SnapshotMode,
}

/// One `[[sinks.xmpp]]`, validated and resolved.
#[derive(Debug, Clone)]
pub struct XmppSinkSettings {
    /// `xmpp:<to>`, e.g. `xmpp:world@example.org`: the sink's id in logs and the store.
    pub name: String,
    pub domain: String,
    /// From the config, else env `WORLD_SERVER_USERNAME`, else `"server"`.
    pub server_user: String,
    /// `server_user@domain`: where the event messages go.
    pub to: BareJid,
}

/// One `[[sinks.webhook]]`, validated; see [`WebhookSinkConfig`] for meanings.
#[derive(Debug, Clone)]
pub struct WebhookSinkSettings {
    /// `http` or `https`, with a host, without credentials.
    pub url: Url,
    /// Unique among all sinks; 1..=128 characters, no control characters.
    pub name: String,
    /// The HMAC-SHA256 key, from `secret` or `secret_file`; never empty.
    pub secret: Option<Secret>,
    /// Valid names and values, none reserved; every value is marked sensitive (its `Debug`
    /// prints `Sensitive`).
    pub headers: HeaderMap,
    /// Non-zero.
    pub timeout: Duration,
    /// In 1..=10000.
    pub batch_max: usize,
    pub batch_delay: Duration,
    /// At least 1.
    pub max_backlog: usize,
    /// Non-zero.
    pub retry_min: Duration,
    /// At least `retry_min`.
    pub retry_max: Duration,
}

/// `[admin]`, validated.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub jids: Vec<BareJid>,
}

impl Settings {
    /// Validates `raw`; `server_user` defaults come from env `WORLD_SERVER_USERNAME`.
    pub fn from_raw(raw: Config) -> Result<Settings, ConfigErrors> {
        let world_server_username = std::env::var(WORLD_SERVER_USERNAME).ok();
        Self::from_raw_with_env(raw, world_server_username.as_deref())
    }

    /// Validates `raw`, with `world_server_username` standing for env `WORLD_SERVER_USERNAME`.
    pub fn from_raw_with_env(
        raw: Config,
        world_server_username: Option<&str>,
    ) -> Result<Settings, ConfigErrors> {
        let mut problems = Problems::default();
        let component = component_settings(raw.component, &mut problems);
        let store = store_settings(raw.store, &mut problems);
        let presence = presence_settings(raw.presence, &mut problems);
        let xmpp_sinks = xmpp_sinks(raw.sinks.xmpp, world_server_username, &mut problems);
        let taken: Vec<(String, String)> = xmpp_sinks
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), format!("sinks.xmpp[{i}]")))
            .collect();
        let webhook_sinks = webhook_sinks(raw.sinks.webhook, taken, &mut problems);
        let admin = admin_settings(raw.admin, &mut problems);
        match (component, store, presence, xmpp_sinks, webhook_sinks, admin) {
            (
                Some(component),
                Some(store),
                Some(presence),
                Some(xmpp_sinks),
                Some(webhook_sinks),
                Some(admin),
            ) if problems.0.is_empty() => Ok(Settings {
                component,
                store,
                presence,
                xmpp_sinks,
                webhook_sinks,
                admin,
            }),
            _ => Err(ConfigErrors(problems.0)),
        }
    }
}

fn component_settings(raw: ComponentConfig, p: &mut Problems) -> Option<ComponentSettings> {
    let jid = match &raw.jid {
        None => {
            p.push("component.jid", "required key is missing");
            None
        }
        Some(jid) => domain_jid("component.jid", jid, p),
    };
    let secret = match (raw.secret, &raw.secret_file) {
        (Some(_), Some(_)) | (None, None) => {
            p.push("component", "set exactly one of secret or secret_file");
            None
        }
        (Some(secret), None) if secret.expose().is_empty() => {
            p.push("component.secret", "must not be empty");
            None
        }
        (Some(secret), None) => Some(secret),
        (None, Some(path)) => read_secret_file("component.secret_file", path, p),
    };
    let server = match check_server(&raw.server) {
        Ok(()) => Some(raw.server),
        Err(message) => {
            p.push("component.server", message);
            None
        }
    };
    let mut timers_ok = non_zero("component.keepalive", raw.keepalive, p)
        & non_zero("component.read_timeout", raw.read_timeout, p)
        & non_zero("component.request_timeout", raw.request_timeout, p)
        & non_zero("component.reconnect_min", raw.reconnect_min, p)
        & non_zero("component.stable_after", raw.stable_after, p);
    let both_set = !raw.keepalive.is_zero() && !raw.read_timeout.is_zero();
    if both_set && raw.keepalive.saturating_mul(2) >= raw.read_timeout {
        p.push(
            "component.keepalive",
            format!(
                "must be less than half of read_timeout ({})",
                human(raw.read_timeout)
            ),
        );
        timers_ok = false;
    }
    if raw.reconnect_max < raw.reconnect_min {
        p.push(
            "component.reconnect_max",
            format!(
                "must be at least reconnect_min ({})",
                human(raw.reconnect_min)
            ),
        );
        timers_ok = false;
    }
    let (jid, secret, server) = (jid?, secret?, server?);
    timers_ok.then_some(ComponentSettings {
        jid,
        secret,
        server,
        keepalive: raw.keepalive,
        read_timeout: raw.read_timeout,
        request_timeout: raw.request_timeout,
        reconnect_min: raw.reconnect_min,
        reconnect_max: raw.reconnect_max,
        stable_after: raw.stable_after,
    })
}

fn store_settings(raw: StoreConfig, p: &mut Problems) -> Option<StoreSettings> {
    let mut ok = true;
    if raw.path.as_os_str().is_empty() {
        p.push("store.path", "must not be empty");
        ok = false;
    }
    if raw.flush_interval.is_zero() {
        p.push("store.flush_interval", "must be greater than 0");
        ok = false;
    } else if raw.flush_interval > MAX_FLUSH_INTERVAL {
        p.push(
            "store.flush_interval",
            format!("must be at most {}", human(MAX_FLUSH_INTERVAL)),
        );
        ok = false;
    }
    if raw.cache_bytes < MIN_CACHE_BYTES {
        p.push(
            "store.cache_bytes",
            format!("must be at least {MIN_CACHE_BYTES} (1 MiB)"),
        );
        ok = false;
    }
    ok.then_some(StoreSettings {
        path: raw.path,
        flush_interval: raw.flush_interval,
        cache_bytes: raw.cache_bytes,
    })
}

fn presence_settings(raw: PresenceConfig, p: &mut Problems) -> Option<PresenceSettings> {
    let mut ok = non_zero("presence.snapshot_timeout", raw.snapshot_timeout, p);
    if raw.source == PresenceSource::Subscription {
        p.push(
            "presence.source",
            "\"subscription\" is not supported yet; use \"privilege\" (XEP-0356: Prosody, ejabberd)",
        );
        ok = false;
    }
    ok.then_some(PresenceSettings {
        source: raw.source,
        changes: raw.changes,
        snapshot_timeout: raw.snapshot_timeout,
        snapshot: raw.snapshot,
    })
}

fn xmpp_sinks(
    raw: Vec<XmppSinkConfig>,
    world_server_username: Option<&str>,
    p: &mut Problems,
) -> Option<Vec<XmppSinkSettings>> {
    let env_user = world_server_username.filter(|user| !user.is_empty());
    let mut sinks: Vec<XmppSinkSettings> = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, sink) in raw.into_iter().enumerate() {
        let key = format!("sinks.xmpp[{i}]");
        let domain = domain_jid(&format!("{key}.domain"), &sink.domain, p);
        let (server_user, from) = match (sink.server_user, env_user) {
            (Some(user), _) => (user, ""),
            (None, Some(user)) => (user.to_owned(), " (from WORLD_SERVER_USERNAME)"),
            (None, None) => (DEFAULT_SERVER_USER.to_owned(), ""),
        };
        let node = match NodePart::new(&server_user) {
            Ok(node) if !server_user.is_empty() => Some(node),
            Ok(_) | Err(_) => {
                p.push(
                    format!("{key}.server_user"),
                    format!("{server_user:?} is not a valid JID localpart{from}"),
                );
                None
            }
        };
        let (Some(domain), Some(node)) = (domain, node) else {
            ok = false;
            continue;
        };
        let to = BareJid::from_parts(Some(&node), domain.domain());
        if let Some(first) = sinks.iter().position(|s| s.to == to) {
            p.push(
                key,
                format!("same server user as sinks.xmpp[{first}] ({to})"),
            );
            ok = false;
            continue;
        }
        sinks.push(XmppSinkSettings {
            name: format!("xmpp:{to}"),
            domain: domain.domain().to_string(),
            server_user: node.to_string(),
            to,
        });
    }
    ok.then_some(sinks)
}

/// Validates the webhook sinks; `taken` lists the names already used (by XMPP sinks), with the
/// key of their entry.
fn webhook_sinks(
    raw: Vec<WebhookSinkConfig>,
    mut taken: Vec<(String, String)>,
    p: &mut Problems,
) -> Option<Vec<WebhookSinkSettings>> {
    let mut sinks = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, sink) in raw.into_iter().enumerate() {
        let key = format!("sinks.webhook[{i}]");
        match webhook_sink(&key, sink, &taken, p) {
            Some(sink) => {
                taken.push((sink.name.clone(), key));
                sinks.push(sink);
            }
            None => ok = false,
        }
    }
    ok.then_some(sinks)
}

fn webhook_sink(
    key: &str,
    raw: WebhookSinkConfig,
    taken: &[(String, String)],
    p: &mut Problems,
) -> Option<WebhookSinkSettings> {
    let url = match &raw.url {
        None => {
            p.push(format!("{key}.url"), "required key is missing");
            None
        }
        Some(url) => webhook_url(&format!("{key}.url"), url, p),
    };
    let name = match (&raw.name, &url) {
        (Some(name), _) => sink_name(&format!("{key}.name"), name, taken, "", p),
        (None, Some(url)) => sink_name(
            &format!("{key}.name"),
            &default_sink_name(url),
            taken,
            " (derived from url; set a distinct name)",
            p,
        ),
        (None, None) => None,
    };
    let secret = match (raw.secret, &raw.secret_file) {
        (Some(_), Some(_)) => {
            p.push(key, "set at most one of secret or secret_file");
            Err(())
        }
        (Some(secret), None) if secret.expose().is_empty() => {
            p.push(format!("{key}.secret"), "must not be empty");
            Err(())
        }
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(path)) => read_secret_file(&format!("{key}.secret_file"), path, p)
            .map(Some)
            .ok_or(()),
        (None, None) => Ok(None),
    };
    let headers = webhook_headers(&format!("{key}.headers"), &raw.headers, p);
    let mut ok = non_zero(&format!("{key}.timeout"), raw.timeout, p)
        & non_zero(&format!("{key}.retry_min"), raw.retry_min, p);
    if !(1..=MAX_WEBHOOK_BATCH).contains(&raw.batch_max) {
        p.push(
            format!("{key}.batch_max"),
            format!("must be in 1..={MAX_WEBHOOK_BATCH}"),
        );
        ok = false;
    }
    if raw.max_backlog == 0 {
        p.push(format!("{key}.max_backlog"), "must be at least 1");
        ok = false;
    }
    if raw.retry_max < raw.retry_min {
        p.push(
            format!("{key}.retry_max"),
            format!("must be at least retry_min ({})", human(raw.retry_min)),
        );
        ok = false;
    }
    let (url, name, secret, headers) = (url?, name?, secret.ok()?, headers?);
    ok.then_some(WebhookSinkSettings {
        url,
        name,
        secret,
        headers,
        timeout: raw.timeout,
        batch_max: raw.batch_max,
        batch_delay: raw.batch_delay,
        max_backlog: raw.max_backlog,
        retry_min: raw.retry_min,
        retry_max: raw.retry_max,
    })
}

/// An absolute `http(s)` URL without credentials. The URL itself is not echoed: its path or
/// query may hold a token.
fn webhook_url(key: &str, value: &str, p: &mut Problems) -> Option<Url> {
    let url = match Url::parse(value) {
        Ok(url) => url,
        Err(e) => {
            p.push(key, format!("not a valid URL: {e}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        p.push(
            key,
            format!("scheme must be http or https, not {:?}", url.scheme()),
        );
        return None;
    }
    if url.host_str().unwrap_or_default().is_empty() {
        p.push(key, "has no host");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        p.push(
            key,
            "must not contain credentials (user:password@): set headers.Authorization instead",
        );
        return None;
    }
    Some(url)
}

/// `host[:port]/path` without the trailing `/`.
fn default_sink_name(url: &Url) -> String {
    let mut name = url.host_str().unwrap_or_default().to_owned();
    if let Some(port) = url.port() {
        name.push_str(&format!(":{port}"));
    }
    name.push_str(url.path().trim_end_matches('/'));
    name
}

/// A valid sink name that no sink in `taken` uses yet; `note` explains where it came from.
fn sink_name(
    key: &str,
    name: &str,
    taken: &[(String, String)],
    note: &str,
    p: &mut Problems,
) -> Option<String> {
    if name.is_empty() {
        p.push(key, "must not be empty");
        return None;
    }
    if name.chars().count() > MAX_SINK_NAME {
        p.push(
            key,
            format!("must be at most {MAX_SINK_NAME} characters{note}"),
        );
        return None;
    }
    if name.chars().any(char::is_control) {
        p.push(key, "must not contain control characters");
        return None;
    }
    if let Some((_, other)) = taken.iter().find(|(used, _)| used == name) {
        p.push(
            key,
            format!("{name:?} is already the name of {other}{note}"),
        );
        return None;
    }
    Some(name.to_owned())
}

/// The configured extra headers, values marked sensitive. Values are never echoed.
fn webhook_headers(
    key: &str,
    raw: &BTreeMap<String, Secret>,
    p: &mut Problems,
) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(raw.len());
    let mut ok = true;
    for (name, value) in raw {
        let key = format!("{key}.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            p.push(key, format!("{name:?} is not a valid header name"));
            ok = false;
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) || header.as_str().starts_with("x-herald-") {
            p.push(key, "is set by herald and cannot be configured");
            ok = false;
            continue;
        }
        let Ok(mut value) = HeaderValue::from_str(value.expose()) else {
            p.push(
                key,
                "is not a valid header value (visible ASCII characters, spaces and tabs only)",
            );
            ok = false;
            continue;
        };
        value.set_sensitive(true);
        if headers.insert(header, value).is_some() {
            p.push(
                key,
                "same header as another entry (names are case-insensitive)",
            );
            ok = false;
        }
    }
    ok.then_some(headers)
}

fn admin_settings(raw: AdminConfig, p: &mut Problems) -> Option<AdminSettings> {
    let count = raw.jids.len();
    let jids: Vec<BareJid> = raw
        .jids
        .iter()
        .enumerate()
        .filter_map(|(i, jid)| {
            let key = format!("admin.jids[{i}]");
            if jid.contains('/') {
                p.push(key, format!("{jid:?} is not a bare JID (no '/')"));
                return None;
            }
            match BareJid::new(jid) {
                Ok(bare) if !jid.is_empty() => Some(bare),
                Ok(_) => {
                    p.push(key, "must not be empty");
                    None
                }
                Err(e) => {
                    p.push(key, format!("{jid:?} is not a valid JID: {e}"));
                    None
                }
            }
        })
        .collect();
    (jids.len() == count).then_some(AdminSettings { jids })
}

/// A domain-only JID such as `herald.example.org`.
fn domain_jid(key: &str, value: &str, p: &mut Problems) -> Option<BareJid> {
    if value.is_empty() {
        p.push(key, "must not be empty");
        return None;
    }
    if value.contains('@') || value.contains('/') {
        p.push(
            key,
            format!("{value:?} is not a bare domain (no '@' or '/')"),
        );
        return None;
    }
    match DomainPart::new(value) {
        Ok(domain) => Some(BareJid::from_parts(None, &domain)),
        Err(e) => {
            p.push(key, format!("{value:?} is not a valid domain: {e}"));
            None
        }
    }
}

/// Reads the secret in `path` (the value of `key`), trailing whitespace trimmed.
fn read_secret_file(key: &str, path: &Path, p: &mut Problems) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim_end().is_empty() => {
            p.push(key, format!("{} is empty", path.display()));
            None
        }
        Ok(text) => Some(Secret::new(text.trim_end().to_owned())),
        Err(e) => {
            p.push(
                key,
                format!("cannot read {}: {}", path.display(), io_message(&e)),
            );
            None
        }
    }
}

/// `host:port` with a port in 1..=65535; IPv6 hosts in brackets.
fn check_server(server: &str) -> Result<(), String> {
    let example = "e.g. \"127.0.0.1:5347\"";
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("{server:?} is not host:port ({example})"));
    };
    if host.is_empty() {
        return Err(format!("{server:?} has no host ({example})"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{server:?}: write IPv6 addresses in brackets, e.g. \"[::1]:5347\""
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("{server:?}: port must be a number in 1..=65535")),
    }
}

/// Pushes a problem and returns false when `value` is zero.
fn non_zero(key: &str, value: Duration, p: &mut Problems) -> bool {
    if value.is_zero() {
        p.push(key, "must be greater than 0");
    }
    !value.is_zero()
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    //! Helpers; `tests/config.rs` covers loading through the public API.
    use super::*;

    fn problems(toml: &str) -> ConfigErrors {
        match from_figment(&Figment::from(Toml::string(toml)), None, None) {
            Ok(settings) => panic!("expected problems, got {settings:?}"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn paths_render_like_toml_keys() {
        let path: Vec<String> = ["sinks", "xmpp", "1", "domain"].map(String::from).into();
        assert_eq!(render_path(&path), "sinks.xmpp[1].domain");
        assert_eq!(render_path(&[]), "");
    }

    #[test]
    fn toml_syntax_errors_fit_on_one_line() {
        let errors = problems("[component\njid = \"x\"\n");
        assert_eq!(errors.0.len(), 1, "{errors}");
        let problem = &errors.0[0];
        assert_eq!(problem.key, "");
        assert!(!problem.message.contains('\n'), "{problem:?}");
        assert!(
            problem.message.starts_with("TOML parse error at line 1"),
            "{problem:?}"
        );
        assert!(
            problem.message.contains("invalid table header"),
            "{problem:?}"
        );
    }

    #[test]
    fn server_must_be_host_and_port() {
        for good in ["127.0.0.1:5347", "xmpp.internal:1", "[::1]:65535"] {
            assert_eq!(check_server(good), Ok(()), "{good}");
        }
        for bad in [
            "localhost",
            ":5347",
            "host:",
            "host:0",
            "host:65536",
            "::1:5347",
            "h:p",
        ] {
            assert!(check_server(bad).is_err(), "{bad} accepted");
        }
    }
}
