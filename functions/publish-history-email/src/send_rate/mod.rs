//! The account's send rate shared by every sending instance.
//!
//! The rate: each instance that is sending renews its entry in a registry (the idempotency table) every
//! [`RENEW_EVERY`] and paces at its [`share`] of `MaxSendRate` among the instances whose entries are live. A newcomer
//! waits [`JOIN_WAIT`] before its first send, by when every other instance has renewed, seen it, and slowed down.
//! When its batch is answered, an instance's entry lingers for [`LINGER`]: the same instance's next batch (the next
//! chunk, usually within a poll) is no newcomer and sends at once, and a gone instance's share is free soon after.
//! Without the registry (no table, or it cannot be reached), an instance paces at the share of the most instances
//! that can run at once.
//!
//! Adapters of the registry: [`dynamodb`] (an item of the idempotency table).

pub mod dynamodb;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use shared::pacer::Pacer;
use tokio::time::Instant;

use crate::error::DependencyError;
use crate::ports::Mailer;

/// The part of the account's rate the instances pace at together, at most.
pub const RATE_SAFETY: f64 = 0.95;

/// One instance's share of `rate` among `instances`. Each instance's paced sends may put one more send than its
/// rate into a second that starts on a send (`ceil(share × 1.005)`, see the pacer), and the instances' phases are
/// unrelated, so together they keep one send per instance below the rate (and [`RATE_SAFETY`] of it); never below a
/// quarter of the rate between them.
pub fn share(rate: f64, instances: usize) -> f64 {
    let n = instances.max(1) as f64;
    (rate * RATE_SAFETY).min(rate - n).max(rate / 4.0) / n
}
/// How often a sending instance renews its registry entry (and re-reads the others').
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long an entry counts after its renewal: an instance that stopped or crashed frees its share then.
pub const LEASE: Duration = Duration::from_secs(4);
/// A newcomer's wait before its first send: every other sending instance renews within it.
pub const JOIN_WAIT: Duration = Duration::from_millis(1300);
/// How long an instance's entry still counts after its batch is answered: longer than [`RENEW_EVERY`], so every
/// other instance still counts it when its next batch renews it, and the next batch need not wait [`JOIN_WAIT`].
pub const LINGER: Duration = Duration::from_secs(2);
/// An entry this close to lapsing is renewed as a newcomer's: the renewal may land after it lapsed.
const LAPSE_MARGIN: Duration = Duration::from_millis(500);
/// How long the send quota from GetSendQuota is trusted.
const QUOTA_TTL: Duration = Duration::from_secs(3600);
/// When GetSendQuota fails: the SES sandbox rate, the lowest an account has.
const FALLBACK_SEND_RATE: f64 = 1.0;

/// Who is sending right now, so that the instances share the account's send rate.
#[async_trait]
pub trait SenderRegistry: Send + Sync {
    /// Records `instance` as sending until `until` and forgets the `lapsed` entries; returns every entry, with the
    /// time each one sends until.
    async fn renew(
        &self,
        instance: &str,
        until: SystemTime,
        lapsed: &[String],
    ) -> Result<Vec<(String, SystemTime)>, DependencyError>;
}

#[async_trait]
impl<T: SenderRegistry + ?Sized> SenderRegistry for Box<T> {
    async fn renew(
        &self,
        instance: &str,
        until: SystemTime,
        lapsed: &[String],
    ) -> Result<Vec<(String, SystemTime)>, DependencyError> {
        (**self).renew(instance, until, lapsed).await
    }
}

struct Budget {
    quota: Option<(Instant, f64)>,
    renewed_at: Option<Instant>,
    /// Until when the registry counts this instance, as last renewed.
    registered_until: Option<SystemTime>,
    /// Entries seen lapsed, removed at the next renewal.
    lapsed: Vec<String>,
    instances: usize,
}

/// The account's send rate, this instance's share of it, and the pacer at that share.
pub struct SendBudget<R> {
    pacer: Pacer,
    instance: String,
    registry: Option<R>,
    /// The most instances that can send at once: the share without the registry.
    max_instances: usize,
    state: tokio::sync::Mutex<Budget>,
    /// This batch's rate is set: a renewal in progress holds up no other send, which paces at the rate so far.
    paced: std::sync::atomic::AtomicBool,
    /// The wall clock the registry's entries are read with (a test's follows tokio's paused time).
    clock: fn() -> SystemTime,
}

impl<R: SenderRegistry> SendBudget<R> {
    pub fn new(registry: Option<R>, max_instances: usize) -> Self {
        Self {
            pacer: Pacer::new(FALLBACK_SEND_RATE),
            instance: format!("{:016x}", fastrand::u64(..)),
            registry,
            max_instances: max_instances.max(1),
            state: tokio::sync::Mutex::new(Budget {
                quota: None,
                renewed_at: None,
                registered_until: None,
                lapsed: Vec::new(),
                instances: 0,
            }),
            paced: std::sync::atomic::AtomicBool::new(false),
            clock: SystemTime::now,
        }
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.clock = clock;
        self
    }

    /// Waits for this instance's next send slot; `Err` when none is left before `until`.
    pub async fn acquire<M: Mailer>(&self, mailer: &M, until: Instant) -> Result<(), ()> {
        self.refresh(mailer).await;
        self.pacer.acquire(until).await
    }

    async fn refresh<M: Mailer>(&self, mailer: &M) {
        // Every send waited for each renewal's round trip, and the pacer's schedule restarted after it: ~5 % of the
        // rate. A newcomer's first renewal is still awaited by all: no send before its hold is set.
        let mut state = if self.paced.load(std::sync::atomic::Ordering::Acquire) {
            let Ok(state) = self.state.try_lock() else { return };
            state
        } else {
            self.state.lock().await
        };
        let rate = match state.quota {
            Some((read_at, rate)) if read_at.elapsed() < QUOTA_TTL => rate,
            _ => {
                let rate = match mailer.max_send_rate().await {
                    Ok(rate) if rate > 0.0 => rate,
                    other => {
                        tracing::warn!(fallback = FALLBACK_SEND_RATE, error = ?other.err(), "send quota unavailable; pacing at the sandbox rate");
                        FALLBACK_SEND_RATE
                    }
                };
                tracing::info!(max_send_rate = rate, "send rate");
                state.quota = Some((Instant::now(), rate));
                rate
            }
        };
        if state.renewed_at.is_some_and(|at| at.elapsed() < RENEW_EVERY) {
            return;
        }
        let instances = match &self.registry {
            None => self.max_instances,
            Some(registry) => {
                let now = (self.clock)();
                let until = now + LEASE;
                let lapsed = std::mem::take(&mut state.lapsed);
                match registry.renew(&self.instance, until, &lapsed).await {
                    Ok(entries) => {
                        let newcomer = state.registered_until.is_none_or(|at| at <= now + LAPSE_MARGIN);
                        state.registered_until = Some(until);
                        state.lapsed = entries
                            .iter()
                            .filter(|(_, at)| *at <= now)
                            .map(|(id, _)| id.clone())
                            .collect();
                        if newcomer {
                            self.pacer.hold_until(Instant::now() + JOIN_WAIT).await;
                        }
                        entries
                            .iter()
                            .filter(|(id, at)| *at > now || *id == self.instance)
                            .count()
                            .clamp(1, self.max_instances)
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "the send-rate registry is unavailable; pacing at the share of the most instances");
                        self.max_instances
                    }
                }
            }
        };
        if instances != state.instances {
            tracing::info!(instances, share = share(rate, instances), "sending instances");
            state.instances = instances;
        }
        state.renewed_at = Some(Instant::now());
        self.pacer.set_rate(share(rate, instances));
        self.paced.store(true, std::sync::atomic::Ordering::Release);
    }

    /// This instance stopped sending (its batch is answered): its entry lapses after [`LINGER`], and the others
    /// take its share at their first renewal after that, unless its next batch renews it first.
    pub async fn leave(&self) {
        let mut state = self.state.lock().await;
        state.renewed_at = None;
        self.paced.store(false, std::sync::atomic::Ordering::Release);
        let now = (self.clock)();
        let (Some(registry), Some(registered_until)) = (&self.registry, state.registered_until) else {
            return;
        };
        if registered_until <= now + LINGER {
            return;
        }
        let until = now + LINGER;
        let lapsed = std::mem::take(&mut state.lapsed);
        match registry.renew(&self.instance, until, &lapsed).await {
            Ok(_) => state.registered_until = Some(until),
            Err(error) => {
                tracing::warn!(error = %error, "could not shorten this instance's send-rate entry; it lapses by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{OutgoingEmail, SendError};
    use async_trait::async_trait;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::Mutex;

    #[test]
    fn the_shares_stay_one_send_per_instance_under_the_rate() {
        assert_eq!(share(200.0, 2), 95.0);
        assert_eq!(share(14.0, 1), 13.0);
        assert_eq!(share(14.0, 2), 6.0);
        assert_eq!(share(1.0, 2), 0.125, "the sandbox: a quarter of the rate between them");
        for (rate, n) in [(5.0, 2), (14.0, 4), (50.0, 3), (200.0, 2)] {
            // The pacer's most slots in a second (see shared::pacer::LATE_WAKE_KEPT).
            let per_second_worst = n as f64 * (share(rate, n) * 1.005).ceil();
            assert!(per_second_worst <= rate, "{rate}/s over {n}: {per_second_worst}");
        }
    }

    #[derive(Default)]
    struct MemoryRegistry {
        entries: Mutex<HashMap<String, SystemTime>>,
        /// Each renewal's round trip.
        latency: Duration,
    }

    #[async_trait]
    impl SenderRegistry for Arc<MemoryRegistry> {
        async fn renew(
            &self,
            instance: &str,
            until: SystemTime,
            lapsed: &[String],
        ) -> Result<Vec<(String, SystemTime)>, DependencyError> {
            tokio::time::sleep(self.latency).await;
            let mut entries = self.entries.lock().unwrap();
            lapsed.iter().for_each(|id| {
                entries.remove(id);
            });
            entries.insert(instance.to_owned(), until);
            Ok(entries.iter().map(|(id, at)| (id.clone(), *at)).collect())
        }
    }

    struct Quota(f64);

    #[async_trait]
    impl Mailer for Quota {
        async fn max_send_rate(&self) -> Result<f64, DependencyError> {
            Ok(self.0)
        }
        async fn send(&self, _: &OutgoingEmail, _: Duration) -> Result<String, SendError> {
            unreachable!()
        }
    }

    /// The wall clock as tokio's paused time moves it, from where this test's thread first read it.
    fn test_clock() -> SystemTime {
        thread_local!(static START: std::cell::Cell<Option<(SystemTime, Instant)>> = const { std::cell::Cell::new(None) });
        let (wall, at) = START.with(|start| {
            let first = start.get().unwrap_or((SystemTime::now(), Instant::now()));
            start.set(Some(first));
            first
        });
        wall + at.elapsed()
    }

    fn rate_of(budget: &SendBudget<Arc<MemoryRegistry>>) -> f64 {
        (1.0 / budget.pacer.interval().as_secs_f64() * 1000.0).round() / 1000.0
    }

    #[tokio::test(start_paused = true)]
    async fn instances_share_the_rate_a_newcomer_waits_for_the_others_and_a_leaver_frees_its_share() {
        let registry = Arc::new(MemoryRegistry::default());
        let budget = || SendBudget::new(Some(registry.clone()), 4).with_clock(test_clock);
        let (a, b) = (budget(), budget());
        let far = Instant::now() + Duration::from_secs(600);
        let started = Instant::now();
        a.acquire(&Quota(20.0), far).await.unwrap();
        assert_eq!(started.elapsed(), JOIN_WAIT, "a newcomer's first send waits");
        assert_eq!(rate_of(&a), share(20.0, 1));
        a.acquire(&Quota(20.0), far).await.unwrap();
        let paced = JOIN_WAIT + Duration::from_secs_f64(1.0 / share(20.0, 1));
        assert!(
            started.elapsed().abs_diff(paced) <= Duration::from_millis(1),
            "then no wait but the pacer's"
        );

        let joined = Instant::now();
        b.acquire(&Quota(20.0), far).await.unwrap();
        assert!(joined.elapsed() >= JOIN_WAIT);
        assert_eq!(rate_of(&b), share(20.0, 2));
        // Within one renewal, the first instance sees the second and slows down: before the newcomer's wait ends.
        a.acquire(&Quota(20.0), far).await.unwrap();
        assert_eq!(rate_of(&a), share(20.0, 2));
        assert!(RENEW_EVERY < JOIN_WAIT);

        // Answered, the second instance lingers: its next batch sends at once, the first still counts it.
        b.leave().await;
        let back = Instant::now();
        tokio::time::advance(LINGER - LAPSE_MARGIN - Duration::from_millis(100)).await;
        b.acquire(&Quota(20.0), far).await.unwrap();
        assert!(back.elapsed() < LINGER, "no newcomer's wait");
        a.acquire(&Quota(20.0), far).await.unwrap();
        assert_eq!(rate_of(&a), share(20.0, 2));

        // Gone for good, its share is taken back once its entry has lapsed.
        b.leave().await;
        tokio::time::advance(LINGER).await;
        a.acquire(&Quota(20.0), far).await.unwrap();
        assert_eq!(rate_of(&a), share(20.0, 1), "the leaver's share is taken back");
        // Back after that, it is a newcomer again.
        let back = Instant::now();
        b.acquire(&Quota(20.0), far).await.unwrap();
        assert!(back.elapsed() >= JOIN_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_in_progress_holds_up_no_send_but_a_newcomers_first_one_does() {
        let registry = Arc::new(MemoryRegistry {
            latency: Duration::from_millis(200),
            ..Default::default()
        });
        let budget = Arc::new(SendBudget::new(Some(registry), 4).with_clock(test_clock));
        let far = Instant::now() + Duration::from_secs(600);
        let started = Instant::now();
        budget.acquire(&Quota(20.0), far).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(200) + JOIN_WAIT,
            "the first send waited for its renewal and the hold"
        );

        tokio::time::advance(RENEW_EVERY).await;
        let renewing = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(&Quota(20.0), far).await }
        });
        tokio::task::yield_now().await;
        let before = Instant::now();
        budget.acquire(&Quota(20.0), far).await.unwrap();
        assert!(
            before.elapsed() < Duration::from_millis(200),
            "a send beside the renewal waited for it: {:?}",
            before.elapsed()
        );
        renewing.await.unwrap().unwrap();
        assert!(
            before.elapsed() >= Duration::from_millis(200),
            "the renewing send itself waited for its round trip"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_registry_an_instance_sends_at_the_share_of_the_most_instances() {
        let budget: SendBudget<Arc<MemoryRegistry>> = SendBudget::new(None, 4);
        budget
            .acquire(&Quota(40.0), Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(rate_of(&budget), share(40.0, 4));
    }
}
