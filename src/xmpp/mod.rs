//! The XMPP side: one task owns the XEP-0114 stream ([`connection`]); everyone else holds an
//! [`XmppHandle`]. Inbound stanzas are read as [`inbound::Stanza`]s (presences straight into
//! their fields) and classified by the pure [`router`]; answers to herald's own
//! requests go to the [`iq_tracker`]; [`disco`] answers the IQs addressed to herald itself.

pub mod connection;
pub mod disco;
pub mod handle;
pub mod inbound;
pub mod iq_tracker;
pub mod limits;
pub mod reader;
pub mod router;
pub mod stanza;

pub use handle::XmppHandle;
pub use iq_tracker::{IqError, IqTracker};
