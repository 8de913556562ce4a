//! Presence: the pure tracker, what a forwarded presence means, the per-domain privileges, and
//! the owner of all of them (the service, on a thread of its own), with its read handle.

pub mod ejabberd_api;
pub mod forwarded;
pub mod liveness;
pub mod liveness_side;
pub mod privileges;
pub mod probe;
pub mod query;
pub mod sanitize;
pub mod service;
pub mod tracker;
