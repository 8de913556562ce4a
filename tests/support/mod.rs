//! Shared helpers for integration tests that run against a real XMPP server.
//!
//! - [`prosody::Prosody`]: starts an isolated Prosody 0.12 (with mod_privilege) on free loopback ports.
//! - [`client::C2s`]: a real c2s client session (one resource) for that server.
//!
//! Use from a test file with `mod support;` (and `use support::{client::C2s, prosody::Prosody};`).
//! Install the server with `bash scripts/install-test-deps.sh`.

#![allow(dead_code)]

pub mod client;
pub mod prosody;
