//! Where the connection hands each kind of inbound stanza: one owner per kind, each behind a
//! bounded channel whose full-policy is stated here. The connection classifies a stanza once
//! ([`super::router`]) and sends it to exactly one of these.
//!
//! | kind | owner | channel | when full |
//! |---|---|---|---|
//! | forwarded presences, privilege adverts, Up/Down | presence | [`PRESENCE_CAPACITY`] bursts of up to 256 | reading waits (TCP pushes back on the server) |
//! | MUC presences, groupchat messages | rooms ([`crate::muc`]) | [`ROOMS_CAPACITY`] stanzas | reading waits |
//! | other messages | push owner (app servers' remote disables) | [`MESSAGES_CAPACITY`] stanzas | the message is dropped, WARN |
//! | IQ get/set | [`IqDispatcher`] | a task per request, at most 256 at once | `resource-constraint` |
//! | IQ result/error | [`super::IqTracker`] | none (a map) | — |
//!
//! The connection status ([`LinkStatus`]) is published to every owner through a `watch`; the
//! presence owner also gets it in-band (Up/Down in its stream), because the snapshot that
//! follows a login must be read after the Up that opens it.

use minidom::Element;
use tokio::sync::{mpsc, watch};

use super::inbound::PresenceStanza;
use super::iq_handlers::IqDispatcher;
use crate::xep::privilege::{Advertisement, PrivilegeError};

/// Capacity of the connection → presence queue, in bursts.
pub const PRESENCE_CAPACITY: usize = 64;
/// Capacity of the connection → rooms queue.
pub const ROOMS_CAPACITY: usize = 1024;
/// Capacity of the connection → messages queue.
pub const MESSAGES_CAPACITY: usize = 256;

/// Whether herald is logged in to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Not connected (yet, or any more); herald is reconnecting.
    Down,
    /// Logged in; `epoch` counts successful logins from 1.
    Up { epoch: u64 },
}

/// What the presence owner receives, in stream order.
#[derive(Debug)]
pub enum PresenceInbound {
    Up {
        epoch: u64,
    },
    /// A privilege advertisement, or why it could not be read.
    Privileges(Result<Advertisement, PrivilegeError>),
    /// A presence that may be a user's forwarded presence (the owner decides).
    Presence(PresenceStanza),
    Down,
}

/// What the rooms owner receives, in stream order.
#[derive(Debug)]
pub enum RoomInbound {
    Presence(PresenceStanza),
    Groupchat(Element),
}

/// The owners' ends, held by the connection.
pub struct Routes {
    /// `None` once the connection stops dispatching (shutdown): the presence owner then drains
    /// what it has and stops.
    pub presence: Option<mpsc::Sender<Vec<PresenceInbound>>>,
    pub rooms: mpsc::Sender<RoomInbound>,
    pub messages: mpsc::Sender<Element>,
    pub iq: IqDispatcher,
    pub status: watch::Sender<LinkStatus>,
}

/// The owners' receiving ends, for [`crate::app`] to hand out.
pub struct OwnerInboxes {
    pub presence: mpsc::Receiver<Vec<PresenceInbound>>,
    pub rooms: mpsc::Receiver<RoomInbound>,
    pub messages: mpsc::Receiver<Element>,
    pub status: watch::Receiver<LinkStatus>,
}

impl Routes {
    pub fn new(iq: IqDispatcher) -> (Routes, OwnerInboxes) {
        let (presence, presence_rx) = mpsc::channel(PRESENCE_CAPACITY);
        let (rooms, rooms_rx) = mpsc::channel(ROOMS_CAPACITY);
        let (messages, messages_rx) = mpsc::channel(MESSAGES_CAPACITY);
        let (status, status_rx) = watch::channel(LinkStatus::Down);
        let routes = Routes {
            presence: Some(presence),
            rooms,
            messages,
            iq,
            status,
        };
        let inboxes = OwnerInboxes {
            presence: presence_rx,
            rooms: rooms_rx,
            messages: messages_rx,
            status: status_rx,
        };
        (routes, inboxes)
    }
}
