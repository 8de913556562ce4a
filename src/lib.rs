//! herald: an XMPP external component (XEP-0114) that tracks every local user's presence through
//! XEP-0356 privileges and fans out JSON presence events.
//!
//! # Layout
//!
//! ```text
//!  XMPP server ⇄ xmpp::connection: handshake, keepalive, reconnect; its reader parses every
//!     ▲   │      inbound stanza (xmpp::inbound: presences straight into their fields) and its
//!     │   │      writer task writes what the handles queue, already rendered as text
//!     │   │ bursts of forwarded presences / privilege adverts / snapshot marks
//!     │   ▼
//!     │  presence::service (own thread): presence::tracker, then one group commit per burst:
//!     │   │   events into every sink's outbox queue, table changes into the store's journal
//!     │   ▼
//!     │  outbox::worker, one per sink: delivers its queue in seq order, deletes on ack
//!     └── sinks::xmpp (a <message/> per event, pipelined, acknowledged by a ping)
//!         sinks::webhook (signed JSON batches over HTTP, retried, dead-lettered)
//! ```
//!
//! - [`config`]: the `component.toml` schema, layered loading and validation into [`config::Settings`].
//! - [`xmpp`]: the stream ([`xmpp::connection`]), classification ([`xmpp::router`]), answers to
//!   herald's own IQs ([`xmpp::iq_tracker`]) and to IQs addressed to it ([`xmpp::disco`]).
//! - [`xep`]: payloads that xmpp-parsers lacks (XEP-0356 privilege advertisements).
//! - [`presence`]: the pure tracker (state transitions, snapshot and resync) and its service.
//! - [`events`]: the event type and its JSON shape.
//! - [`outbox`] and [`sinks`]: durable delivery, and where events go.
//! - [`adhoc`]: XEP-0050 ad-hoc commands on herald's JID (framework and commands).
//! - [`push`]: push registrations (XEP-0357 `<enable/>`/`<disable/>`, the rules, the limits).
//! - [`store`]: the only module that names sled.
//! - [`admin`]: the `dead-letters` command on a stopped herald's store.
//! - [`allocator`]: the binary's allocator and its settings.
//! - [`app`]: wires the tasks together; [`app::run`] takes a shutdown future so the whole component
//!   runs in-process in tests.

pub mod adhoc;
pub mod admin;
pub mod allocator;
pub mod app;
pub mod backoff;
pub mod config;
pub mod events;
pub mod outbox;
pub mod presence;
pub mod push;
pub mod sinks;
pub mod store;
pub mod telemetry;
pub mod xep;
pub mod xmpp;
