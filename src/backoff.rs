//! Jittered exponential backoff, shared by the reconnect loop and the delivery workers.

use std::time::Duration;

use rand::Rng;

/// Delays grow ×2 from `min` to `max`; each delay is drawn uniformly from `[d/2, d]` ("equal
/// jitter") so that many herald instances, or many sinks, do not retry in lockstep. The
/// arithmetic saturates: any `min` and `max`, up to `Duration::MAX`, give delays within
/// `[min/2, max]` and never overflow.
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
        self.current = self.current.saturating_mul(2).min(self.max);
        let half = d / 2;
        // Jitter in whole milliseconds, at most `d - half` (≥ `half`), so the sum stays ≤ `d`.
        let span = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = rand::thread_rng().gen_range(0..=span);
        half.saturating_add(Duration::from_millis(jitter))
    }

    /// Back to `min`, e.g. after a connection stayed up for a while.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The upper bound of the next delay.
    #[cfg(test)]
    fn ceiling(&self) -> Duration {
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

    #[test]
    fn huge_bounds_saturate_instead_of_overflowing() {
        for max in [Duration::from_secs(u64::MAX / 2 + 1), Duration::MAX] {
            let mut b = Backoff::new(Duration::from_secs(3600), max);
            for _ in 0..200 {
                let before = b.ceiling();
                let d = b.next_delay();
                assert!(d <= before && before <= max, "{d:?} {before:?}");
            }
            assert_eq!(b.ceiling(), max);
        }
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(b.next_delay() >= Duration::MAX / 2);
    }
}
