//! `[push]`: who may register push app servers with herald, the limits of the registration
//! store, and how pushes are built (XEP-0357; options and defaults as Prosody's
//! `mod_cloud_notify`).

use super::*;
use crate::push::RoomMode;

/// Bounds of `push.max_devices`.
pub(super) const MAX_DEVICES: usize = 100;
/// Bounds of `push.max_rooms_per_user` and `push.max_rooms`.
pub(super) const MAX_ROOMS_PER_USER: usize = 10_000;
pub(super) const MAX_ROOMS: usize = 10_000_000;
/// Bound of `push.max_errors`.
pub(super) const MAX_ERRORS: u32 = 100_000;
/// Bound of `push.max_sessions_per_user`.
pub(super) const MAX_SESSIONS_PER_USER: usize = 1000;
/// Longest `push.important_body` and `push.room_nick`, in bytes.
pub(super) const MAX_PUSH_TEXT: usize = 1024;
/// Longest `push.coalesce`.
pub(super) const MAX_COALESCE: Duration = Duration::from_secs(10 * 60);
/// Longest `push.max_age`.
pub(super) const MAX_PUSH_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Bound of `push.max_in_flight`.
pub(super) const MAX_IN_FLIGHT: usize = 100_000;

/// `[push]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Domains whose users may register push app servers (bare domains); everyone else is
    /// refused with `forbidden`. Default: `component.server_domains` and the parent domain of
    /// `component.jid`. Example: `domains = ["example.org"]`.
    pub domains: Option<Vec<String>>,
    /// MUC services whose rooms users may watch (bare domains), or `["*"]` for any. Default:
    /// the served `domains` and their subdomains (`muc.example.org` under `example.org`).
    /// Example: `muc_services = ["conference.example.org"]`.
    pub muc_services: Option<Vec<String>>,
    /// Registrations kept per user (1..=100); registering one more evicts the least recently
    /// used. Default: `5`. Example: `max_devices = 3`.
    pub max_devices: usize,
    /// Rooms one user may watch (1..=10000). Default: `50`. Example: `max_rooms_per_user = 20`.
    pub max_rooms_per_user: usize,
    /// Rooms herald watches in all (1..=10000000). Default: `10000`.
    /// Example: `max_rooms = 50000`.
    pub max_rooms: usize,
    /// The mode of a room when `push-room` leaves `mode` out: `always`, `mentioned` or
    /// `never`. Default: `"always"`. Example: `default_room_mode = "mentioned"`.
    pub default_room_mode: String,
    /// The nick herald joins watched rooms with (1..=1024 bytes). Default: `"herald"`.
    /// Example: `room_nick = "push-bot"`.
    pub room_nick: String,
    /// Put the message body into pushes (`last-message-body`). A privacy risk: app servers are
    /// run by third parties. Default: `false`. Example: `with_body = true`.
    pub with_body: bool,
    /// Put the sender into pushes (`last-message-sender`). Default: `false`.
    /// Example: `with_sender = true`.
    pub with_sender: bool,
    /// The placeholder body of pushes for important messages when `with_body` is off (at most
    /// 1024 bytes; empty sends none). Default: `"New Message!"`.
    /// Example: `important_body = "New message"`.
    pub important_body: String,
    /// Push errors in a row (not of type `wait`) after which a registration is removed
    /// (1..=100000). Default: `16`. Example: `max_errors = 5`.
    pub max_errors: u32,
    /// How long an unfinished ad-hoc command session is kept (more than 0, at most `"1h"`).
    /// Default: `"10m"`. Example: `session_timeout = "2m"`.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Unfinished ad-hoc command sessions per user (1..=1000); starting one more ends that
    /// user's oldest. Default: `8`. Example: `max_sessions_per_user = 4`.
    pub max_sessions_per_user: usize,
    /// Pushes to one registration within this window after a push become one push at its end,
    /// with the summed count and the latest sender and body (at most `"10m"`; `"0s"` pushes
    /// every message at once). Default: `"2s"`. Example: `coalesce = "5s"`.
    #[serde(with = "humantime_serde")]
    pub coalesce: Duration,
    /// How long herald waits for an app server's answer to a push (more than 0, at most
    /// `"1h"`); a push without an answer counts as an error and is retried. Default: `"15s"`.
    /// Example: `timeout = "30s"`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A push not delivered within this time of its message is dropped, with a log line,
    /// instead of waking a phone for stale news (more than 0, at most `"24h"`). Default:
    /// `"5m"`. Example: `max_age = "1m"`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Pushes awaiting an answer at once, over all app servers (2..=100000). Default: `1024`.
    /// Example: `max_in_flight = 4096`.
    pub max_in_flight: usize,
    /// Pushes awaiting an answer at once from one app server (at least 1, less than
    /// `max_in_flight`), so that a slow or dead app server never takes every slot and delays
    /// the pushes to others. Most users share a few app servers (their client vendor's), and
    /// each answer takes a network round trip, so this bounds one app server's rate: 256
    /// awaiting at 50 ms each is about 5 000 pushes/s. Default: `256`.
    /// Example: `max_in_flight_per_server = 64`.
    pub max_in_flight_per_server: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            domains: None,
            muc_services: None,
            max_devices: 5,
            max_rooms_per_user: 50,
            max_rooms: 10_000,
            default_room_mode: "always".to_owned(),
            room_nick: "herald".to_owned(),
            with_body: false,
            with_sender: false,
            important_body: "New Message!".to_owned(),
            max_errors: 16,
            session_timeout: Duration::from_secs(600),
            max_sessions_per_user: 8,
            coalesce: Duration::from_secs(2),
            timeout: Duration::from_secs(15),
            max_age: Duration::from_secs(300),
            max_in_flight: 1024,
            max_in_flight_per_server: 256,
        }
    }
}

/// Which MUC services rooms may be on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MucServices {
    /// `["*"]`: any.
    Any,
    /// The listed services (lowercase bare domains).
    Listed(Vec<String>),
    /// The default: a served domain or a subdomain of one.
    UnderDomains,
}

/// `[push]`, validated; see [`PushConfig`] for meanings.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Lowercase valid domains, at least one, no duplicates.
    pub domains: Vec<String>,
    pub muc_services: MucServices,
    pub max_devices: usize,
    pub max_rooms_per_user: usize,
    pub max_rooms: usize,
    pub default_room_mode: RoomMode,
    pub room_nick: String,
    pub with_body: bool,
    pub with_sender: bool,
    pub important_body: String,
    pub max_errors: u32,
    pub session_timeout: Duration,
    pub max_sessions_per_user: usize,
    /// Zero: off.
    pub coalesce: Duration,
    pub timeout: Duration,
    pub max_age: Duration,
    pub max_in_flight: usize,
    /// Less than `max_in_flight`.
    pub max_in_flight_per_server: usize,
}

#[cfg(test)]
impl PushSettings {
    /// The defaults for users of `example.org`, with `muc_services`: a fixture for unit tests.
    pub(crate) fn for_tests(muc_services: MucServices) -> PushSettings {
        PushSettings {
            domains: vec!["example.org".into()],
            muc_services,
            max_devices: 5,
            max_rooms_per_user: 50,
            max_rooms: 10_000,
            default_room_mode: RoomMode::Always,
            room_nick: "herald".into(),
            with_body: false,
            with_sender: false,
            important_body: "New Message!".into(),
            max_errors: 16,
            session_timeout: Duration::from_secs(600),
            max_sessions_per_user: 8,
            coalesce: Duration::from_secs(2),
            timeout: Duration::from_secs(15),
            max_age: Duration::from_secs(300),
            max_in_flight: 1024,
            max_in_flight_per_server: 256,
        }
    }
}

fn count_in(key: &str, value: usize, max: usize, p: &mut Problems) -> bool {
    let ok = (1..=max).contains(&value);
    if !ok {
        p.push(key, format!("must be between 1 and {max}"));
    }
    ok
}

fn domain_list(key: &str, raw: &[String], p: &mut Problems) -> Option<Vec<String>> {
    if raw.is_empty() {
        p.push(key, "must list at least one domain");
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, d) in raw.iter().enumerate() {
        match domain_jid(&format!("{key}[{i}]"), d, p) {
            Some(jid) => {
                let d = jid.domain().as_str().to_lowercase();
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Validates `[push]`; `component` (when valid) gives the default `domains`.
pub(super) fn push_settings(
    raw: PushConfig,
    component: Option<&ComponentSettings>,
    p: &mut Problems,
) -> Option<PushSettings> {
    let domains = match &raw.domains {
        Some(list) => domain_list("push.domains", list, p),
        None => component.map(|c| {
            let mut d = c.server_domains.clone();
            let parent = parent_domain(c.jid.domain().as_str());
            if !d.contains(&parent) {
                d.push(parent);
            }
            d
        }),
    };
    let muc_services = match &raw.muc_services {
        None => Some(MucServices::UnderDomains),
        Some(list) if list.len() == 1 && list[0] == "*" => Some(MucServices::Any),
        Some(list) => domain_list("push.muc_services", list, p).map(MucServices::Listed),
    };
    let mut ok = count_in("push.max_devices", raw.max_devices, MAX_DEVICES, p);
    ok &= count_in(
        "push.max_rooms_per_user",
        raw.max_rooms_per_user,
        MAX_ROOMS_PER_USER,
        p,
    );
    ok &= count_in("push.max_rooms", raw.max_rooms, MAX_ROOMS, p);
    ok &= count_in(
        "push.max_sessions_per_user",
        raw.max_sessions_per_user,
        MAX_SESSIONS_PER_USER,
        p,
    );
    if !(1..=MAX_ERRORS).contains(&raw.max_errors) {
        p.push(
            "push.max_errors",
            format!("must be between 1 and {MAX_ERRORS}"),
        );
        ok = false;
    }
    ok &= in_range("push.session_timeout", raw.session_timeout, MAX_TIMER, p);
    ok &= at_most("push.coalesce", raw.coalesce, MAX_COALESCE, p);
    ok &= in_range("push.timeout", raw.timeout, MAX_TIMER, p);
    ok &= in_range("push.max_age", raw.max_age, MAX_PUSH_AGE, p);
    if !(2..=MAX_IN_FLIGHT).contains(&raw.max_in_flight) {
        p.push(
            "push.max_in_flight",
            format!("must be between 2 and {MAX_IN_FLIGHT}"),
        );
        ok = false;
    } else if raw.max_in_flight_per_server == 0 || raw.max_in_flight_per_server >= raw.max_in_flight
    {
        p.push(
            "push.max_in_flight_per_server",
            format!(
                "must be at least 1 and less than push.max_in_flight ({}), so that one app server cannot take every slot",
                raw.max_in_flight
            ),
        );
        ok = false;
    }
    let default_room_mode = match RoomMode::parse(&raw.default_room_mode) {
        Some(m) => Some(m),
        None => {
            p.push(
                "push.default_room_mode",
                format!(
                    "{:?} is not a mode (always, mentioned or never)",
                    raw.default_room_mode
                ),
            );
            None
        }
    };
    if raw.room_nick.is_empty() || raw.room_nick.len() > MAX_PUSH_TEXT {
        p.push(
            "push.room_nick",
            format!("must be 1..={MAX_PUSH_TEXT} bytes"),
        );
        ok = false;
    } else if raw.room_nick.chars().any(char::is_control) {
        p.push("push.room_nick", "must not contain control characters");
        ok = false;
    }
    if raw.important_body.len() > MAX_PUSH_TEXT {
        p.push(
            "push.important_body",
            format!("must be at most {MAX_PUSH_TEXT} bytes"),
        );
        ok = false;
    }
    let (domains, muc_services, default_room_mode) = (domains?, muc_services?, default_room_mode?);
    ok.then_some(PushSettings {
        domains,
        muc_services,
        max_devices: raw.max_devices,
        max_rooms_per_user: raw.max_rooms_per_user,
        max_rooms: raw.max_rooms,
        default_room_mode,
        room_nick: raw.room_nick,
        with_body: raw.with_body,
        with_sender: raw.with_sender,
        important_body: raw.important_body,
        max_errors: raw.max_errors,
        session_timeout: raw.session_timeout,
        max_sessions_per_user: raw.max_sessions_per_user,
        coalesce: raw.coalesce,
        timeout: raw.timeout,
        max_age: raw.max_age,
        max_in_flight: raw.max_in_flight,
        max_in_flight_per_server: raw.max_in_flight_per_server,
    })
}

#[cfg(test)]
mod tests {
    const MINIMAL: &str = "[component]\njid = \"herald.example.org\"\nsecret = \"s3cr3t\"\n";

    fn problems(push: &str) -> Vec<(String, String)> {
        match crate::config::load_str(&format!("{MINIMAL}[push]\n{push}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| (p.key, p.message)).collect(),
        }
    }

    #[test]
    fn delivery_keys_default_and_accept_a_zero_coalesce() {
        let s = crate::config::load_str(MINIMAL).unwrap().push;
        assert_eq!(
            (
                s.coalesce.as_secs(),
                s.timeout.as_secs(),
                s.max_age.as_secs()
            ),
            (2, 15, 300)
        );
        assert_eq!((s.max_in_flight, s.max_in_flight_per_server), (1024, 256));
        assert!(problems("coalesce = \"0s\"").is_empty());
    }

    #[test]
    fn delivery_keys_out_of_bounds_are_reported_with_their_key() {
        let got = problems(
            "coalesce = \"11m\"\ntimeout = \"0s\"\nmax_age = \"25h\"\nmax_in_flight = 1\n",
        );
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "push.coalesce",
                "push.timeout",
                "push.max_age",
                "push.max_in_flight"
            ],
            "{got:?}"
        );
        let got = problems("max_in_flight = 8\nmax_in_flight_per_server = 8\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "push.max_in_flight_per_server");
        assert!(
            got[0].1.contains("less than push.max_in_flight (8)"),
            "{got:?}"
        );
    }
}
