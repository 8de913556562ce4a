//! `[muc]`: how herald makes sure it is still in the rooms it joined (XEP-0410 MUC self-ping)
//! and whether it tells users who dropped out of a watched room how to get back in.

use super::*;

/// Upper bound of `muc.self_ping_idle`: a day of silence.
pub(super) const MAX_SELF_PING_IDLE: Duration = Duration::from_secs(24 * 60 * 60);
/// Bounds of `muc.self_ping_concurrency`.
pub(super) const MAX_SELF_PING_CONCURRENCY: usize = 10_000;
/// Bounds of `muc.self_ping_undecided`.
pub(super) const MAX_SELF_PING_UNDECIDED: u32 = 100;

/// `[muc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucConfig {
    /// Silence from a joined room (no stanza from it) after which herald pings its own occupant
    /// JID there (XEP-0410), more than 0, at most `"24h"`. Default: `"15m"`.
    /// Example: `self_ping_idle = "5m"`.
    #[serde(with = "humantime_serde")]
    pub self_ping_idle: Duration,
    /// After each (re)connect, how long after rejoining a room herald pings it the first time,
    /// more than 0, at most `self_ping_idle`. Default: `"60s"`. Example: `self_ping_delay = "2m"`.
    #[serde(with = "humantime_serde")]
    pub self_ping_delay: Duration,
    /// Self-pings waiting for their answer at once (1..=10000). Default: `50`.
    /// Example: `self_ping_concurrency = 20`.
    pub self_ping_concurrency: usize,
    /// How long a self-ping may wait for its answer before it counts as undecided, more than 0,
    /// at most `"1h"`. Long, because the room may reflect the ping to a sleeping client.
    /// Default: `"30s"`. Example: `self_ping_timeout = "1m"`.
    #[serde(with = "humantime_serde")]
    pub self_ping_timeout: Duration,
    /// Undecided self-pings in a row (timeouts, `remote-server-not-found`,
    /// `remote-server-timeout`) after which herald takes itself as out of the room and joins
    /// it again (1..=100). Default: `3`. Example: `self_ping_undecided = 5`.
    pub self_ping_undecided: u32,
    /// Send a user who dropped out of a watched room (status 333, or a kick for an error) while
    /// online a XEP-0249 invitation back to it, at most one per user and room per 10 minutes.
    /// Default: `true`. Example: `rejoin_hints = false`.
    pub rejoin_hints: bool,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            self_ping_idle: Duration::from_secs(15 * 60),
            self_ping_delay: Duration::from_secs(60),
            self_ping_concurrency: 50,
            self_ping_timeout: Duration::from_secs(30),
            self_ping_undecided: 3,
            rejoin_hints: true,
        }
    }
}

/// `[muc]`, validated; see [`MucConfig`] for meanings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MucSettings {
    /// In (0, 24h].
    pub self_ping_idle: Duration,
    /// In (0, `self_ping_idle`].
    pub self_ping_delay: Duration,
    /// In 1..=10000.
    pub self_ping_concurrency: usize,
    /// In (0, [`MAX_TIMER`]].
    pub self_ping_timeout: Duration,
    /// In 1..=100.
    pub self_ping_undecided: u32,
    pub rejoin_hints: bool,
}

impl Default for MucSettings {
    fn default() -> Self {
        let d = MucConfig::default();
        MucSettings {
            self_ping_idle: d.self_ping_idle,
            self_ping_delay: d.self_ping_delay,
            self_ping_concurrency: d.self_ping_concurrency,
            self_ping_timeout: d.self_ping_timeout,
            self_ping_undecided: d.self_ping_undecided,
            rejoin_hints: d.rejoin_hints,
        }
    }
}

/// Validates `[muc]`.
pub(super) fn muc_settings(raw: MucConfig, p: &mut Problems) -> Option<MucSettings> {
    let mut ok = in_range(
        "muc.self_ping_idle",
        raw.self_ping_idle,
        MAX_SELF_PING_IDLE,
        p,
    );
    if non_zero("muc.self_ping_delay", raw.self_ping_delay, p)
        && ok
        && raw.self_ping_delay > raw.self_ping_idle
    {
        p.push(
            "muc.self_ping_delay",
            format!(
                "must be at most muc.self_ping_idle ({})",
                human(raw.self_ping_idle)
            ),
        );
        ok = false;
    } else if raw.self_ping_delay.is_zero() {
        ok = false;
    }
    ok &= in_range("muc.self_ping_timeout", raw.self_ping_timeout, MAX_TIMER, p);
    if !(1..=MAX_SELF_PING_CONCURRENCY).contains(&raw.self_ping_concurrency) {
        p.push(
            "muc.self_ping_concurrency",
            format!("must be between 1 and {MAX_SELF_PING_CONCURRENCY}"),
        );
        ok = false;
    }
    if !(1..=MAX_SELF_PING_UNDECIDED).contains(&raw.self_ping_undecided) {
        p.push(
            "muc.self_ping_undecided",
            format!("must be between 1 and {MAX_SELF_PING_UNDECIDED}"),
        );
        ok = false;
    }
    ok.then_some(MucSettings {
        self_ping_idle: raw.self_ping_idle,
        self_ping_delay: raw.self_ping_delay,
        self_ping_concurrency: raw.self_ping_concurrency,
        self_ping_timeout: raw.self_ping_timeout,
        self_ping_undecided: raw.self_ping_undecided,
        rejoin_hints: raw.rejoin_hints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: MucConfig) -> Result<MucSettings, Vec<String>> {
        let mut p = Problems::default();
        match muc_settings(raw, &mut p) {
            Some(s) if p.0.is_empty() => Ok(s),
            _ => Err(p
                .0
                .iter()
                .map(|x| format!("{}: {}", x.key, x.message))
                .collect()),
        }
    }

    #[test]
    fn defaults_are_valid_and_bounds_name_their_key() {
        assert_eq!(check(MucConfig::default()), Ok(MucSettings::default()));
        let errors = check(MucConfig {
            self_ping_idle: Duration::from_secs(60),
            self_ping_delay: Duration::from_secs(120),
            self_ping_concurrency: 0,
            self_ping_timeout: Duration::ZERO,
            self_ping_undecided: 101,
            rejoin_hints: false,
        })
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "muc.self_ping_delay: must be at most muc.self_ping_idle (1m)",
                "muc.self_ping_timeout: must be greater than 0",
                "muc.self_ping_concurrency: must be between 1 and 10000",
                "muc.self_ping_undecided: must be between 1 and 100",
            ]
        );
        let idle = check(MucConfig {
            self_ping_idle: Duration::from_secs(2 * 86400),
            ..MucConfig::default()
        })
        .unwrap_err();
        assert_eq!(idle, ["muc.self_ping_idle: must be at most 24h"]);
    }
}
