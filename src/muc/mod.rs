//! Rooms (XEP-0045) herald joins as an occupant so that it sees the group chats users asked it
//! to push: which rooms, who is in them, and the messages they carry.
//!
//! - [`model`]: occupants and what the rooms owner hands the push owner per message.
//! - [`room`]: what an occupant presence means (pure).
//! - [`join`]: the join and leave stanzas, nicks, and refused joins (pure).

pub mod join;
pub mod model;
pub mod room;

pub use model::{Occupant, Occupants, Role, RoomMessage};
