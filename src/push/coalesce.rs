//! Bursts to one registration become one push; pure, times passed in (milliseconds).
//!
//! The first push to a registration goes out at once and opens a window of `push.coalesce`.
//! Messages within the window are held: at its end one push carries the count of all of them
//! and the latest sender and body, and a new window opens. A window that ends with nothing held
//! closes, so the next message goes out at once again. A zero window pushes every message.
//!
//! The coalescer also keeps each registration's `message-count` (messages pushed since the user
//! was last present): [`Coalescer::present`] starts it again.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Slot {
    /// Messages pushed (or held) since the user was last present.
    count: u64,
    /// The end of the open window, if one is open.
    window_until: Option<i64>,
    /// A push is held for the window's end.
    held: bool,
}

/// What to do with a message for a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Push now, with this `message-count`.
    Now { count: u64 },
    /// Hold it for the end of the window (at `until`), where one push carries `count`.
    /// `merged` is true when a push was already held (this message joins it).
    Held {
        count: u64,
        until: i64,
        merged: bool,
    },
}

/// Per-registration windows and counts, by [`super::Registration::key`] (with the user).
#[derive(Debug)]
pub struct Coalescer {
    window_ms: i64,
    slots: HashMap<String, Slot>,
    /// `(window_until, key)` of every open window, earliest first.
    ends: BTreeSet<(i64, String)>,
}

impl Coalescer {
    pub fn new(window: std::time::Duration) -> Coalescer {
        Coalescer {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            slots: HashMap::new(),
            ends: BTreeSet::new(),
        }
    }

    /// A message for `key` read at `now`.
    pub fn offer(&mut self, key: &str, now: i64) -> Offer {
        let window = self.window_ms;
        let slot = self.slots.entry(key.to_owned()).or_default();
        slot.count += 1;
        match slot.window_until {
            Some(until) if now < until => {
                let merged = slot.held;
                slot.held = true;
                Offer::Held {
                    count: slot.count,
                    until,
                    merged,
                }
            }
            old => {
                if let Some(until) = old {
                    self.ends.remove(&(until, key.to_owned()));
                }
                slot.window_until = (window > 0).then(|| now.saturating_add(window));
                if let Some(until) = slot.window_until {
                    self.ends.insert((until, key.to_owned()));
                }
                slot.held = false;
                Offer::Now { count: slot.count }
            }
        }
    }

    /// The held pushes whose window has ended by `now`, with their counts; each opens a new
    /// window. Windows that ended with nothing held close.
    pub fn due(&mut self, now: i64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some((until, key)) = self.ends.first().cloned() {
            if until > now {
                break;
            }
            self.ends.remove(&(until, key.clone()));
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if slot.held {
                slot.held = false;
                let next = now.saturating_add(self.window_ms);
                slot.window_until = Some(next);
                out.push((key.clone(), slot.count));
                self.ends.insert((next, key));
            } else {
                slot.window_until = None;
                if slot.count == 0 {
                    self.slots.remove(&key);
                }
            }
        }
        out
    }

    /// The earliest end of a window, if any is open.
    pub fn next_due(&self) -> Option<i64> {
        self.ends.first().map(|(until, _)| *until)
    }

    /// The user was seen present: `key`'s count starts again and a held push is dropped (the
    /// user sees the room). Returns whether one was held.
    pub fn present(&mut self, key: &str) -> bool {
        match self.slots.get_mut(key) {
            Some(slot) => {
                slot.count = 0;
                std::mem::take(&mut slot.held)
            }
            None => false,
        }
    }

    /// Whether a push for `key` is held.
    pub fn is_held(&self, key: &str) -> bool {
        self.slots.get(key).is_some_and(|s| s.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_one_push_now_and_one_at_the_end_of_the_window() {
        let mut c = Coalescer::new(Duration::from_secs(2));
        assert_eq!(c.offer("r", 1000), Offer::Now { count: 1 });
        assert_eq!(
            c.offer("r", 1500),
            Offer::Held {
                count: 2,
                until: 3000,
                merged: false
            }
        );
        assert_eq!(
            c.offer("r", 2999),
            Offer::Held {
                count: 3,
                until: 3000,
                merged: true
            }
        );
        assert_eq!(c.next_due(), Some(3000));
        assert!(c.due(2999).is_empty());
        assert_eq!(c.due(3000), [("r".to_owned(), 3)]);
        // A new window opened with that push: a message right after is held again.
        assert!(matches!(
            c.offer("r", 3100),
            Offer::Held { until: 5000, .. }
        ));
        assert_eq!(c.due(5000), [("r".to_owned(), 4)]);
        // The window ends with nothing held: it closes, the next message goes at once.
        assert!(c.due(7000).is_empty());
        assert_eq!(c.next_due(), None);
        assert_eq!(c.offer("r", 9000), Offer::Now { count: 5 });
    }

    #[test]
    fn registrations_have_their_own_windows_and_presence_restarts_the_count() {
        let mut c = Coalescer::new(Duration::from_secs(2));
        assert_eq!(c.offer("a", 0), Offer::Now { count: 1 });
        assert_eq!(c.offer("b", 100), Offer::Now { count: 1 });
        assert!(matches!(c.offer("a", 200), Offer::Held { count: 2, .. }));
        assert!(c.is_held("a") && !c.is_held("b"));
        assert!(c.present("a"), "the held push is dropped");
        assert!(!c.present("b"));
        assert!(c.due(2000).is_empty());
        assert_eq!(c.offer("a", 5000), Offer::Now { count: 1 });
        assert_eq!(c.offer("b", 5000), Offer::Now { count: 1 });
    }

    #[test]
    fn zero_turns_it_off() {
        let mut c = Coalescer::new(Duration::ZERO);
        for i in 1..=3 {
            assert_eq!(c.offer("r", 10), Offer::Now { count: i });
        }
        assert_eq!(c.next_due(), None);
        assert!(c.due(10).is_empty());
        c.present("r");
        assert_eq!(c.offer("r", 11), Offer::Now { count: 1 });
    }
}
