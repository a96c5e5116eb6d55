//! Exponential backoff with jitter, for waits the code itself takes (contention on a lease or a parameter, a service's
//! "not yet"): the SDK's own retries cover a single call, not a condition that outlasts them.

use std::time::Duration;

/// `base` doubled per attempt (1 = the first retry), capped at `cap`, then half of it fixed and half random, so
/// instances that collided once do not collide again and the wait never drops to nothing.
pub fn jittered(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(cap);
    let half = ceiling / 2;
    half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_within_half_and_whole_of_the_cap() {
        let base = Duration::from_millis(100);
        for attempt in 1..=10 {
            let ceiling = (base * (1 << (attempt - 1))).min(Duration::from_secs(2));
            let wait = jittered(base, attempt, Duration::from_secs(2));
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "attempt {attempt}: {wait:?} outside {:?}..={ceiling:?}",
                ceiling / 2
            );
        }
    }

    #[test]
    fn waits_spread() {
        let waits: std::collections::HashSet<Duration> = (0..50)
            .map(|_| jittered(Duration::from_secs(1), 3, Duration::from_secs(10)))
            .collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
    }
}
