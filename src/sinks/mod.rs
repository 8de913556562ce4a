//! Where events go: every sink is an [`outbox::Transport`](crate::outbox::Transport) driven by an
//! outbox worker.

pub mod retry;
pub mod webhook;
pub mod xmpp;
