//! The invocation's deadline as a point on tokio's clock, less a margin: work that would end past it is not started,
//! so a function answers (and reports what it could not do) before Lambda cuts it off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// `deadline_ms` is the Runtime API's `Lambda-Runtime-Deadline-Ms` (`lambda_runtime::Context::deadline`).
pub fn work_deadline(deadline_ms: u64, margin: Duration) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Instant::now() + remaining.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_remaining_time_less_margin() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let deadline = work_deadline(now_ms + 10_000, Duration::from_secs(2));
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(8) && left > Duration::from_millis(7_500), "{left:?}");
        assert!(work_deadline(now_ms.saturating_sub(5_000), Duration::from_secs(2)) <= Instant::now());
    }
}
