//! `/healthz` (liveness) and `/readyz` (readiness), for systemd and Kubernetes probes.
//!
//! `/readyz` answers 200 only when all three checks pass, else 503; the JSON body is the same
//! either way:
//!
//! ```json
//! {"ready": false,
//!  "stream": {"ok": true, "epoch": 1},
//!  "presence_permission": {"ok": false, "domains": {"example.org": "none"}},
//!  "snapshot": {"ok": false},
//!  "problems": ["example.org did not grant presence permission: …"]}
//! ```
//!
//! `domains` maps every `component.server_domains` entry to the presence access it advertised
//! on this connection (`managed_entity`, `roster`, `none`), or `null` when it advertised nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::HttpContext;
use crate::presence::query::Readiness;
use crate::xep::privilege::PresencePerm;
use crate::xmpp::routes::LinkStatus;

#[derive(Debug, Serialize)]
struct Health {
    healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'static str>,
}

pub(super) async fn healthz(State(ctx): State<Arc<HttpContext>>) -> impl IntoResponse {
    let problem = if ctx.stopping.is_cancelled() {
        Some("herald is stopping")
    } else if ctx.presence.is_closed() {
        Some("the presence service has stopped; see herald's log")
    } else {
        None
    };
    let code = if problem.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            healthy: problem.is_none(),
            problem,
        }),
    )
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReadyReport {
    pub ready: bool,
    pub stream: StreamCheck,
    pub presence_permission: PermissionCheck,
    pub snapshot: Check,
    /// One sentence per failed check: what is wrong and what to do.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StreamCheck {
    pub ok: bool,
    /// The current login (from 1), when the stream is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PermissionCheck {
    pub ok: bool,
    pub domains: BTreeMap<String, Option<&'static str>>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
}

/// The readiness verdict from the connection status and the presence owner's [`Readiness`].
pub fn ready_report(
    status: LinkStatus,
    readiness: &Readiness,
    server_domains: &[String],
) -> ReadyReport {
    let mut problems = Vec::new();
    let epoch = match status {
        LinkStatus::Up { epoch } => Some(epoch),
        LinkStatus::Down => None,
    };
    let stream_ok = epoch.is_some();
    if !stream_ok {
        problems.push("the stream to the XMPP server is down; herald is connecting (check component.server and the server's component listener, and herald's log)".to_owned());
    }
    // What the presence owner reports belongs to a login: only the current one counts.
    let current = epoch.is_some_and(|e| readiness.epoch == e);
    let mut domains = BTreeMap::new();
    for d in server_domains {
        let access = readiness
            .privileges
            .iter()
            .find(|a| a.server.eq_ignore_ascii_case(d))
            .filter(|_| current)
            .map(|a| a.presence.as_str());
        domains.insert(d.clone(), access);
    }
    let mut permission_ok = current;
    for (d, access) in &domains {
        if *access == Some(PresencePerm::ManagedEntity.as_str()) {
            continue;
        }
        permission_ok = false;
        if stream_ok {
            let why = match access {
                None if current => "sent no XEP-0356 privilege advertisement yet",
                None => "has not been heard from on this connection yet",
                Some(_) => "did not grant presence permission",
            };
            problems.push(format!("{d} {why}: grant herald presence = \"managed_entity\" in the server's configuration (README, 'Server configuration'), then let herald reconnect"));
        }
    }
    let snapshot_ok = current && readiness.snapshot_done;
    if stream_ok && !snapshot_ok {
        problems.push("the server's presence snapshot after this login is not over yet; it ends when the server confirms it, or after presence.snapshot_timeout".to_owned());
    }
    ReadyReport {
        ready: stream_ok && permission_ok && snapshot_ok,
        stream: StreamCheck {
            ok: stream_ok,
            epoch,
        },
        presence_permission: PermissionCheck {
            ok: permission_ok,
            domains,
        },
        snapshot: Check { ok: snapshot_ok },
        problems,
    }
}

pub(super) async fn readyz(State(ctx): State<Arc<HttpContext>>) -> impl IntoResponse {
    let status = *ctx.status.borrow();
    let readiness = ctx.presence.readiness().borrow().clone();
    let report = ready_report(status, &readiness, &ctx.server_domains);
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xep::privilege::{Advertisement, MessagePerm, PrivilegeNs, RosterPerm};

    fn adv(domain: &str, presence: PresencePerm) -> Advertisement {
        Advertisement {
            ns: PrivilegeNs::V2,
            server: domain.to_owned(),
            presence,
            roster: RosterPerm::None,
            message: MessagePerm::None,
            iq: Vec::new(),
            ignored: Vec::new(),
        }
    }

    #[test]
    fn ready_only_with_stream_permission_and_snapshot_of_the_current_login() {
        let domains = vec!["example.org".to_owned()];
        let granted = Readiness {
            epoch: 2,
            privileges: vec![adv("example.org", PresencePerm::ManagedEntity)],
            snapshot_done: true,
        };
        assert!(ready_report(LinkStatus::Up { epoch: 2 }, &granted, &domains).ready);
        // Down: not ready, and only the stream is named as the problem.
        let down = ready_report(LinkStatus::Down, &granted, &domains);
        assert!(!down.ready);
        assert_eq!(down.problems.len(), 1, "{:?}", down.problems);
        // A newer login whose advertisement has not been handled yet.
        let newer = ready_report(LinkStatus::Up { epoch: 3 }, &granted, &domains);
        assert!(!newer.ready && !newer.snapshot.ok && !newer.presence_permission.ok);
        // Snapshot still open.
        let open = Readiness {
            snapshot_done: false,
            ..granted.clone()
        };
        let r = ready_report(LinkStatus::Up { epoch: 2 }, &open, &domains);
        assert!(!r.ready && r.presence_permission.ok && !r.snapshot.ok);
        // Advertised without presence.
        let refused = Readiness {
            privileges: vec![adv("example.org", PresencePerm::None)],
            ..granted.clone()
        };
        let r = ready_report(LinkStatus::Up { epoch: 2 }, &refused, &domains);
        assert!(!r.ready);
        assert_eq!(r.presence_permission.domains["example.org"], Some("none"));
        assert!(r.problems[0].contains("managed_entity"), "{:?}", r.problems);
        // A second domain that never advertised.
        let two = vec!["example.org".to_owned(), "chat.example.org".to_owned()];
        let r = ready_report(LinkStatus::Up { epoch: 2 }, &granted, &two);
        assert!(!r.ready);
        assert_eq!(r.presence_permission.domains["chat.example.org"], None);
    }
}
