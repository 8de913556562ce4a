//! XMPP.
