//! Where events go: each sink is driven by an outbox worker, a webhook sink as an
//! [`outbox::Transport`](crate::outbox::Transport) (one batch at a time), the XMPP sink as an
//! [`outbox::Pipelined`](crate::outbox::Pipelined) transport (many batches in flight).

pub mod retry;
pub mod webhook;
pub mod xmpp;
