//! herald: an XMPP external component (XEP-0114) that tracks every local user's presence through
//! XEP-0356 privileges and fans out JSON presence events.
//!
//! # Layout
//!
//! ```text
//!  XMPP server ⇄ xmpp::connection (the only owner of the stream: handshake, keepalive, reconnect)
//!                   │ every inbound stanza
//!                   ▼
//!               xmpp::router (pure classification) ──► xmpp::iq_tracker (answers to our own IQs)
//!                   │                               ──► xmpp::disco (disco#info, ping, unknown IQs)
//!                   │ privilege advert / forwarded presence / snapshot marks
//!                   ▼
//!               presence::service (owns presence::tracker, persists it in store)
//!                   │ PresenceEvent
//!                   ▼
//!               events::fanout ──► sinks::xmpp (a <message/> per event to each server user)
//! ```
//!
//! - [`config`]: the `component.toml` schema, layered loading and validation into [`config::Settings`].
//! - [`xep`]: payloads that xmpp-parsers lacks (XEP-0356 privilege advertisements).
//! - [`presence`]: the pure tracker (state transitions, snapshot and resync) and its task.
//! - [`events`]: the event type and its JSON shape.
//! - [`sinks`]: where events go.
//! - [`store`]: the only module that names sled.
//! - [`app`]: wires the tasks together; [`app::run`] takes a shutdown future so the whole component
//!   runs in-process in tests.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod config;
pub mod events;
pub mod outbox;
pub mod presence;
pub mod sinks;
pub mod store;
pub mod telemetry;
pub mod xep;
pub mod xmpp;
