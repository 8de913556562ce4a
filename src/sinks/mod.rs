//! Where events go.

pub mod xmpp;
