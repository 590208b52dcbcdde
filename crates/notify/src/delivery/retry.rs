//! When a failed delivery is tried again: a few immediate retries, then exponential backoff
//! (the shape of AWS's default delivery policy), then the message is given up and counted.

use std::time::Duration;

/// The retry schedule of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries made at once after a failure.
    pub immediate: u32,
    /// Retries after that, waiting `min_delay` doubling up to `max_delay`.
    pub backoff: u32,
    /// The first backoff wait.
    pub min_delay: Duration,
    /// The longest backoff wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 immediate retries, then 6 more waiting 1 s doubling to 20 s (about a minute in all).
    fn default() -> RetryPolicy {
        RetryPolicy {
            immediate: 3,
            backoff: 6,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), or `None` when retries are used up.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.immediate + self.backoff {
            return None;
        }
        if retry <= self.immediate {
            return Some(Duration::ZERO);
        }
        let step = (retry - self.immediate - 1).min(16);
        Some(self.min_delay.saturating_mul(1 << step).min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_then_doubling_then_given_up() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (1..=10).map(|n| policy.delay(n)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            delays,
            [
                secs(0),
                secs(0),
                secs(0),
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(20),
                None
            ]
        );
    }
}
