//! Retry delays, from one place: exponential with jitter (backon's
//! `ExponentialBuilder`), so that many clients that lost the same peer
//! (slaves their master, relays their upstream) do not all retry in step.

use std::time::Duration;

use backon::BackoffBuilder;

/// The delays of one retry loop: from `min`, doubling, at most `max`, each
/// stretched by a random part of itself (never beyond `max`).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    delays: backon::ExponentialBackoff,
}

impl Backoff {
    /// Delays from `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            delays: Self::delays(min, max),
        }
    }

    fn delays(min: Duration, max: Duration) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// It worked: start again from `min`.
    pub fn reset(&mut self) {
        self.delays = Self::delays(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_within_bounds() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(5));
        let mut b = Backoff::new(min, max);
        let first: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(first.iter().all(|d| *d >= min && *d <= max), "{first:?}");
        assert!(first[0] < Duration::from_secs(1), "{first:?}");
        assert_eq!(*first.last().unwrap(), max, "capped: {first:?}");
        b.reset();
        assert!(b.next_delay() < Duration::from_secs(1));
        // Jitter: two loops that start together soon drift apart.
        let runs: std::collections::BTreeSet<Vec<Duration>> = (0..8)
            .map(|_| {
                let mut b = Backoff::new(min, max);
                (0..3).map(|_| b.next_delay()).collect()
            })
            .collect();
        assert!(runs.len() > 1, "no jitter");
    }
}
