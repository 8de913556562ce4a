//! The raw schema: what serde reads from the layers, with the defaults.

use super::*;

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

/// Whether herald checks that the resources it believes online still are (XEP-0199 pings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LivenessMode {
    /// On unless the server's disco#info identity names a server that forwards the
    /// unavailable it makes itself when a client vanishes (Prosody).
    #[default]
    Auto,
    /// Always check (e.g. ejabberd 23.01, which never forwards such an unavailable).
    On,
    /// Never check.
    Off,
}

impl LivenessMode {
    /// Whether `auto` checks on a server that names itself `name`: only Prosody is known to
    /// forward the unavailable of every session that ends.
    pub fn auto_for_server(name: Option<&str>) -> bool {
        !name.is_some_and(|n| n.to_ascii_lowercase().contains("prosody"))
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
    /// `[http]`: the operators' HTTP listener (metrics, probes, presence API). Default: all
    /// defaults.
    pub http: HttpConfig,
    /// `[push]`: push registrations (XEP-0357) and their limits. Default: all defaults.
    pub push: super::PushConfig,
    /// `[muc]`: MUC self-ping (XEP-0410) and rejoin hints. Default: all defaults.
    pub muc: super::MucConfig,
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
    /// Interval of keepalive pings to the server; must be less than half of `read_timeout`,
    /// more than 0, at most `"30m"`. Default: `"20s"`. Example: `keepalive = "10s"`.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Silence after which the stream is considered stale and reconnected; more than 0, at
    /// most `"1h"`. Default: `"60s"`. Example: `read_timeout = "2m"`.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How long herald waits for the answer to its own IQs, and, when stopping, for the
    /// acknowledgements of events in flight to XMPP sinks (while running those are waited for
    /// as long as the stream is up); more than 0, at most `"1h"`. Default: `"15s"`.
    /// Example: `request_timeout = "30s"`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First reconnect delay (doubled, with jitter, after each failure); more than 0, at most
    /// `"1h"`. Default: `"1s"`. Example: `reconnect_min = "500ms"`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect backoff; at least `reconnect_min`, at most `"1h"`.
    /// Default: `"60s"`. Example: `reconnect_max = "5m"`.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// A connection that stays up this long resets the backoff to `reconnect_min`; more than
    /// 0, at most `"24h"`. Default: `"60s"`. Example: `stable_after = "5m"`.
    #[serde(with = "humantime_serde")]
    pub stable_after: Duration,
    /// The server's domains: only these may advertise XEP-0356 privileges to herald, and only
    /// presences of their users are forwarded presences. Bare domains, at least one.
    /// Default: the parent domain of `jid` (`herald.example.org` → `["example.org"]`).
    /// Example: `server_domains = ["example.org", "chat.example.org"]`.
    pub server_domains: Option<Vec<String>>,
    /// Largest inbound stanza herald reads, in bytes (4096..=16777216); a larger one is skipped
    /// with a WARN. Default: `1048576` (1 MiB, above Prosody's and ejabberd's own stanza limits).
    /// Example: `max_stanza_bytes = 262144`.
    pub max_stanza_bytes: usize,
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
            server_domains: None,
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
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
    /// Longest wait for the end of the server's presence snapshot after a (re)connect; more
    /// than 0, at most `"1h"`. Default: `"30s"`. Example: `snapshot_timeout = "2m"`.
    #[serde(with = "humantime_serde")]
    pub snapshot_timeout: Duration,
    /// Whether the server sends a presence snapshot after each (re)connect: `"auto"` (trust
    /// one when it comes), `"always"` (Prosody: an empty snapshot means everyone went offline
    /// while herald was away) or `"never"` (ejabberd 23.01). Default: `"auto"`.
    /// Example: `snapshot = "always"`.
    pub snapshot: SnapshotMode,
    /// Longest status text kept and forwarded, in bytes (64..=65536); a longer one is cut at a
    /// character boundary. Default: `1024`. Example: `max_status_bytes = 512`.
    pub max_status_bytes: usize,
    /// Whether herald pings the resources it believes online to find those whose session ended
    /// without a forwarded unavailable: `"auto"` (on unless the server is Prosody, which
    /// forwards them), `"on"` or `"off"`. Default: `"auto"`. Example: `liveness = "on"`.
    pub liveness: LivenessMode,
    /// How often each online resource is checked, spread evenly (at least 1s, at most `"1h"`).
    /// Default: `"5m"`. Example: `liveness_interval = "10m"`.
    #[serde(with = "humantime_serde")]
    pub liveness_interval: Duration,
    /// `[presence.ejabberd_api]`: ejabberd's admin API (`mod_http_api`), read at each
    /// (re)connect for the sessions already online (ejabberd sends no presence snapshot).
    /// Default: none. Example: `ejabberd_api = { url = "http://127.0.0.1:5280/api" }`.
    pub ejabberd_api: Option<EjabberdApiConfig>,
}

/// `[presence.ejabberd_api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjabberdApiConfig {
    /// The base URL of `mod_http_api` (herald POSTs to `<url>/connected_users_info`), http or
    /// https. Required. Example: `url = "http://127.0.0.1:5280/api"`.
    pub url: String,
    /// A bearer token (`Authorization: Bearer <token>`, an ejabberd OAuth token with the
    /// `connected_users_info` scope); at most one of `token` and `token_file`; neither sends no
    /// `Authorization` (for `api_permissions` that allow loopback by IP). No default.
    /// Example: `token = "eyJ…"`.
    pub token: Option<Secret>,
    /// A file holding the token (trailing whitespace and newline trimmed). No default.
    /// Example: `token_file = "/run/secrets/ejabberd-api"`.
    pub token_file: Option<PathBuf>,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            source: PresenceSource::default(),
            changes: Changes::default(),
            snapshot_timeout: Duration::from_secs(30),
            snapshot: SnapshotMode::default(),
            max_status_bytes: DEFAULT_MAX_STATUS_BYTES,
            liveness: LivenessMode::default(),
            liveness_interval: DEFAULT_LIVENESS_INTERVAL,
            ejabberd_api: None,
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
    /// more than 0, at most `"1h"`. Default: `"10s"`. Example: `timeout = "30s"`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most events in one request, 1..=10000. Default: `500`. Example: `batch_max = 100`.
    pub batch_max: usize,
    /// When fewer than `batch_max` events are queued, how long the worker waits for more before
    /// sending a smaller batch; `"0ms"` sends at once; at most `"1h"`. Default: `"0ms"`.
    /// Example: `batch_delay = "200ms"`.
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// Most undelivered events kept for this sink (at least 1); beyond it the oldest move to the
    /// dead letters, so a dead endpoint cannot fill the disk. Default: `1000000`.
    /// Example: `max_backlog = 100000`.
    pub max_backlog: usize,
    /// First delay before retrying a failed batch (doubled, with jitter, after each failure);
    /// more than 0, at most `"1h"`. Default: `"1s"`. Example: `retry_min = "500ms"`.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Cap of the retry delay; at least `retry_min`, at most `"1h"`. A `Retry-After` from the
    /// endpoint (on 429 and 503, at most one hour) replaces the delay. Default: `"5m"`.
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

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `ip:port` of the HTTP listener that serves `/metrics`, `/healthz`, `/readyz` and the
    /// presence API; `""` turns it off. An IP address, not a host name; port 0 picks a free
    /// port. Default: `"127.0.0.1:8347"`. Example: `listen = "[::1]:9100"`.
    pub listen: String,
    /// Whether `listen` may be an address other than loopback (`127.0.0.0/8`, `::1`): metrics and
    /// probes need no token, so exposing them is a decision. Default: `false`.
    /// Example: `allow_non_loopback = true`.
    pub allow_non_loopback: bool,
    /// The bearer token of the presence API (`Authorization: Bearer <token>`); at most one of
    /// `token` and `token_file`; neither turns the presence API off (404). At least 16
    /// characters, no whitespace. No default. Example: `token = "9c1f…"`.
    pub token: Option<Secret>,
    /// A file holding the token (trailing whitespace and newline trimmed). No default.
    /// Example: `token_file = "/run/secrets/herald-http"`.
    pub token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_HTTP_LISTEN.to_owned(),
            allow_non_loopback: false,
            token: None,
            token_file: None,
        }
    }
}
