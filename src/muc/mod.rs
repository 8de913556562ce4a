//! Rooms (XEP-0045) herald joins as an occupant so that it sees the group chats users asked it
//! to push: which rooms, who is in them, and the messages they carry.
//!
//! - [`model`]: occupants and what the rooms owner hands the push owner per message.
//! - [`room`]: what an occupant presence means (pure).
//! - [`join`]: the join and leave stanzas, nicks, and refused joins (pure).
//! - [`index`]: which rooms are watched, and by whom.
//! - [`owner`]: the task that joins, rejoins and leaves them and forwards their messages;
//!   [`rooms`] is its per-room state.
//! - [`self_ping`]: the XEP-0410 self-ping and what its answer means (pure);
//!   [`ping_schedule`]: when each joined room is pinged (pure).
//! - [`hints`]: which removals of users are errors, and the invitation back (pure).
//! - [`view`]: each room's state and health for `push-list` and operators.

pub mod hints;
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
pub use view::{RoomHealth, RoomState, RoomStatus, RoomsView};
