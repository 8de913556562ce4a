//! The XMPP side: one task owns the XEP-0114 stream ([`connection`]), a transport only;
//! everyone else holds an [`XmppHandle`]. Inbound stanzas are read as [`inbound::Stanza`]s
//! (presences straight into their fields), classified by the pure [`router`] and handed to
//! their owners ([`routes`]): IQ requests to the handlers registered by namespace
//! ([`iq_handlers`]), answers to herald's own requests to the [`iq_tracker`].

pub mod connection;
pub mod handle;
pub mod inbound;
pub mod iq_handlers;
pub mod iq_tracker;
pub mod limits;
pub mod muc_presence;
pub mod reader;
pub mod router;
pub mod routes;
pub mod stanza;

pub use handle::{Lane, XmppHandle};
pub use iq_tracker::{IqError, IqTracker};
