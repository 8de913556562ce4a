//! Presence: the pure tracker, what a forwarded presence means, the per-domain privileges, and
//! the owner of all of them (the service, on a thread of its own), with its read handle.

pub mod forwarded;
pub mod privileges;
pub mod probe;
pub mod query;
pub mod sanitize;
pub mod service;
pub mod tracker;
