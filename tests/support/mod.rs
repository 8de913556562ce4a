//! Shared helpers for integration tests that run against a real XMPP server.
//!
//! - [`prosody::Prosody`]: starts an isolated Prosody 0.12 (with mod_privilege) on free loopback ports.
//! - [`client::C2s`]: a real c2s client session (one resource) for that server.
//! - [`server_user::ServerUser`]: the server user collecting herald's event messages.
//! - [`herald`]: herald's test config, an in-process herald, log capture and event helpers.
//! - [`groupchat`]: MUC rooms for c2s clients; [`pubsub`]: Prosody's pubsub as a push app server
//!   and its subscriber; [`app_server`]: the test's own XEP-0114 components (a push app server
//!   answering results or errors) on a [`raw_component`]; [`group_push`]: herald with `[push]` and a watcher's commands.
//!
//! Use from a test file with `mod support;` (and `use support::{client::C2s, prosody::Prosody};`).
//! Install the server with `bash scripts/install-test-deps.sh`.

#![allow(dead_code)]

pub mod adhoc;
pub mod app_server;
pub mod client;
pub mod ejabberd;
pub mod group_push;
pub mod groupchat;
pub mod herald;
pub mod prosody;
pub mod pubsub;
pub mod raw_component;
pub mod server_user;
