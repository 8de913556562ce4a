//! The rooms' state as users (`push-list`) and operators see it: per watched room, whether herald
//! is in it and, when it is not, why. Published by the rooms owner through a `watch`; reading it
//! never waits for the owner.

use std::collections::BTreeMap;

use tokio::sync::watch;

/// Where herald is with a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomState {
    /// Asking the room, or waiting for the answer to the join (or for the connection).
    Joining,
    Joined,
    /// herald found (by a self-ping) that it is not in the room any more and joins it again.
    Rejoining,
    /// The room refused herald, or herald was removed: it tries again later.
    Retrying,
    /// The room does not exist (any more): herald does not try again.
    Gone,
    /// herald left it (shutdown).
    Left,
}

impl RoomState {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomState::Joining => "joining",
            RoomState::Joined => "joined",
            RoomState::Rejoining => "rejoining",
            RoomState::Retrying => "retrying",
            RoomState::Gone => "gone",
            RoomState::Left => "left",
        }
    }
}

/// One room's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStatus {
    pub state: RoomState,
    /// When it entered this state (milliseconds since the Unix epoch).
    pub since_ms: i64,
    /// Why, when it is not joined (e.g. "members-only: herald is not a member").
    pub reason: Option<String>,
    /// herald's nick in the room (or the one it is trying).
    pub nick: String,
    pub occupants: usize,
    pub health: RoomHealth,
}

/// What operators (`admin-rooms`) see of a room's health beyond its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomHealth {
    /// When herald last self-pinged the room (XEP-0410), in milliseconds since the Unix epoch,
    /// and what came back: `joined (result)`, `undecided (timeout)`, `not joined
    /// (not-acceptable)`…
    pub last_ping: Option<(i64, String)>,
    /// Since when herald has been out of the room it should be in (refused, removed, or found
    /// out by a self-ping); `None` while it is in.
    pub failing_since_ms: Option<i64>,
    /// The last reason herald was not in the room, and when (kept after it is back in).
    pub last_error: Option<(i64, String)>,
}

impl RoomStatus {
    /// `joined`, or `retrying: members-only: herald is not a member`.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) => format!("{}: {r}", self.state.as_str()),
            None => self.state.as_str().to_owned(),
        }
    }
}

pub type RoomMap = BTreeMap<String, RoomStatus>;

/// Read handle on the rooms' state; cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomsView {
    rx: watch::Receiver<RoomMap>,
}

impl RoomsView {
    /// A view and the owner's end.
    pub fn channel() -> (watch::Sender<RoomMap>, RoomsView) {
        let (tx, rx) = watch::channel(RoomMap::new());
        (tx, RoomsView { rx })
    }

    /// `room`'s state (bare JID, any case), if herald watches it.
    pub fn status(&self, room: &str) -> Option<RoomStatus> {
        self.rx.borrow().get(&room.to_lowercase()).cloned()
    }

    /// Every watched room, in JID order.
    pub fn all(&self) -> Vec<(String, RoomStatus)> {
        self.rx
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Waits until `room`'s state satisfies `pred` (`None`: not watched) and returns it; `None`
    /// when the rooms owner has stopped first.
    pub async fn wait_for(
        &self,
        room: &str,
        pred: impl Fn(Option<&RoomStatus>) -> bool,
    ) -> Option<Option<RoomStatus>> {
        let room = room.to_lowercase();
        let mut rx = self.rx.clone();
        let map = rx.wait_for(|m| pred(m.get(&room))).await.ok()?;
        Some(map.get(&room).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_see_what_the_owner_publishes() {
        let (tx, view) = RoomsView::channel();
        assert_eq!(view.status("dev@muc.example"), None);
        let waiter = {
            let view = view.clone();
            tokio::spawn(async move {
                view.wait_for("Dev@muc.example", |s| {
                    s.is_some_and(|s| s.state == RoomState::Retrying)
                })
                .await
            })
        };
        tx.send_modify(|m| {
            m.insert(
                "dev@muc.example".into(),
                RoomStatus {
                    state: RoomState::Retrying,
                    since_ms: 5,
                    reason: Some("members-only: herald is not a member".into()),
                    nick: "herald".into(),
                    occupants: 0,
                    health: RoomHealth::default(),
                },
            );
        });
        let got = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(
            got.describe(),
            "retrying: members-only: herald is not a member"
        );
        assert_eq!(view.all().len(), 1);
        assert_eq!(
            view.status("DEV@muc.example").map(|s| s.state),
            Some(RoomState::Retrying)
        );
    }
}
