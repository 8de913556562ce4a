//! Jittered exponential backoff, shared by the reconnect loop and the delivery workers.

use std::time::Duration;

use rand::Rng;

/// Delays grow ×2 from `min` to `max`; each delay is drawn uniformly from `[d/2, d]` ("equal
/// jitter") so that many herald instances, or many sinks, do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay to wait; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// Back to `min`, e.g. after a connection stayed up for a while.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = vec![];
        for _ in 0..10 {
            let before = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= before / 2 && d <= before,
                "{d:?} outside [{before:?}/2, {before:?}]"
            );
            ceilings.push(before.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }
}
