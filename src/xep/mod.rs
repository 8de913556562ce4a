//! Payloads that xmpp-parsers does not cover.

pub mod privilege;
