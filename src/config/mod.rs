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
use std::net::SocketAddr;
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

mod errors;
mod muc;
mod push;
mod schema;
mod settings;

pub use errors::*;
pub use muc::{MucConfig, MucSettings};
pub use push::{MucServices, PushConfig, PushSettings};
pub use schema::*;
pub use settings::*;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "HERALD_";
/// Environment variable giving the default `server_user` of `[[sinks.xmpp]]` entries.
pub const WORLD_SERVER_USERNAME: &str = "WORLD_SERVER_USERNAME";
/// `server_user` when neither the config nor [`WORLD_SERVER_USERNAME`] names one.
pub const DEFAULT_SERVER_USER: &str = "server";

/// The top-level sections, in documentation order.
pub(super) const SECTIONS: &[&str] = &[
    "component",
    "store",
    "presence",
    "sinks",
    "admin",
    "http",
    "push",
    "muc",
];
/// Keys whose environment values are strings verbatim (never parsed as numbers or booleans).
pub(super) const ENV_STRING_KEYS: &[&str] = &[
    "component.jid",
    "component.secret",
    "component.secret_file",
    "component.server",
    "store.path",
    "http.listen",
    "http.token",
    "http.token_file",
    "presence.ejabberd_api.url",
    "presence.ejabberd_api.token",
    "presence.ejabberd_api.token_file",
];
/// Name of the environment layer in figment metadata; used to say where a bad value came from.
pub(super) const ENV_SOURCE: &str = "`HERALD_` environment variable(s)";
pub(super) const MIN_CACHE_BYTES: u64 = 1024 * 1024;
pub(super) const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Upper bound of the timers that pace herald: the component's `read_timeout`,
/// `request_timeout`, `reconnect_min` and `reconnect_max`, `presence.snapshot_timeout`, and a
/// webhook's `timeout`, `batch_delay`, `retry_min` and `retry_max`. Nothing herald does should
/// wait longer without a sign of life, and a larger value is a typo (`"60m"` for `"60s"`), not a
/// plan; it also keeps every deadline computed from them far from overflowing.
pub const MAX_TIMER: Duration = Duration::from_secs(60 * 60);
/// Upper bound of `component.keepalive`: it must stay under half of `read_timeout`, so under half
/// of [`MAX_TIMER`].
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(30 * 60);
/// Upper bound of `component.stable_after`: a connection up for a day is stable.
pub const MAX_STABLE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Default and bounds of `component.max_stanza_bytes`.
pub const DEFAULT_MAX_STANZA_BYTES: usize = 1024 * 1024;
pub(super) const MIN_STANZA_BYTES: usize = 4096;
pub(super) const MAX_STANZA_BYTES: usize = 16 * 1024 * 1024;
/// Default and bounds of `presence.max_status_bytes`.
pub const DEFAULT_MAX_STATUS_BYTES: usize = 1024;
/// Default `presence.liveness_interval`.
pub const DEFAULT_LIVENESS_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Shortest `presence.liveness_interval`.
pub const MIN_LIVENESS_INTERVAL: Duration = Duration::from_secs(1);
/// Default `http.listen`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8347";
/// Shortest `http.token`.
pub const MIN_HTTP_TOKEN_CHARS: usize = 16;
pub(super) const MIN_STATUS_BYTES: usize = 64;
pub(super) const MAX_STATUS_BYTES: usize = 65536;
/// Largest `batch_max` of a webhook sink.
pub const MAX_WEBHOOK_BATCH: usize = 10_000;
/// Longest sink name (it names the sink's queue in the store and appears in every log line).
pub(super) const MAX_SINK_NAME: usize = 128;
/// Headers a webhook sink sets itself (or HTTP framing needs): not configurable in `headers`.
/// Every `X-Herald-…` name is reserved as well.
pub(super) const RESERVED_HEADERS: &[&str] = &[
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

pub(super) fn load_layers(toml: &str, origin: Option<&Path>) -> Result<Settings, ConfigErrors> {
    let figment = Figment::new()
        .merge(Toml::string(toml))
        .merge(EnvLayer::new());
    let world_server_username = std::env::var(WORLD_SERVER_USERNAME).ok();
    from_figment(&figment, origin, world_server_username.as_deref())
}

/// Deserialises each section of `figment` and validates the result, collecting all problems.
pub(super) fn from_figment(
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
        http: sections.read("http"),
        push: sections.read("push"),
        muc: sections.read("muc"),
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
pub(super) struct Sections<'a> {
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
pub(super) struct EnvLayer(Env);

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
pub(super) fn merge_dicts(into: &mut Dict, from: Dict) {
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
