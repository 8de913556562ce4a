//! herald: an XMPP external component (XEP-0114) that tracks every local user's presence through
//! XEP-0356 privileges and fans out JSON presence events, and pushes group-chat messages to the
//! phones of users who are away (XEP-0357), from the rooms it joins and keeps joined (XEP-0045,
//! XEP-0410).
//!
//! # Layout
//!
//! ```text
//!  XMPP server ⇄ xmpp::connection (a transport: login, keepalive, reconnect)
//!     ▲   │      reader: checks each stanza's bytes against xmpp::limits (xmpp::reader), parses
//!     │   │      it (xmpp::inbound), classifies it once (xmpp::router)
//!     │   │      and routes it to its owner (xmpp::routes), over bounded channels:
//!     │   ├── forwarded presences, privilege adverts, Up/Down ─► presence::service (own thread)
//!     │   ├── MUC presences, groupchat ─► muc owner (joins, occupants, self-ping)
//!     │   │      └── each groupchat message of a joined room ─► push::owner
//!     │   ├── other messages ─► push::owner (app servers' remote disables)
//!     │   ├── IQ get/set ─► xmpp::iq_handlers (by namespace; each answered exactly once)
//!     │   └── IQ result/error ─► xmpp::iq_tracker (random ids, checked sender)
//!     │      writer: writes what the handles queue, priority lane before bulk
//!     │
//!     │  presence::service: presence::tracker, then one group commit per burst: events into
//!     │   │   every sink's outbox queue, table changes into the store's journal; answers the
//!     │   │   presence::query read handle; probes each server once per connection
//!     │   ▼
//!     │  outbox::worker, one per sink: delivers its queue in seq order, deletes on ack
//!     └── sinks::xmpp (a <message/> per event, pipelined, acknowledged by a ping)
//!         sinks::webhook (signed JSON batches over HTTP, retried, dead-lettered)
//! ```
//!
//! - [`config`]: the `component.toml` schema, layered loading and validation into [`config::Settings`].
//! - [`xmpp`]: the stream ([`xmpp::connection`]), its limit-checking reader ([`xmpp::reader`],
//!   [`xmpp::limits`]), classification ([`xmpp::router`]) and routing
//!   ([`xmpp::routes`]), IQ handlers ([`xmpp::iq_handlers`]), answers to herald's own IQs
//!   ([`xmpp::iq_tracker`]) and the handle every owner sends through ([`xmpp::XmppHandle`]).
//! - [`xep`]: payloads that xmpp-parsers lacks (XEP-0356 privilege advertisements).
//! - [`presence`]: the pure tracker (state transitions, snapshot and resync), what a forwarded
//!   presence means ([`presence::forwarded`], [`presence::sanitize`]), the server probes, the
//!   service that owns them and its read handle ([`presence::query`]).
//! - [`events`]: the event type and its JSON shape.
//! - [`outbox`] and [`sinks`]: durable delivery, and where events go.
//! - [`adhoc`]: XEP-0050 ad-hoc commands on herald's JID (framework and commands).
//! - [`push`]: push registrations (XEP-0357 `<enable/>`/`<disable/>`, the rules, the limits) and
//!   the push owner: who is pushed for a room message ([`push::decide`]), the durable outbox,
//!   coalescing, publishing and the error policy.
//! - [`muc`]: the rooms herald watches: joins and their refusals, occupants, XEP-0410
//!   self-pings, rejoin hints, room health.
//! - [`store`]: the only module that names sled.
//! - [`admin`]: the `dead-letters` command on a stopped herald's store.
//! - [`http`]: the operators' HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/v1/presence`.
//! - [`metrics`]: every Prometheus metric's name and help, and the counters the owners update.
//! - [`allocator`]: the binary's allocator and its settings.
//! - [`app`]: wires the owners together; [`app::run`] takes a shutdown future so the whole
//!   component runs in-process in tests.

pub mod adhoc;
pub mod admin;
pub mod allocator;
pub mod app;
pub mod backoff;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod muc;
pub mod outbox;
pub mod presence;
pub mod push;
pub mod sinks;
pub mod store;
pub mod telemetry;
pub mod xep;
pub mod xmpp;
