//! The presence service's side of liveness ([`super::liveness`]): it tells the check loop which
//! resources are online and, once per connection, whether to check at all; and it vets each
//! "gone" verdict against the presences that arrived while the check was under way (a client
//! that reconnected with the same resource meanwhile is online, whatever the old session's
//! check found).

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::info;

use super::liveness::{Change, Gone, CHECK_TIMEOUT};
use crate::config::LivenessMode;

pub struct LivenessSide {
    changes: mpsc::UnboundedSender<Change>,
    mode: LivenessMode,
    /// Whether this connection's servers want checks (any one of them).
    wanted: bool,
    decided: bool,
    on: bool,
    /// Full JID → when its last available presence arrived, while checks are on; entries older
    /// than two check timeouts are pruned (no check that old is still under way).
    seen: HashMap<Box<str>, Instant>,
    prune_above: usize,
}

impl LivenessSide {
    /// `restored`: the resources online at startup.
    pub fn new(
        changes: mpsc::UnboundedSender<Change>,
        mode: LivenessMode,
        restored: impl IntoIterator<Item = String>,
    ) -> LivenessSide {
        for jid in restored {
            let _ = changes.send(Change::Online(jid));
        }
        LivenessSide {
            changes,
            mode,
            wanted: false,
            decided: false,
            on: false,
            seen: HashMap::new(),
            prune_above: 1024,
        }
    }

    pub fn online(&self, jid: &str) {
        let _ = self.changes.send(Change::Online(jid.to_owned()));
    }

    pub fn offline(&self, jid: &str) {
        let _ = self.changes.send(Change::Offline(jid.to_owned()));
    }

    /// An available presence of `jid` arrived.
    pub fn seen(&mut self, jid: &str) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        self.seen.insert(Box::from(jid), now);
        if self.seen.len() > self.prune_above {
            let horizon = 2 * CHECK_TIMEOUT;
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < horizon);
            self.prune_above = (2 * self.seen.len()).max(1024);
        }
    }

    /// A new connection: no checks until its servers are known.
    pub fn connected(&mut self) {
        self.wanted = false;
        self.decided = false;
        self.on = false;
        self.seen.clear();
        let _ = self.changes.send(Change::Pause);
    }

    /// A server of this connection named its software (`None`: it did not say).
    pub fn server_known(&mut self, software: Option<&str>) {
        self.wanted |= match self.mode {
            LivenessMode::On => true,
            LivenessMode::Off => false,
            LivenessMode::Auto => LivenessMode::auto_for_server(software),
        };
    }

    /// Every server of this connection is known (or the wait is over): start checking or not.
    /// Once per connection.
    pub fn decide(&mut self) {
        if self.decided {
            return;
        }
        self.decided = true;
        self.on = self.wanted || self.mode == LivenessMode::On;
        if !self.on {
            info!(mode = ?self.mode, "liveness checks off: the server forwards the unavailable of every session that ends");
        }
        let _ = self.changes.send(Change::Active(self.on));
    }

    /// Whether a "gone" verdict stands: no available presence of that resource arrived since
    /// its check began.
    pub fn accept(&self, gone: &Gone) -> bool {
        self.on
            && self
                .seen
                .get(gone.jid.as_str())
                .is_none_or(|at| *at < gone.asked)
    }
}
