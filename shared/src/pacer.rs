//! Keeps this instance under a rate: SES's maximum send rate, Cognito's quotas for the reconciliation's calls.

use std::time::Duration;

use tokio::time::Instant;

/// Spaces sends so that this instance stays under `rate` per second. Shared by every concurrent send of the process.
pub struct Pacer {
    /// The interval between slots, in nanoseconds: changed by [`Pacer::set_rate`] while sends wait.
    interval_nanos: std::sync::atomic::AtomicU64,
    next_slot: tokio::sync::Mutex<Instant>,
}

/// How late a slot may be taken and still keep its place in the schedule: a timer's tick and a busy thread's delay.
/// Any second then holds at most `ceil(rate × 1.005)` slots, one more than the rate for an integer rate below 200,
/// as when slots were never closer than the interval.
pub const LATE_WAKE_KEPT: Duration = Duration::from_millis(5);

/// The lateness a pacer keeps its schedule through: [`LATE_WAKE_KEPT`], or a quarter of a longer interval. A slow
/// pacer (Cognito's 11 writes a second, 91 ms apart) lost ~6 % of its rate to wake-ups 5-20 ms late on a busy
/// machine. Slots taken up to a quarter interval late put at most `floor(rate + 1/4) + 1` into any second: one more
/// than an integer rate, as with the 5 ms; for the faster pacers (95 emails a second) the 5 ms is kept as it was.
fn kept_lateness(interval: Duration) -> Duration {
    LATE_WAKE_KEPT.max(interval / 4)
}

fn interval_of(rate_per_second: f64) -> Duration {
    let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 {
        rate_per_second
    } else {
        1.0
    };
    Duration::from_secs_f64(1.0 / rate)
}

impl Pacer {
    pub fn new(rate_per_second: f64) -> Self {
        Self {
            interval_nanos: std::sync::atomic::AtomicU64::new(interval_of(rate_per_second).as_nanos() as u64),
            next_slot: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// From the next slot on, spaces slots for `rate_per_second` (a share of an account's rate that changed).
    pub fn set_rate(&self, rate_per_second: f64) {
        self.interval_nanos.store(
            interval_of(rate_per_second).as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// No slot before `at`: a newcomer waits until the others have seen it and slowed down.
    pub async fn hold_until(&self, at: Instant) {
        let mut next = self.next_slot.lock().await;
        *next = (*next).max(at);
    }

    /// Waits for the next send slot. A slot at or after `deadline` is not taken: the caller gives up instead of
    /// holding the invocation past its end. A waiting caller holds no slot ahead: a rate lowered while it waits
    /// spaces its send too.
    pub async fn acquire(&self, deadline: Instant) -> Result<(), ()> {
        loop {
            let slot = {
                let mut next = self.next_slot.lock().await;
                let now = Instant::now();
                let slot = (*next).max(now);
                if slot >= deadline {
                    return Err(());
                }
                if slot <= now {
                    // A wake-up a timer tick late keeps the schedule (or every slot would lose that tick: 10 % of
                    // the rate at 95/s); a longer lull starts it afresh, so idle time never becomes a burst.
                    let scheduled = if now.saturating_duration_since(*next) <= kept_lateness(self.interval()) {
                        *next
                    } else {
                        now
                    };
                    *next = scheduled + self.interval();
                    return Ok(());
                }
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
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
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(1000),
            "three sends at 2/s take one second"
        );
        assert!(
            pacer.acquire(deadline).await.is_err(),
            "the slot at 1.5 s is past the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_taken_a_tick_late_keeps_the_schedule_and_a_lull_does_not_become_a_burst() {
        let pacer = Pacer::new(100.0);
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        pacer.acquire(far).await.unwrap();
        // Each slot taken 2 ms after it came (at 12, 22, ... ms): still one every 10 ms.
        for slot in 1..=5u64 {
            tokio::time::advance(Duration::from_millis(if slot == 1 { 12 } else { 10 })).await;
            let before = Instant::now();
            pacer.acquire(far).await.unwrap();
            assert_eq!(before, Instant::now(), "slot {slot} was due");
        }
        pacer.acquire(far).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(60),
            "the sixth slot kept its place"
        );
        // Idle for a second: the next two slots are an interval apart, not at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        pacer.acquire(far).await.unwrap();
        let idle_end = Instant::now();
        pacer.acquire(far).await.unwrap();
        assert_eq!(idle_end.elapsed(), Duration::from_millis(10));

        // In any one-second window of slots taken up to the kept lateness late, at most ceil(rate × 1.005).
        let pacer = Pacer::new(95.0);
        let start = Instant::now();
        let mut times = Vec::new();
        for i in 0..400u64 {
            pacer.acquire(far).await.unwrap();
            times.push(Instant::now() - start);
            // Late by 0..5 ms, by turns.
            let late = Duration::from_micros((i * 1700) % 5001);
            let next = pacer.next_slot.lock().await.saturating_duration_since(Instant::now());
            tokio::time::advance(next + late).await;
        }
        let most = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap();
        assert!(most <= 96, "{most} slots in one second at 95/s");
        assert!(
            times[399] < Duration::from_millis(399 * 1000 / 95 + 6),
            "the schedule kept: {:?}",
            times[399]
        );
    }

    /// A slow pacer keeps its schedule through wake-ups up to a quarter interval late, and still puts at most one
    /// slot more than its rate into any second; later than that, it starts afresh.
    #[tokio::test(start_paused = true)]
    async fn a_slow_pacer_keeps_its_schedule_through_a_quarter_interval_late_and_its_bound() {
        let far = Instant::now() + Duration::from_secs(600);
        let pacer = Pacer::new(11.0);
        let start = Instant::now();
        let mut times = Vec::new();
        for i in 0..200u64 {
            pacer.acquire(far).await.unwrap();
            times.push(Instant::now() - start);
            // Late by 0..22 ms (a quarter of 91 ms), by turns.
            let late = Duration::from_micros((i * 7_919) % 22_700);
            let next = pacer.next_slot.lock().await.saturating_duration_since(Instant::now());
            tokio::time::advance(next + late).await;
        }
        let most = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap();
        assert!(most <= 12, "{most} slots in one second at 11/s");
        let schedule = Duration::from_secs_f64(199.0 / 11.0);
        assert!(
            times[199] < schedule + Duration::from_millis(23),
            "the schedule kept: {:?} for {schedule:?}",
            times[199]
        );

        // Half an interval late: a lull, not lateness; the schedule starts afresh from the wake-up.
        let at = Instant::now();
        let next = *pacer.next_slot.lock().await;
        tokio::time::advance(next.saturating_duration_since(at) + Duration::from_millis(46)).await;
        let woke = Instant::now();
        pacer.acquire(far).await.unwrap();
        pacer.acquire(far).await.unwrap();
        // Kept, the next slot would have come 45 ms after the wake-up; the timer rounds to whole milliseconds.
        let gap = woke.elapsed();
        assert!(
            gap >= pacer.interval() && gap <= pacer.interval() + Duration::from_millis(2),
            "the next slot {gap:?} after the late one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_and_a_hold_apply_from_the_next_slot() {
        let pacer = Pacer::new(1.0);
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        pacer.hold_until(start + Duration::from_secs(2)).await;
        pacer.acquire(far).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2), "held");
        pacer.set_rate(4.0);
        pacer.acquire(far).await.unwrap();
        pacer.acquire(far).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(3250),
            "the slot after the held one was spaced at 1/s, the next at 4/s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_lowered_while_sends_wait_spaces_them_at_the_new_rate() {
        let pacer = std::sync::Arc::new(Pacer::new(10.0));
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        pacer.acquire(far).await.unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.acquire(far).await.unwrap();
                    start.elapsed()
                })
            })
            .collect();
        tokio::task::yield_now().await;
        pacer.set_rate(1.0);
        let mut times = Vec::new();
        for waiter in waiters {
            times.push(waiter.await.unwrap());
        }
        times.sort();
        assert_eq!(
            times,
            [100, 1100, 2100].map(Duration::from_millis),
            "no waiter kept a slot of the old rate but the next one"
        );
    }
}
