//! herald's Prometheus metrics: every name and help text in one place, and the handles the
//! owners count with.
//!
//! One [`Metrics`] per running herald (so several run side by side in one test process), made
//! by [`crate::app`] and handed to the owners: the presence service counts presences and
//! events ([`PresenceMetrics`]), each delivery worker its sink's deliveries ([`SinkMetrics`]).
//! Gauges that describe a state (connection, privileges, backlog, store size) are read when
//! `/metrics` is scraped ([`crate::http`]), not kept up to date by the owners.
//!
//! Counters are exposed with the `_total` suffix the Prometheus text format gives them (the
//! constant [`EVENTS_EMITTED`] is `herald_events_emitted`, the series
//! `herald_events_emitted_total`). Counters start at 0 at each start of herald.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::events::Source;

/// A metric's name (without the `_total` of counters) and its help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricName {
    pub name: &'static str,
    pub help: &'static str,
}

const fn metric(name: &'static str, help: &'static str) -> MetricName {
    MetricName { name, help }
}

/// Gauge, 1 while the XMPP stream is logged in, 0 while herald is (re)connecting.
pub const CONNECTION_UP: MetricName = metric(
    "herald_connection_up",
    "1 while the component stream to the XMPP server is logged in, 0 while herald is connecting or reconnecting",
);
/// Counter of logins after the first one.
pub const CONNECTION_RECONNECTS: MetricName = metric(
    "herald_connection_reconnects",
    "Successful logins after the first one since herald started (each follows a lost stream)",
);
/// Gauge per `domain`, `privilege` (`presence`, `roster`, `message`) and `access`: 1 for what
/// the domain advertised on the current connection (absent while nothing was advertised).
pub const PRIVILEGE: MetricName = metric(
    "herald_privilege",
    "XEP-0356 privileges advertised by each server domain on the current connection (1 per domain, privilege and access granted)",
);
/// Counter of presences the server forwarded.
pub const PRESENCES_RECEIVED: MetricName = metric(
    "herald_presences_received",
    "Presence stanzas the server forwarded to herald (before validation)",
);
/// Gauge of online resources in the presence table.
pub const RESOURCES_ONLINE: MetricName = metric(
    "herald_presence_resources_online",
    "Online resources in herald's presence table",
);
/// Counter per `source` (`live`, `snapshot`, `resync`, `liveness`).
pub const EVENTS_EMITTED: MetricName = metric(
    "herald_events_emitted",
    "Presence events persisted into the outbox, by source",
);
/// Counter per `sink`.
pub const SINK_QUEUED: MetricName = metric(
    "herald_sink_queued",
    "Events persisted into the sink's queue",
);
/// Counter per `sink`.
pub const SINK_DELIVERED: MetricName = metric(
    "herald_sink_delivered",
    "Events the sink's endpoint acknowledged",
);
/// Counter per `sink`.
pub const SINK_RETRIES: MetricName = metric(
    "herald_sink_retries",
    "Delivery attempts that failed and will be tried again",
);
/// Counter per `sink`.
pub const SINK_DEAD_LETTERED: MetricName = metric(
    "herald_sink_dead_lettered",
    "Events moved to the sink's dead letters (list them with `herald dead-letters`)",
);
/// Gauge per `sink`.
pub const SINK_BACKLOG: MetricName = metric(
    "herald_sink_backlog",
    "Events in the sink's queue, not yet delivered or dead-lettered",
);
/// Gauge per `sink`, seconds; 0 when the queue is empty.
pub const SINK_OLDEST_AGE: MetricName = metric(
    "herald_sink_oldest_event_age_seconds",
    "Age of the oldest undelivered event in the sink's queue (0 when it is empty)",
);
/// Gauge, bytes.
pub const STORE_SIZE: MetricName = metric(
    "herald_store_size_bytes",
    "Size of herald's store directory on disk",
);

/// Gauge of rooms herald is in.
pub const ROOMS_JOINED: MetricName = metric(
    "herald_rooms_joined",
    "Watched rooms herald is currently an occupant of",
);
/// Gauge of rooms herald cannot join (retrying or gone).
pub const ROOMS_FAILING: MetricName = metric(
    "herald_rooms_failing",
    "Watched rooms herald cannot join: refused and retrying, or gone",
);
/// Counter of join attempts.
pub const ROOM_JOINS: MetricName = metric(
    "herald_room_joins",
    "Join presences herald sent to rooms (first joins and rejoins)",
);
/// Counter of join attempts of rooms herald had been in before.
pub const ROOM_REJOINS: MetricName = metric(
    "herald_room_rejoins",
    "Join presences sent to a room herald had been in before (after a reconnect, a kick or a removal)",
);
/// Counter of pushes the app servers accepted (`result`).
pub const PUSH_SENT: MetricName = metric(
    "herald_push_sent",
    "Group-chat pushes (XEP-0357 publishes) the app servers accepted",
);
/// Counter of messages folded into a later push to the same registration.
pub const PUSH_COALESCED: MetricName = metric(
    "herald_push_coalesced",
    "Group-chat messages folded into a later push to the same registration (push.coalesce)",
);
/// Counter per `kind` (`error`, `wait`, `timeout`, `disconnected`).
pub const PUSH_FAILED: MetricName = metric(
    "herald_push_failed",
    "Push attempts that failed, by kind: error (dropped, counted), wait (retried), timeout (counted, retried), disconnected (retried after the reconnect)",
);
/// Counter per `reason` (`errors`, `remote_disable`).
pub const PUSH_REGISTRATIONS_REMOVED: MetricName = metric(
    "herald_push_registrations_removed",
    "Push registrations herald removed, by reason: errors (push.max_errors reached) or remote_disable (the app server asked)",
);
/// Counter of pushes dropped because they were older than `push.max_age`.
pub const PUSH_EXPIRED: MetricName = metric(
    "herald_push_expired",
    "Pushes dropped undelivered because they were older than push.max_age",
);
/// Gauge of pushes persisted and not yet answered.
pub const PUSH_PENDING: MetricName = metric(
    "herald_push_pending",
    "Pushes persisted and not yet answered by their app server (including those waiting for a coalescing window or a retry)",
);

/// Counter per `outcome` (`joined`, `undecided`, `not_joined`).
pub const ROOM_SELF_PINGS: MetricName = metric(
    "herald_room_self_pings",
    "Answered or timed-out XEP-0410 self-pings of rooms herald is in, by what the answer says: joined, undecided (timeout, remote-server-not-found or -timeout) or not_joined",
);
/// Counter of rejoins a self-ping asked for.
pub const ROOM_SELF_PING_REJOINS: MetricName = metric(
    "herald_room_self_ping_rejoins",
    "Rooms herald joined again because a self-ping found it out of the room (not joined, or undecided too often in a row)",
);
/// Counter of XEP-0249 invitations sent to users who dropped out of a watched room.
pub const ROOM_REJOIN_HINTS: MetricName = metric(
    "herald_room_rejoin_hints",
    "Direct invitations (XEP-0249) sent to online users who dropped out of a watched room because of an error (status 333 or a kick for an error)",
);

/// Every metric herald exposes (the README lists them, a test checks each is exposed).
pub const ALL: &[MetricName] = &[
    CONNECTION_UP,
    CONNECTION_RECONNECTS,
    PRIVILEGE,
    PRESENCES_RECEIVED,
    RESOURCES_ONLINE,
    EVENTS_EMITTED,
    SINK_QUEUED,
    SINK_DELIVERED,
    SINK_RETRIES,
    SINK_DEAD_LETTERED,
    SINK_BACKLOG,
    SINK_OLDEST_AGE,
    STORE_SIZE,
    ROOMS_JOINED,
    ROOMS_FAILING,
    ROOM_JOINS,
    ROOM_REJOINS,
    PUSH_SENT,
    PUSH_COALESCED,
    PUSH_FAILED,
    PUSH_REGISTRATIONS_REMOVED,
    PUSH_EXPIRED,
    PUSH_PENDING,
    ROOM_SELF_PINGS,
    ROOM_SELF_PING_REJOINS,
    ROOM_REJOIN_HINTS,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The `outcome` labels of [`ROOM_SELF_PINGS`].
pub const PING_OUTCOMES: [&str; 3] = ["joined", "undecided", "not_joined"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrivilegeLabels {
    pub domain: String,
    pub privilege: String,
    pub access: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The `source` label of an event.
pub fn source_label(source: Source) -> &'static str {
    match source {
        Source::Live => "live",
        Source::Snapshot => "snapshot",
        Source::Resync => "resync",
        Source::Liveness => "liveness",
    }
}

const SOURCES: [Source; 4] = [
    Source::Live,
    Source::Snapshot,
    Source::Resync,
    Source::Liveness,
];

/// The presence owner's counters. The default one counts into nothing that is exposed.
#[derive(Clone, Debug, Default)]
pub struct PresenceMetrics {
    pub received: Counter,
    /// Indexed like `SOURCES`.
    events: [Counter; 4],
}

impl PresenceMetrics {
    /// Counts `n` events of `source` persisted into the outbox.
    pub fn emitted(&self, source: Source, n: u64) {
        let i = SOURCES.iter().position(|s| *s == source).unwrap_or(0);
        self.events[i].inc_by(n);
    }
}

/// One sink's counters. The default one counts into nothing that is exposed.
#[derive(Clone, Debug, Default)]
pub struct SinkMetrics {
    pub queued: Counter,
    pub delivered: Counter,
    pub retries: Counter,
    pub dead_lettered: Counter,
}

/// The rooms owner's counts. The default one counts into nothing that is exposed.
#[derive(Clone, Debug, Default)]
pub struct RoomsMetrics {
    pub joined: Gauge,
    pub failing: Gauge,
    pub joins: Counter,
    pub rejoins: Counter,
    /// Indexed like [`PING_OUTCOMES`].
    pings: [Counter; 3],
    pub self_ping_rejoins: Counter,
    pub rejoin_hints: Counter,
}

impl RoomsMetrics {
    /// Counts one self-ping with this `outcome` label ([`PING_OUTCOMES`]).
    pub fn ping(&self, outcome: &str) {
        if let Some(i) = PING_OUTCOMES.iter().position(|o| *o == outcome) {
            self.pings[i].inc();
        }
    }

    /// Self-pings counted with `outcome`.
    pub fn pings(&self, outcome: &str) -> u64 {
        PING_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.pings[i].get())
    }
}

/// How a push attempt failed (the `kind` label of [`PUSH_FAILED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFailure {
    /// An error answer other than `wait`: counted, the push dropped.
    Error,
    /// An error of type `wait`: retried.
    Wait,
    /// No answer within `push.timeout`: counted, retried.
    Timeout,
    /// The connection was lost before the answer: retried after the reconnect.
    Disconnected,
}

impl PushFailure {
    pub const ALL: [PushFailure; 4] = [
        PushFailure::Error,
        PushFailure::Wait,
        PushFailure::Timeout,
        PushFailure::Disconnected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PushFailure::Error => "error",
            PushFailure::Wait => "wait",
            PushFailure::Timeout => "timeout",
            PushFailure::Disconnected => "disconnected",
        }
    }
}

/// Why herald removed a registration (the `reason` label of [`PUSH_REGISTRATIONS_REMOVED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedBy {
    Errors,
    RemoteDisable,
}

/// The push owner's counters. The default one counts into nothing that is exposed; cloning
/// shares them.
#[derive(Clone, Debug, Default)]
pub struct PushMetrics {
    pub sent: Counter,
    pub coalesced: Counter,
    /// Indexed like [`PushFailure::ALL`].
    failed: [Counter; 4],
    removed_errors: Counter,
    removed_remote: Counter,
    pub expired: Counter,
    pub pending: Gauge,
}

impl PushMetrics {
    pub fn failed(&self, kind: PushFailure) {
        self.failed_counter(kind).inc();
    }

    pub fn failed_count(&self, kind: PushFailure) -> u64 {
        self.failed_counter(kind).get()
    }

    fn failed_counter(&self, kind: PushFailure) -> &Counter {
        let i = PushFailure::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        &self.failed[i]
    }

    pub fn removed(&self, by: RemovedBy) {
        self.removed_counter(by).inc();
    }

    pub fn removed_count(&self, by: RemovedBy) -> u64 {
        self.removed_counter(by).get()
    }

    fn removed_counter(&self, by: RemovedBy) -> &Counter {
        match by {
            RemovedBy::Errors => &self.removed_errors,
            RemovedBy::RemoteDisable => &self.removed_remote,
        }
    }
}

/// The registry and every metric in it; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    presence: PresenceMetrics,
    rooms: RoomsMetrics,
    push: PushMetrics,
    sink_queued: Family<SinkLabels, Counter>,
    sink_delivered: Family<SinkLabels, Counter>,
    sink_retries: Family<SinkLabels, Counter>,
    sink_dead_lettered: Family<SinkLabels, Counter>,
    /// Read at each scrape.
    pub(crate) gauges: Gauges,
}

/// The gauges set when `/metrics` is scraped, and the reconnect counter (derived from the
/// connection's login count).
#[derive(Clone, Default)]
pub(crate) struct Gauges {
    pub connection_up: Gauge,
    pub reconnects: Counter,
    pub privilege: Family<PrivilegeLabels, Gauge>,
    pub resources_online: Gauge,
    pub sink_backlog: Family<SinkLabels, Gauge>,
    pub sink_oldest_age: Family<SinkLabels, Gauge<f64, AtomicU64>>,
    pub store_size: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut presence = PresenceMetrics::default();
        let events: Family<SourceLabels, Counter> = Family::default();
        let g = Gauges::default();
        let sink_queued = Family::<SinkLabels, Counter>::default();
        let sink_delivered = Family::<SinkLabels, Counter>::default();
        let sink_retries = Family::<SinkLabels, Counter>::default();
        let sink_dead_lettered = Family::<SinkLabels, Counter>::default();
        // Every source shows from the start (at 0), counted through the pre-made handles.
        for (i, s) in SOURCES.iter().enumerate() {
            presence.events[i] = events
                .get_or_create(&SourceLabels {
                    source: source_label(*s).to_owned(),
                })
                .clone();
        }
        macro_rules! reg {
            ($m:expr, $metric:expr) => {
                registry.register($m.name, $m.help, $metric)
            };
        }
        reg!(CONNECTION_UP, g.connection_up.clone());
        reg!(CONNECTION_RECONNECTS, g.reconnects.clone());
        reg!(PRIVILEGE, g.privilege.clone());
        reg!(PRESENCES_RECEIVED, presence.received.clone());
        reg!(RESOURCES_ONLINE, g.resources_online.clone());
        reg!(EVENTS_EMITTED, events);
        reg!(SINK_QUEUED, sink_queued.clone());
        reg!(SINK_DELIVERED, sink_delivered.clone());
        reg!(SINK_RETRIES, sink_retries.clone());
        reg!(SINK_DEAD_LETTERED, sink_dead_lettered.clone());
        reg!(SINK_BACKLOG, g.sink_backlog.clone());
        reg!(SINK_OLDEST_AGE, g.sink_oldest_age.clone());
        reg!(STORE_SIZE, g.store_size.clone());
        let mut rooms = RoomsMetrics::default();
        reg!(ROOMS_JOINED, rooms.joined.clone());
        reg!(ROOMS_FAILING, rooms.failing.clone());
        reg!(ROOM_JOINS, rooms.joins.clone());
        reg!(ROOM_REJOINS, rooms.rejoins.clone());
        let mut push = PushMetrics::default();
        let failed: Family<KindLabels, Counter> = Family::default();
        for (i, k) in PushFailure::ALL.iter().enumerate() {
            push.failed[i] = failed
                .get_or_create(&KindLabels {
                    kind: k.label().to_owned(),
                })
                .clone();
        }
        let removed: Family<ReasonLabels, Counter> = Family::default();
        let reason = |r: &str| ReasonLabels {
            reason: r.to_owned(),
        };
        push.removed_errors = removed.get_or_create(&reason("errors")).clone();
        push.removed_remote = removed.get_or_create(&reason("remote_disable")).clone();
        reg!(PUSH_SENT, push.sent.clone());
        reg!(PUSH_COALESCED, push.coalesced.clone());
        reg!(PUSH_FAILED, failed);
        reg!(PUSH_REGISTRATIONS_REMOVED, removed);
        reg!(PUSH_EXPIRED, push.expired.clone());
        reg!(PUSH_PENDING, push.pending.clone());
        let pings: Family<OutcomeLabels, Counter> = Family::default();
        for (i, o) in PING_OUTCOMES.iter().enumerate() {
            rooms.pings[i] = pings
                .get_or_create(&OutcomeLabels {
                    outcome: (*o).to_owned(),
                })
                .clone();
        }
        reg!(ROOM_SELF_PINGS, pings);
        reg!(ROOM_SELF_PING_REJOINS, rooms.self_ping_rejoins.clone());
        reg!(ROOM_REJOIN_HINTS, rooms.rejoin_hints.clone());
        Metrics {
            inner: Arc::new(Inner {
                registry,
                presence,
                rooms,
                push,
                sink_queued,
                sink_delivered,
                sink_retries,
                sink_dead_lettered,
                gauges: g,
            }),
        }
    }

    /// The presence owner's counters.
    pub fn presence(&self) -> PresenceMetrics {
        self.inner.presence.clone()
    }

    /// The rooms owner's counts.
    pub fn rooms(&self) -> RoomsMetrics {
        self.inner.rooms.clone()
    }

    /// The push owner's counters.
    pub fn push(&self) -> PushMetrics {
        self.inner.push.clone()
    }

    /// The counters of the sink named `name` (they show, at 0, from this call on).
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let l = SinkLabels {
            sink: name.to_owned(),
        };
        let i = &self.inner;
        SinkMetrics {
            queued: i.sink_queued.get_or_create_owned(&l),
            delivered: i.sink_delivered.get_or_create_owned(&l),
            retries: i.sink_retries.get_or_create_owned(&l),
            dead_lettered: i.sink_dead_lettered.get_or_create_owned(&l),
        }
    }

    pub(crate) fn gauges(&self) -> &Gauges {
        &self.inner.gauges
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_with_its_help_and_counts_show() {
        let m = Metrics::new();
        m.presence().received.inc_by(3);
        m.presence().emitted(Source::Resync, 2);
        m.sink("hook").delivered.inc_by(5);
        // Labelled gauges show once a label set exists (the scrape creates them).
        let l = SinkLabels {
            sink: "hook".into(),
        };
        m.gauges().sink_backlog.get_or_create(&l).set(1);
        m.gauges().sink_oldest_age.get_or_create(&l).set(0.5);
        m.gauges()
            .privilege
            .get_or_create(&PrivilegeLabels {
                domain: "example.org".into(),
                privilege: "presence".into(),
                access: "managed_entity".into(),
            })
            .set(1);
        let text = m.render();
        for metric in ALL {
            assert!(
                text.contains(&format!("# HELP {}", metric.name)),
                "{} missing in\n{text}",
                metric.name
            );
        }
        assert!(
            text.contains("herald_presences_received_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_events_emitted_total{source=\"resync\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_events_emitted_total{source=\"live\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_sink_delivered_total{sink=\"hook\"} 5\n"),
            "{text}"
        );
    }

    #[test]
    fn push_counters_show_by_kind_and_reason() {
        let m = Metrics::new();
        let p = m.push();
        p.failed(PushFailure::Timeout);
        p.failed(PushFailure::Timeout);
        p.removed(RemovedBy::RemoteDisable);
        p.sent.inc();
        p.pending.set(3);
        let text = m.render();
        for line in [
            "herald_push_failed_total{kind=\"timeout\"} 2\n",
            "herald_push_failed_total{kind=\"wait\"} 0\n",
            "herald_push_registrations_removed_total{reason=\"remote_disable\"} 1\n",
            "herald_push_registrations_removed_total{reason=\"errors\"} 0\n",
            "herald_push_sent_total 1\n",
            "herald_push_pending 3\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert_eq!(p.failed_count(PushFailure::Timeout), 2);
    }
}
