//! Keeps this instance under a rate: SES's maximum send rate, Cognito's quotas for the reconciliation's calls.

use std::time::Duration;

use tokio::time::Instant;

/// Spaces sends so that this instance stays under `rate` per second. Shared by every concurrent send of the process.
pub struct Pacer {
    interval: Duration,
    next_slot: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    pub fn new(rate_per_second: f64) -> Self {
        let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 { rate_per_second } else { 1.0 };
        Self { interval: Duration::from_secs_f64(1.0 / rate), next_slot: tokio::sync::Mutex::new(Instant::now()) }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the next send slot. A slot at or after `deadline` is not taken: the caller gives up instead of
    /// holding the invocation past its end.
    pub async fn acquire(&self, deadline: Instant) -> Result<(), ()> {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let slot = (*next).max(Instant::now());
            if slot >= deadline {
                return Err(());
            }
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_sends_and_refuses_slots_past_the_deadline() {
        let pacer = Pacer::new(2.0);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(1200);
        for _ in 0..3 {
            pacer.acquire(deadline).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "three sends at 2/s take one second");
        assert!(pacer.acquire(deadline).await.is_err(), "the slot at 1.5 s is past the deadline");
    }
}
