//! Sets the state gauges just before `/metrics` renders them: connection, privileges, online
//! resources, each sink's backlog and oldest event, the store's size on disk.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::HttpContext;
use crate::events::now_millis;
use crate::metrics::{PrivilegeLabels, SinkLabels};
use crate::xmpp::routes::LinkStatus;

/// Longest wait for the presence owner's online count; a scrape never waits longer.
const STATS_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn refresh(ctx: &HttpContext) {
    let g = ctx.metrics.gauges();
    let readiness = ctx.presence.readiness().borrow().clone();
    let status = *ctx.status.borrow();
    let (up, status_epoch) = match status {
        LinkStatus::Up { epoch } => (true, epoch),
        LinkStatus::Down => (false, 0),
    };
    g.connection_up.set(i64::from(up));
    // Logins are counted from 1 by the connection; every one after the first is a reconnect.
    let reconnects = status_epoch.max(readiness.epoch).saturating_sub(1);
    let counted = g.reconnects.get();
    if reconnects > counted {
        g.reconnects.inc_by(reconnects - counted);
    }
    g.privilege.clear();
    for adv in &readiness.privileges {
        for (privilege, access) in [
            ("presence", adv.presence.as_str()),
            ("roster", adv.roster.as_str()),
            ("message", adv.message.as_str()),
        ] {
            g.privilege
                .get_or_create(&PrivilegeLabels {
                    domain: adv.server.clone(),
                    privilege: privilege.to_owned(),
                    access: access.to_owned(),
                })
                .set(1);
        }
    }
    if let Ok(Ok(stats)) = tokio::time::timeout(STATS_WAIT, ctx.presence.stats()).await {
        g.resources_online
            .set(i64::try_from(stats.online).unwrap_or(i64::MAX));
    }
    let lanes = ctx.lanes.clone();
    let path = ctx.store_path.clone();
    let g = g.clone();
    // Store reads and a directory walk: off the async workers.
    let _ = tokio::task::spawn_blocking(move || {
        let now = now_millis();
        for lane in &lanes {
            let l = SinkLabels {
                sink: lane.name().to_owned(),
            };
            g.sink_backlog
                .get_or_create(&l)
                .set(i64::try_from(lane.backlog()).unwrap_or(i64::MAX));
            let age = match lane.oldest() {
                Ok(Some(e)) => event_millis(&e.json)
                    .map(|at| (now.saturating_sub(at)).max(0) as f64 / 1000.0)
                    .unwrap_or(0.0),
                _ => 0.0,
            };
            g.sink_oldest_age.get_or_create(&l).set(age);
        }
        g.store_size
            .set(i64::try_from(dir_size(&path)).unwrap_or(i64::MAX));
    })
    .await;
}

/// The `at` of a stored event, in milliseconds since the Unix epoch.
fn event_millis(json: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct At<'a> {
        #[serde(borrow)]
        at: std::borrow::Cow<'a, str>,
    }
    let at: At = serde_json::from_slice(json).ok()?;
    chrono::DateTime::parse_from_rfc3339(&at.at)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Bytes of every file under `path` (0 for what cannot be read).
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_events_time_is_read_from_its_json() {
        let e = crate::events::PresenceEvent::new(
            1,
            1_700_000_000_123,
            crate::events::Source::Live,
            crate::events::EventArgs {
                user: "a@example.org/r".into(),
                presence: crate::events::Availability::Available,
                show: None,
                status: None,
                priority: 0,
                resources: 1,
            },
        );
        assert_eq!(
            event_millis(e.to_json().as_bytes()),
            Some(1_700_000_000_123)
        );
        assert_eq!(event_millis(b"not json"), None);
    }
}
