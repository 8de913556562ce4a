//! Validated settings and the validation that produces them.

use super::*;

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
    pub http: HttpSettings,
    pub push: PushSettings,
    pub muc: MucSettings,
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
    /// Non-zero, at most [`MAX_KEEPALIVE`], and `keepalive * 2 < read_timeout`.
    pub keepalive: Duration,
    /// Non-zero, at most [`MAX_TIMER`].
    pub read_timeout: Duration,
    /// Non-zero, at most [`MAX_TIMER`].
    pub request_timeout: Duration,
    /// Non-zero, at most [`MAX_TIMER`].
    pub reconnect_min: Duration,
    /// At least `reconnect_min`, at most [`MAX_TIMER`].
    pub reconnect_max: Duration,
    /// Non-zero, at most [`MAX_STABLE_AFTER`].
    pub stable_after: Duration,
    /// Lowercase valid domains, at least one, no duplicates.
    pub server_domains: Vec<String>,
    /// In 4096..=16 MiB.
    pub max_stanza_bytes: usize,
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
    /// Non-zero, at most [`MAX_TIMER`].
    pub snapshot_timeout: Duration,
    pub snapshot: SnapshotMode,
    /// In 64..=65536.
    pub max_status_bytes: usize,
    pub liveness: LivenessMode,
    /// At least [`MIN_LIVENESS_INTERVAL`], at most [`MAX_TIMER`].
    pub liveness_interval: Duration,
    pub ejabberd_api: Option<EjabberdApiSettings>,
}

/// `[presence.ejabberd_api]`, validated.
#[derive(Debug, Clone)]
pub struct EjabberdApiSettings {
    /// An http or https URL without a trailing `/`.
    pub url: String,
    /// From `token` or `token_file`; non-empty, no whitespace.
    pub token: Option<Secret>,
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
    /// Non-zero, at most [`MAX_TIMER`].
    pub timeout: Duration,
    /// In 1..=10000.
    pub batch_max: usize,
    /// At most [`MAX_TIMER`].
    pub batch_delay: Duration,
    /// At least 1.
    pub max_backlog: usize,
    /// Non-zero, at most [`MAX_TIMER`].
    pub retry_min: Duration,
    /// At least `retry_min`, at most [`MAX_TIMER`].
    pub retry_max: Duration,
}

/// `[admin]`, validated.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub jids: Vec<BareJid>,
}

/// `[http]`, validated.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `None`: no listener. A loopback address unless `allow_non_loopback`.
    pub listen: Option<SocketAddr>,
    /// From `token` or `token_file`: at least [`MIN_HTTP_TOKEN_CHARS`] characters, no
    /// whitespace. `None`: the presence API is off.
    pub token: Option<Secret>,
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
        let http = http_settings(raw.http, &mut problems);
        let push = super::push::push_settings(raw.push, component.as_ref(), &mut problems);
        let muc = super::muc::muc_settings(raw.muc, &mut problems);
        match (
            component,
            store,
            presence,
            xmpp_sinks,
            webhook_sinks,
            admin,
            http,
            push,
            muc,
        ) {
            (
                Some(component),
                Some(store),
                Some(presence),
                Some(xmpp_sinks),
                Some(webhook_sinks),
                Some(admin),
                Some(http),
                Some(push),
                Some(muc),
            ) if problems.0.is_empty() => Ok(Settings {
                component,
                store,
                presence,
                xmpp_sinks,
                webhook_sinks,
                admin,
                http,
                push,
                muc,
            }),
            _ => Err(ConfigErrors(problems.0)),
        }
    }
}

pub(super) fn component_settings(
    raw: ComponentConfig,
    p: &mut Problems,
) -> Option<ComponentSettings> {
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
    let keepalive_ok = in_range("component.keepalive", raw.keepalive, MAX_KEEPALIVE, p);
    let read_timeout_ok = in_range("component.read_timeout", raw.read_timeout, MAX_TIMER, p);
    let mut timers_ok = keepalive_ok
        & read_timeout_ok
        & in_range(
            "component.request_timeout",
            raw.request_timeout,
            MAX_TIMER,
            p,
        )
        & in_range("component.reconnect_min", raw.reconnect_min, MAX_TIMER, p)
        & in_range(
            "component.stable_after",
            raw.stable_after,
            MAX_STABLE_AFTER,
            p,
        );
    if keepalive_ok && read_timeout_ok && raw.keepalive.saturating_mul(2) >= raw.read_timeout {
        p.push(
            "component.keepalive",
            format!(
                "must be less than half of read_timeout ({})",
                human(raw.read_timeout)
            ),
        );
        timers_ok = false;
    }
    if raw.reconnect_max > MAX_TIMER {
        timers_ok &= at_most("component.reconnect_max", raw.reconnect_max, MAX_TIMER, p);
    } else if raw.reconnect_max < raw.reconnect_min {
        p.push(
            "component.reconnect_max",
            format!(
                "must be at least reconnect_min ({})",
                human(raw.reconnect_min)
            ),
        );
        timers_ok = false;
    }
    if !(MIN_STANZA_BYTES..=MAX_STANZA_BYTES).contains(&raw.max_stanza_bytes) {
        p.push(
            "component.max_stanza_bytes",
            format!("must be between {MIN_STANZA_BYTES} and {MAX_STANZA_BYTES}"),
        );
        timers_ok = false;
    }
    let server_domains = server_domains(raw.server_domains, jid.as_ref(), p);
    let (jid, secret, server, server_domains) = (jid?, secret?, server?, server_domains?);
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
        server_domains,
        max_stanza_bytes: raw.max_stanza_bytes,
    })
}

/// `component.server_domains`, or the parent domain of `jid` when it is not set.
fn server_domains(
    raw: Option<Vec<String>>,
    jid: Option<&BareJid>,
    p: &mut Problems,
) -> Option<Vec<String>> {
    let key = "component.server_domains";
    let Some(raw) = raw else {
        return jid.map(|jid| vec![parent_domain(jid.domain().as_str())]);
    };
    if raw.is_empty() {
        p.push(key, "must list at least one domain");
        return None;
    }
    let mut domains: Vec<String> = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, d) in raw.iter().enumerate() {
        match domain_jid(&format!("{key}[{i}]"), d, p) {
            Some(domain) => {
                let domain = domain.domain().as_str().to_lowercase();
                if !domains.contains(&domain) {
                    domains.push(domain);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(domains)
}

/// `herald.example.org` → `example.org`: the usual host of a component's server. A name of one
/// label (or `name.tld`) is its own parent, except `x.localhost` → `localhost`.
pub fn parent_domain(jid: &str) -> String {
    let jid = jid.to_lowercase();
    match jid.split_once('.') {
        Some((_, rest)) if rest.contains('.') || rest == "localhost" => rest.to_owned(),
        _ => jid,
    }
}

pub(super) fn store_settings(raw: StoreConfig, p: &mut Problems) -> Option<StoreSettings> {
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

pub(super) fn presence_settings(raw: PresenceConfig, p: &mut Problems) -> Option<PresenceSettings> {
    let mut ok = in_range(
        "presence.snapshot_timeout",
        raw.snapshot_timeout,
        MAX_TIMER,
        p,
    );
    if raw.source == PresenceSource::Subscription {
        p.push(
            "presence.source",
            "\"subscription\" is not supported yet; use \"privilege\" (XEP-0356: Prosody, ejabberd)",
        );
        ok = false;
    }
    if !(MIN_STATUS_BYTES..=MAX_STATUS_BYTES).contains(&raw.max_status_bytes) {
        p.push(
            "presence.max_status_bytes",
            format!("must be between {MIN_STATUS_BYTES} and {MAX_STATUS_BYTES}"),
        );
        ok = false;
    }
    if raw.liveness_interval < MIN_LIVENESS_INTERVAL {
        p.push(
            "presence.liveness_interval",
            format!(
                "must be at least {}",
                humantime::format_duration(MIN_LIVENESS_INTERVAL)
            ),
        );
        ok = false;
    } else {
        ok &= at_most(
            "presence.liveness_interval",
            raw.liveness_interval,
            MAX_TIMER,
            p,
        );
    }
    let ejabberd_api = match raw.ejabberd_api {
        None => Some(None),
        Some(api) => ejabberd_api_settings(api, p).map(Some),
    };
    ok &= ejabberd_api.is_some();
    ok.then_some(PresenceSettings {
        max_status_bytes: raw.max_status_bytes,
        liveness: raw.liveness,
        liveness_interval: raw.liveness_interval,
        ejabberd_api: ejabberd_api.flatten(),
        source: raw.source,
        changes: raw.changes,
        snapshot_timeout: raw.snapshot_timeout,
        snapshot: raw.snapshot,
    })
}

pub(super) fn xmpp_sinks(
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
pub(super) fn webhook_sinks(
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

pub(super) fn webhook_sink(
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
    let mut ok = in_range(&format!("{key}.timeout"), raw.timeout, MAX_TIMER, p)
        & at_most(&format!("{key}.batch_delay"), raw.batch_delay, MAX_TIMER, p)
        & in_range(&format!("{key}.retry_min"), raw.retry_min, MAX_TIMER, p);
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
    if raw.retry_max > MAX_TIMER {
        ok &= at_most(&format!("{key}.retry_max"), raw.retry_max, MAX_TIMER, p);
    } else if raw.retry_max < raw.retry_min {
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
pub(super) fn webhook_url(key: &str, value: &str, p: &mut Problems) -> Option<Url> {
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
pub(super) fn default_sink_name(url: &Url) -> String {
    let mut name = url.host_str().unwrap_or_default().to_owned();
    if let Some(port) = url.port() {
        name.push_str(&format!(":{port}"));
    }
    name.push_str(url.path().trim_end_matches('/'));
    name
}

/// A valid sink name that no sink in `taken` uses yet; `note` explains where it came from.
pub(super) fn sink_name(
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
pub(super) fn webhook_headers(
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

pub(super) fn admin_settings(raw: AdminConfig, p: &mut Problems) -> Option<AdminSettings> {
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

pub(super) fn http_settings(raw: HttpConfig, p: &mut Problems) -> Option<HttpSettings> {
    let listen = if raw.listen.is_empty() {
        Some(None)
    } else {
        match raw.listen.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_loopback() && !raw.allow_non_loopback => {
                p.push(
                    "http.listen",
                    format!(
                        "{:?} is not a loopback address; /metrics and the probes need no token, so set http.allow_non_loopback = true to expose them deliberately",
                        raw.listen
                    ),
                );
                None
            }
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                p.push(
                    "http.listen",
                    format!(
                        "{:?} is not ip:port (e.g. \"127.0.0.1:8347\", \"[::1]:8347\"; \"\" turns the listener off)",
                        raw.listen
                    ),
                );
                None
            }
        }
    };
    let token = match (raw.token, &raw.token_file) {
        (Some(_), Some(_)) => {
            p.push("http", "set at most one of token or token_file");
            None
        }
        (None, None) => Some(None),
        (Some(token), None) => check_http_token("http.token", token, p).map(Some),
        (None, Some(path)) => read_secret_file("http.token_file", path, p)
            .and_then(|t| check_http_token("http.token_file", t, p))
            .map(Some),
    };
    Some(HttpSettings {
        listen: listen?,
        token: token?,
    })
}

fn ejabberd_api_settings(raw: EjabberdApiConfig, p: &mut Problems) -> Option<EjabberdApiSettings> {
    let key = "presence.ejabberd_api";
    let url = raw.url.trim_end_matches('/').to_owned();
    let url_ok = match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => true,
        _ => {
            p.push(
                format!("{key}.url"),
                format!("{:?} is not an http or https URL", raw.url),
            );
            false
        }
    };
    let token = match (raw.token, &raw.token_file) {
        (Some(_), Some(_)) => {
            p.push(key, "set at most one of token or token_file");
            None
        }
        (None, None) => Some(None),
        (Some(token), None) => check_api_token(&format!("{key}.token"), token, p).map(Some),
        (None, Some(path)) => read_secret_file(&format!("{key}.token_file"), path, p)
            .and_then(|t| check_api_token(&format!("{key}.token_file"), t, p))
            .map(Some),
    };
    let token = token?;
    url_ok.then_some(EjabberdApiSettings { url, token })
}

fn check_api_token(key: &str, token: Secret, p: &mut Problems) -> Option<Secret> {
    let t = token.expose();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.push(
            key,
            "must be non-empty, without whitespace or control characters",
        );
        return None;
    }
    Some(token)
}

fn check_http_token(key: &str, token: Secret, p: &mut Problems) -> Option<Secret> {
    let t = token.expose();
    if t.chars().count() < MIN_HTTP_TOKEN_CHARS {
        p.push(
            key,
            format!("must be at least {MIN_HTTP_TOKEN_CHARS} characters"),
        );
        return None;
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.push(key, "must not contain whitespace or control characters");
        return None;
    }
    Some(token)
}

/// A domain-only JID such as `herald.example.org`.
pub(super) fn domain_jid(key: &str, value: &str, p: &mut Problems) -> Option<BareJid> {
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
pub(super) fn read_secret_file(key: &str, path: &Path, p: &mut Problems) -> Option<Secret> {
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
pub(super) fn check_server(server: &str) -> Result<(), String> {
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
pub(super) fn non_zero(key: &str, value: Duration, p: &mut Problems) -> bool {
    if value.is_zero() {
        p.push(key, "must be greater than 0");
    }
    !value.is_zero()
}

/// Pushes a problem and returns false when `value` is above `max`.
pub(super) fn at_most(key: &str, value: Duration, max: Duration, p: &mut Problems) -> bool {
    if value > max {
        p.push(key, format!("must be at most {}", bound(max)));
    }
    value <= max
}

/// [`non_zero`] and [`at_most`]: one problem at most.
pub(super) fn in_range(key: &str, value: Duration, max: Duration, p: &mut Problems) -> bool {
    non_zero(key, value, p) && at_most(key, value, max, p)
}

/// A bound as an operator writes it: whole hours as `24h` (humantime would say `1day`).
pub(super) fn bound(max: Duration) -> String {
    let secs = max.as_secs();
    if max.subsec_nanos() == 0 && secs >= 3600 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        human(max).to_string()
    }
}

pub(super) fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}
