//! Rooms (XEP-0045) herald joins as an occupant so that it sees the group chats users asked it
//! to push: which rooms, who is in them, and the messages they carry.
//!
//! - [`model`]: occupants and what the rooms owner hands the push owner per message.
//! - [`room`]: what an occupant presence means (pure).
//! - [`join`]: the join and leave stanzas, nicks, and refused joins (pure).
//! - [`index`]: which rooms are watched, and by whom.
//! - [`owner`]: the task that joins, rejoins and leaves them and forwards their messages;
//!   [`rooms`] is its per-room state.
//! - [`view`]: each room's state for `push-list` and operators.

pub mod index;
pub mod join;
pub mod model;
pub mod owner;
pub mod ping_schedule;
pub mod room;
pub mod rooms;
pub mod self_ping;
pub mod view;

pub use model::{Occupant, Occupants, Role, RoomMessage};
pub use owner::{spawn, RoomsContext};
pub use view::{RoomState, RoomStatus, RoomsView};
