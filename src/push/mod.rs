//! Push registrations (XEP-0357): users tell herald which app servers to wake for which rooms,
//! through ad-hoc commands ([`crate::adhoc`]) or `<enable/>`/`<disable/>` ([`enable`]).
//!
//! - [`model`]: the per-user data and its pure rules (update or insert, LRU eviction, rooms).
//! - [`policy`]: who may register and what valid input is.
//! - [`Push`]: the rules applied to the store: every change is checked, written whole and
//!   flushed before the caller answers.
//!
//! Group-chat pushes, for the messages the rooms owner hands on ([`crate::muc::RoomMessage`]):
//! - [`decide`]: who is pushed for a message (pure).
//! - [`publish`]: what a push says and the publish IQ (pure).
//! - [`coalesce`]: bursts to one registration become one push (pure).
//! - [`answer`]: what an app server's answer means for the push and the registration (pure).
//! - [`flight`]: the pending pushes and the concurrency caps (pure).
//! - [`owner`]: the task that ties them to the store, the presence table and the connection.

pub mod answer;
mod attempt;
pub mod coalesce;
pub mod decide;
pub mod enable;
pub mod flight;
pub mod model;
pub mod owner;
pub mod policy;
pub mod publish;
mod record;
pub mod watchers;

pub use model::{Filter, Registration, RoomMode, RoomRule, Upsert, UserPush};
pub use policy::Refusal;

use crate::config::PushSettings;
use crate::metrics::PushMetrics;
use crate::store::{PushStats, PushStore, RoomIndex, StoreError};

/// A refusal, or a store failure.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{}", .0.text())]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for PushError {
    fn from(r: Refusal) -> Self {
        PushError::Refused(r)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The registration rules over the store; cheap to clone.
#[derive(Clone)]
pub struct Push {
    settings: PushSettings,
    store: PushStore,
    metrics: PushMetrics,
}

/// Checks the room limits for `user` as it would be after a change.
fn check_rooms(user: &UserPush, index: &RoomIndex, s: &PushSettings) -> Result<(), Refusal> {
    let rooms = user.watched_rooms();
    if rooms.len() > s.max_rooms_per_user {
        return Err(Refusal::Limit(format!(
            "at most {} rooms per user (push.max_rooms_per_user)",
            s.max_rooms_per_user
        )));
    }
    let new = rooms.iter().filter(|r| !index.contains(r)).count();
    if new > 0 && index.len() + new > s.max_rooms {
        return Err(Refusal::Limit(format!(
            "herald already watches its maximum of {} rooms (push.max_rooms)",
            s.max_rooms
        )));
    }
    Ok(())
}

impl Push {
    pub fn new(settings: PushSettings, store: PushStore) -> Push {
        Push {
            settings,
            store,
            metrics: PushMetrics::default(),
        }
    }

    /// The same, counting group-chat pushes into `metrics` (what `admin-stats` shows).
    pub fn with_metrics(mut self, metrics: PushMetrics) -> Push {
        self.metrics = metrics;
        self
    }

    /// The group-chat push counters.
    pub fn metrics(&self) -> &PushMetrics {
        &self.metrics
    }

    pub fn settings(&self) -> &PushSettings {
        &self.settings
    }

    /// The requester's bare JID if it may register (a user of a served domain).
    pub fn user_of(&self, from: &str) -> Result<String, Refusal> {
        policy::user_of(from, &self.settings)
    }

    pub fn get(&self, user: &str) -> Result<UserPush, StoreError> {
        self.store.get(user)
    }

    pub fn stats(&self) -> PushStats {
        self.store.stats()
    }

    /// The store, for fault injection in tests.
    #[doc(hidden)]
    pub fn store(&self) -> &PushStore {
        &self.store
    }

    /// Adds or updates `reg` (same `jid` + `node`) for `user`; durable when it returns.
    pub async fn register(&self, user: &str, reg: Registration) -> Result<Upsert, PushError> {
        let s = &self.settings;
        let out = self
            .store
            .update(user, |u, index| {
                let out = u.upsert(reg, s.max_devices);
                check_rooms(u, index, s)?;
                Ok::<_, Refusal>(out)
            })
            .await??;
        Ok(out)
    }

    /// Removes `user`'s registrations with these [`Registration::key`]s; returns them.
    pub async fn unregister(
        &self,
        user: &str,
        keys: &[String],
    ) -> Result<Vec<Registration>, PushError> {
        Ok(self
            .store
            .update(user, |u, _| Ok::<_, Refusal>(u.remove_keys(keys)))
            .await??)
    }

    /// XEP-0357 `<disable/>`.
    pub async fn disable(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<Vec<Registration>, PushError> {
        Ok(self
            .store
            .update(user, |u, _| Ok::<_, Refusal>(u.disable(jid, node)))
            .await??)
    }

    /// Sets (or, with `never`, removes) one of `user`'s room rules; returns the previous one.
    pub async fn set_room(
        &self,
        user: &str,
        rule: RoomRule,
    ) -> Result<Option<RoomRule>, PushError> {
        let s = &self.settings;
        Ok(self
            .store
            .update(user, |u, index| {
                let old = u.set_room(rule);
                check_rooms(u, index, s)?;
                Ok::<_, Refusal>(old)
            })
            .await??)
    }
}

/// Registers herald's push interface on `handlers`: the ad-hoc commands (XEP-0050, with
/// disco#items and disco#info on command nodes) and `<enable/>`/`<disable/>` (XEP-0357). The
/// returned context takes the presence reader once the presence service runs; its `push` is
/// the handle for the push owner ([`owner::spawn`]), counting into `metrics`.
pub fn install(
    handlers: &mut crate::xmpp::iq_handlers::IqHandlers,
    settings: &crate::config::Settings,
    store: &crate::store::Store,
    metrics: PushMetrics,
) -> Result<std::sync::Arc<crate::adhoc::commands::Ctx>, StoreError> {
    use crate::adhoc::{self, commands, Commands, NS_COMMANDS, NS_DISCO_ITEMS};
    let push = Push::new(settings.push.clone(), store.push_store()?).with_metrics(metrics);
    let ctx = std::sync::Arc::new(commands::Ctx {
        push: push.clone(),
        store: store.clone(),
        presence: std::sync::OnceLock::new(),
        rooms: std::sync::OnceLock::new(),
    });
    let served = settings.push.clone();
    let mut registry = Commands::new(
        settings.component.jid.as_str(),
        settings.admin.jids.iter().map(|j| j.to_string()).collect(),
        move |bare| policy::user_of(bare, &served).is_ok(),
        settings.push.session_timeout,
        settings.push.max_sessions_per_user,
    );
    commands::install(&mut registry, ctx.clone());
    let (execute, items, info) = adhoc::handlers(std::sync::Arc::new(registry));
    handlers.register(NS_COMMANDS, &[NS_COMMANDS], execute);
    handlers.register(NS_DISCO_ITEMS, &[NS_DISCO_ITEMS], items);
    handlers.register_node_info(info);
    handlers.register(enable::NS_PUSH, &[enable::NS_PUSH], enable::handler(push));
    Ok(ctx)
}
