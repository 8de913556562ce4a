//! Presence: the pure tracker, the per-domain privileges, and the task that owns both.

pub mod privileges;
pub mod sanitize;
pub mod service;
pub mod tracker;
