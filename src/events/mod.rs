//! Presence events: the one type every sink consumes, and its JSON shape.
//!
//! The JSON is a superset of MongooseIM `mod_presence_notify`'s payload (`trace`, `type`,
//! `args.user`, `args.presence`), so consumers of that module keep working unchanged.

pub mod fanout;

use serde::{Deserialize, Serialize};

/// The `type` field every event carries (the seed module's constant).
pub const EVENT_TYPE: &str = "PRESENCE_DID_CHANGE";

/// How herald learnt about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A presence forwarded by the server as it happened.
    Live,
    /// A resource herald did not know, learnt from the server's snapshot after a (re)connect.
    Snapshot,
    /// A change that happened while herald was away, found by comparing the snapshot.
    Resync,
    /// herald itself found the resource gone (liveness check).
    Liveness,
}

/// `available` or `unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Available,
    Unavailable,
}

/// The `args` object of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventArgs {
    /// The full JID of the resource that changed.
    pub user: String,
    pub presence: Availability,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default)]
    pub priority: i8,
    /// Online resources of the user's bare JID after this change.
    pub resources: u32,
}

/// One change of one resource (full JID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// Unique id of this event; also the `id` of the XMPP message that carries it.
    pub trace: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub args: EventArgs,
    /// Strictly increasing, never reused, also across restarts.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T04:19:40.123Z`.
    pub at: String,
    pub source: Source,
}

impl PresenceEvent {
    /// Builds an event with a fresh trace id, stamped `at_ms` (milliseconds since the Unix epoch).
    pub fn new(seq: u64, at_ms: i64, source: Source, args: EventArgs) -> Self {
        PresenceEvent {
            trace: uuid::Uuid::new_v4().to_string(),
            kind: EVENT_TYPE.to_owned(),
            args,
            seq,
            at: format_millis(at_ms),
            source,
        }
    }

    /// The event as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_millis(ms: i64) -> String {
    use chrono::{SecondsFormat, TimeZone, Utc};
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PresenceEvent {
        PresenceEvent {
            trace: "6f1c0000-0000-4000-8000-000000000000".into(),
            kind: EVENT_TYPE.into(),
            args: EventArgs {
                user: "alice@example.org/phone".into(),
                presence: Availability::Available,
                show: Some("away".into()),
                status: Some("brb".into()),
                priority: 0,
                resources: 2,
            },
            seq: 1042,
            at: format_millis(1_795_321_180_123),
            source: Source::Live,
        }
    }

    #[test]
    fn json_matches_the_design_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "trace": "6f1c0000-0000-4000-8000-000000000000",
                "type": "PRESENCE_DID_CHANGE",
                "args": {"user": "alice@example.org/phone", "presence": "available",
                         "show": "away", "status": "brb", "priority": 0, "resources": 2},
                "seq": 1042,
                "at": "2026-11-22T04:19:40.123Z",
                "source": "live"
            })
        );
    }

    #[test]
    fn absent_show_and_status_are_omitted() {
        let mut e = sample();
        e.args.show = None;
        e.args.status = None;
        e.args.presence = Availability::Unavailable;
        e.source = Source::Resync;
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        let args = v["args"].as_object().unwrap();
        assert!(!args.contains_key("show"));
        assert!(!args.contains_key("status"));
        assert_eq!(args["presence"], "unavailable");
        assert_eq!(v["source"], "resync");
    }

    #[test]
    fn seed_consumers_find_their_fields() {
        // mod_presence_notify consumers read exactly these four fields.
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert!(v["trace"].is_string());
        assert_eq!(v["type"], "PRESENCE_DID_CHANGE");
        assert!(v["args"]["user"].is_string());
        assert!(v["args"]["presence"].is_string());
    }

    #[test]
    fn new_events_get_distinct_traces() {
        let args = sample().args;
        let a = PresenceEvent::new(1, 0, Source::Live, args.clone());
        let b = PresenceEvent::new(2, 0, Source::Live, args);
        assert_ne!(a.trace, b.trace);
        assert_eq!(a.at, "1970-01-01T00:00:00.000Z");
    }
}
