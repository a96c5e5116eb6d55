//! One batch, from either of the function's queues: database events (rows) from the topic's queue, fan-out tasks
//! (chunks, listings) from its own fan-out queue.
//!
//! A row of at most [`DIRECT_RECIPIENTS`] recipients is emailed by its own invocation, at once, so a small tenant is
//! never queued behind a large fan-out. A larger row is split into chunk messages on the fan-out queue, which every
//! instance works through at the account's rate. Whatever an invocation does not finish (a chunk's rest, a listing
//! of a pool too large for one invocation, recipients waiting for the daily quota) is handed on as a new task, so
//! no message uses up its receives for lack of time; what cannot succeed until an operator acts fails instead, and
//! the queue's redrive policy keeps it in the dead-letter queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::batch::{BatchProcessor, RecordError};
use shared::db_event::EventKind;
use shared::envelope::database_event;
use shared::metrics::Metrics;
use shared::pacer::Pacer;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::deadline::ANSWER_SLACK;
use crate::delivery::{Delivery, Outcome, Stop};
use crate::fanout::{list_for, Fanout, Task};
use crate::idempotency::IdempotencyStore;
use crate::notification::PublishHistory;
use crate::ports::{FanoutQueue, Mailer, Recipient, UserSource};
use crate::recipients::{IndexBuilder, SubscriberCache, SubscriberIndex, CACHE_MAX_RECIPIENTS};
use crate::send_rate::SenderRegistry;

/// Records handled at once.
pub const RECORD_CONCURRENCY: usize = 5;
/// A row with at most this many recipients is emailed by its own invocation; a larger one fans out.
pub const DIRECT_RECIPIENTS: usize = 50;
/// The longest a batch of rows lists the pool before handing the listing on to the fan-out queue, so the rows
/// queued behind it are not held up.
pub const ROW_LISTING_TIME: Duration = Duration::from_secs(20);
/// The delay of a hand-on after sends or a listing failed without progress.
pub const RETRY_DELAY: Duration = Duration::from_secs(5);
/// The delay of a hand-on of recipients another invocation has claimed: its claim lapses with its deadline.
pub const HELD_DELAY: Duration = Duration::from_secs(30);
/// Hand-ons in a row without progress, past which the message fails instead (and, after the queue's
/// `maxReceiveCount`, is kept in the dead-letter queue).
pub const MAX_STALLS: u32 = 10;

/// What the rows of one batch get: the cached index, or what the batch's own listing found.
enum BatchPlan {
    Cached(Arc<SubscriberIndex>),
    /// Rows (tenant, id) whose few recipients are emailed directly; every other row was handed on.
    Listed(HashMap<(String, String), Vec<Recipient>>),
}

struct BatchContext {
    rows: Vec<PublishHistory>,
    plan: OnceCell<Result<Arc<BatchPlan>, String>>,
    deadline: Instant,
}

pub struct Notifier<U, M, I, Q, R> {
    users: U,
    list_pacer: Pacer,
    cache: SubscriberCache,
    delivery: Delivery<M, I, R>,
    fanout: Fanout<Q>,
    table: String,
    daily_quota_retry: Duration,
    metrics: Arc<Metrics>,
}

/// The settings of [`Notifier::new`] that are not ports.
pub struct NotifierSettings {
    pub table: String,
    pub subscriber_cache_ttl: Duration,
    /// ListUsers calls per second of this instance.
    pub list_users_rate: f64,
    /// The delay of a hand-on while the 24-hour send quota is spent.
    pub daily_quota_retry: Duration,
    /// The instances that take chunks at once: a row fans out into at least as many chunks.
    pub fanout_parts: usize,
}

impl<U: UserSource, M: Mailer, I: IdempotencyStore, Q: FanoutQueue, R: SenderRegistry> Notifier<U, M, I, Q, R> {
    pub fn new(
        users: U,
        delivery: Delivery<M, I, R>,
        fanout: Q,
        settings: NotifierSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            users,
            list_pacer: Pacer::new(settings.list_users_rate),
            cache: SubscriberCache::new(settings.subscriber_cache_ttl),
            delivery,
            fanout: Fanout::new(fanout, settings.fanout_parts),
            table: settings.table,
            daily_quota_retry: settings.daily_quota_retry,
            metrics,
        }
    }

    /// Handles a batch; nothing is started after `deadline` (the invocation's deadline less a safety margin).
    pub async fn handle_batch(
        &self,
        processor: &BatchProcessor,
        event: SqsEvent,
        deadline: Instant,
    ) -> SqsBatchResponse {
        let context = BatchContext {
            rows: self.rows_of(&event),
            plan: OnceCell::new(),
            deadline,
        };
        // Sends started before `deadline` get until just before Lambda's own deadline to finish.
        let answer_by = deadline + ANSWER_SLACK;
        let outcome = processor
            .process_until(event, Some(answer_by), |record| self.handle_record(record, &context))
            .await;
        // Within the second kept for answering: past it, the entry lapses by itself.
        let _ = tokio::time::timeout(Duration::from_millis(300), self.delivery.leave()).await;
        outcome.count_into(&self.metrics);
        outcome.response()
    }

    /// The created publish histories among the batch's records (the invalid ones are each record's own error).
    fn rows_of(&self, event: &SqsEvent) -> Vec<PublishHistory> {
        let mut rows: Vec<PublishHistory> = Vec::new();
        for record in &event.records {
            if record.body.as_deref().and_then(Task::parse).is_some() {
                continue;
            }
            let Ok(histories) = self.histories(record, false) else {
                continue;
            };
            for history in histories.into_iter().flatten() {
                if !rows.iter().any(|r| r.tenant == history.tenant && r.id == history.id) {
                    rows.push(history);
                }
            }
        }
        rows
    }

    /// The record's created publish histories; `None` for another event (`log`: say so, once per record).
    fn histories(&self, record: &SqsMessage, log: bool) -> Result<Option<Vec<PublishHistory>>, RecordError> {
        let event = database_event(record).map_err(RecordError::poison)?;
        if event.table != self.table || event.kind != EventKind::RecordsCreated {
            if log {
                tracing::info!(event = %event.label(), "not a created publish history; acknowledged");
            }
            return Ok(None);
        }
        event
            .map_rows(|row| PublishHistory::from_row(row, event.tenant.as_deref()))
            .map(Some)
            .map_err(RecordError::Poison)
    }

    async fn handle_record(&self, record: SqsMessage, context: &BatchContext) -> Result<(), RecordError> {
        match record.body.as_deref().and_then(Task::parse) {
            Some(Err(error)) => Err(RecordError::Poison(error)),
            Some(Ok(Task::Chunk {
                history,
                recipients,
                stalls,
            })) => {
                let outcome = self.delivery.deliver(&history, recipients, context.deadline).await;
                self.settle(&history, outcome, stalls).await
            }
            Some(Ok(Task::Listing {
                histories,
                from,
                stalls,
            })) => self.continue_listing(histories, from, stalls, context.deadline).await,
            None => self.handle_row_record(&record, context).await,
        }
    }

    async fn handle_row_record(&self, record: &SqsMessage, context: &BatchContext) -> Result<(), RecordError> {
        let Some(histories) = self.histories(record, true)? else {
            self.metrics.count("RecordsIgnored", 1);
            return Ok(());
        };
        let plan = context
            .plan
            .get_or_init(|| self.plan_batch(&context.rows, context.deadline))
            .await
            .clone()
            .map_err(RecordError::transient)?;
        let mut failure = None;
        for history in &histories {
            let recipients = match plan.as_ref() {
                BatchPlan::Cached(index) => index.get(&history.tenant).cloned().unwrap_or_default(),
                BatchPlan::Listed(direct) => match direct.get(&(history.tenant.clone(), history.id.clone())) {
                    Some(recipients) => recipients.clone(),
                    None => continue,
                },
            };
            let result = if recipients.len() <= DIRECT_RECIPIENTS {
                let outcome = self.delivery.deliver(history, recipients, context.deadline).await;
                self.settle(history, outcome, 0).await
            } else {
                self.fan_out(history, recipients).await
            };
            if let Err(error) = result {
                failure = Some(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn fan_out(&self, history: &PublishHistory, recipients: Vec<Recipient>) -> Result<(), RecordError> {
        let count = recipients.len();
        let chunks = self
            .fanout
            .chunks(history, recipients, Duration::ZERO, 0)
            .await
            .map_err(RecordError::transient)?;
        self.metrics.count("ChunksHandedOn", chunks);
        tracing::info!(row = %history.id, tenant = %history.tenant, recipients = count, chunks, "publish history fanned out");
        Ok(())
    }

    /// The batch's recipients: the cached index while fresh, else one listing for all its rows, for at most
    /// [`ROW_LISTING_TIME`]; a listing that does not finish goes on from the fan-out queue.
    async fn plan_batch(&self, rows: &[PublishHistory], deadline: Instant) -> Result<Arc<BatchPlan>, String> {
        if let Some(index) = self.cache.fresh() {
            return Ok(Arc::new(BatchPlan::Cached(index)));
        }
        let started = Instant::now();
        let mut index = IndexBuilder::new(CACHE_MAX_RECIPIENTS);
        let until = deadline.min(started + ROW_LISTING_TIME);
        let listed = list_for(
            &self.users,
            &self.list_pacer,
            &self.fanout,
            rows,
            None,
            until,
            &mut index,
        )
        .await?;
        if listed.finished {
            tracing::info!(pages = listed.pages, rows = rows.len(), "listed the user pool");
            if let Some(index) = index.finish() {
                let index = self.cache.store(index, started);
                // Unless chunks went out while listing: then the rest of those rows is in `listed`, not all of it.
                if listed.chunks.iter().all(|c| *c == 0) {
                    return Ok(Arc::new(BatchPlan::Cached(index)));
                }
            }
        }
        let direct = self
            .hand_on_listing(listed, rows.to_vec(), 0)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(BatchPlan::Listed(
            direct
                .into_iter()
                .map(|(h, r)| ((h.tenant.clone(), h.id.clone()), r))
                .collect(),
        )))
    }

    /// A listing task from the fan-out queue: go on from `from`, then email or hand on what it found.
    async fn continue_listing(
        &self,
        histories: Vec<PublishHistory>,
        from: Option<String>,
        stalls: u32,
        deadline: Instant,
    ) -> Result<(), RecordError> {
        let listed = list_for(
            &self.users,
            &self.list_pacer,
            &self.fanout,
            &histories,
            from,
            deadline,
            &mut IndexBuilder::none(),
        )
        .await
        .map_err(RecordError::transient)?;
        for (history, recipients) in self.hand_on_listing(listed, histories, stalls).await? {
            let outcome = self.delivery.deliver(&history, recipients, deadline).await;
            self.settle(&history, outcome, 0).await?;
        }
        Ok(())
    }

    /// After a listing's turn: a finished listing returns the rows whose few recipients can be emailed now (the rest
    /// are handed on as chunks); an unfinished one hands everything found on, and itself as a listing task.
    async fn hand_on_listing(
        &self,
        listed: crate::fanout::Listed,
        histories: Vec<PublishHistory>,
        stalls: u32,
    ) -> Result<Vec<(PublishHistory, Vec<Recipient>)>, RecordError> {
        let finished = listed.finished;
        let mut direct = Vec::new();
        for ((history, found), chunks) in listed.found.into_iter().zip(listed.chunks) {
            if finished && chunks == 0 && found.len() <= DIRECT_RECIPIENTS {
                direct.push((history, found));
            } else if !found.is_empty() {
                self.fan_out(&history, found).await?;
            }
        }
        if !finished {
            let (delay, stalls) = match &listed.error {
                Some(_) if listed.pages == 0 => (RETRY_DELAY, stalls + 1),
                _ => (Duration::ZERO, 0),
            };
            if let Some(error) = &listed.error {
                tracing::warn!(error = %error, pages = listed.pages, "listing the user pool failed; handed on from where it stopped");
                if stalls > MAX_STALLS {
                    return Err(RecordError::transient(format!(
                        "listing the user pool failed {stalls} times in a row: {error}"
                    )));
                }
            }
            tracing::info!(
                pages = listed.pages,
                rows = histories.len(),
                "the listing goes on in another invocation"
            );
            self.fanout
                .hand_on(
                    &Task::Listing {
                        histories,
                        from: listed.next,
                        stalls,
                    },
                    delay,
                )
                .await
                .map_err(RecordError::transient)?;
            self.metrics.count("ListingsHandedOn", 1);
        }
        Ok(direct)
    }

    /// After a delivery: what is left is handed on (at once; after the quota's wait; after a failure's, counting
    /// a stall), what is claimed elsewhere is looked at again later; a refusal fails the message.
    async fn settle(&self, history: &PublishHistory, outcome: Outcome, stalls: u32) -> Result<(), RecordError> {
        tracing::info!(
            row = %history.id,
            tenant = %history.tenant,
            sent = outcome.sent,
            already_sent = outcome.already_sent,
            rejected = outcome.rejected,
            left = outcome.left.len(),
            held_elsewhere = outcome.held.len(),
            "publish history notified"
        );
        if let Some(Stop::Refused(reason)) = &outcome.stop {
            return Err(RecordError::transient(reason));
        }
        if !outcome.left.is_empty() {
            let (delay, stalls) = match &outcome.stop {
                Some(Stop::QuotaSpent(_)) => (self.daily_quota_retry, stalls),
                _ if outcome.failed > 0 && outcome.progress() == 0 => (RETRY_DELAY, stalls + 1),
                _ => (Duration::ZERO, 0),
            };
            if stalls > MAX_STALLS {
                return Err(RecordError::transient(format!(
                    "{} recipient(s) not sent after {MAX_STALLS} hand-ons without progress",
                    outcome.left.len()
                )));
            }
            let chunks = self
                .fanout
                .chunks(history, outcome.left, delay, stalls)
                .await
                .map_err(RecordError::transient)?;
            self.metrics.count("ChunksHandedOn", chunks);
        }
        if !outcome.held.is_empty() {
            let chunks = self
                .fanout
                .chunks(history, outcome.held, HELD_DELAY, 0)
                .await
                .map_err(RecordError::transient)?;
            self.metrics.count("ChunksHandedOn", chunks);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{RetryPolicy, UnsubscribeLinks};
    use crate::error::DependencyError;
    use crate::idempotency::memory::MemoryStore;
    use crate::idempotency::{notification_key, DEFAULT_RECORD_TTL, STATUS_IN_PROGRESS};
    use crate::notification::EmailTemplates;
    use crate::ports::{OutgoingEmail, PoolUser, SendError, UserPage};
    use crate::send_rate::SendBudget;
    use async_trait::async_trait;
    use serde_json::json;
    use shared::testing::{sns_envelope, sqs_event, sqs_record};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::SystemTime;

    /// The pool in pages of `page_size`; the token is the next user's position.
    struct FakeUsers {
        users: Vec<PoolUser>,
        page_size: usize,
        pages: AtomicUsize,
    }

    #[async_trait]
    impl UserSource for Arc<FakeUsers> {
        async fn list_page(&self, from: Option<&str>) -> Result<UserPage, DependencyError> {
            self.pages.fetch_add(1, Ordering::SeqCst);
            let start: usize = from.map(|t| t.parse().unwrap()).unwrap_or(0);
            let end = (start + self.page_size).min(self.users.len());
            Ok(UserPage {
                users: self.users[start..end].to_vec(),
                next: (end < self.users.len()).then(|| end.to_string()),
            })
        }
    }

    /// Sends succeed unless a recipient has scripted failures left.
    #[derive(Default)]
    struct FakeMailer {
        sent: Mutex<Vec<OutgoingEmail>>,
        attempts: Mutex<HashMap<String, usize>>,
        failures: Mutex<HashMap<String, (usize, SendError)>>,
    }

    impl FakeMailer {
        fn fail(&self, to: &str, times: usize, error: SendError) {
            self.failures.lock().unwrap().insert(to.into(), (times, error));
        }
        fn sent_to(&self) -> Vec<String> {
            let mut to: Vec<String> = self.sent.lock().unwrap().iter().map(|e| e.to.clone()).collect();
            to.sort();
            to
        }
        fn attempts(&self, to: &str) -> usize {
            self.attempts.lock().unwrap().get(to).copied().unwrap_or(0)
        }
    }

    #[async_trait]
    impl Mailer for Arc<FakeMailer> {
        async fn max_send_rate(&self) -> Result<f64, DependencyError> {
            Ok(14.0)
        }
        async fn send(&self, email: &OutgoingEmail, _: Duration) -> Result<String, SendError> {
            *self.attempts.lock().unwrap().entry(email.to.clone()).or_default() += 1;
            if let Some((left, error)) = self.failures.lock().unwrap().get_mut(&email.to) {
                if *left > 0 {
                    *left -= 1;
                    return Err(error.clone());
                }
            }
            self.sent.lock().unwrap().push(email.clone());
            Ok(format!("msg-{}", self.sent.lock().unwrap().len()))
        }
    }

    /// The fan-out queue: what was handed on, with its delay.
    #[derive(Default)]
    struct FakeQueue {
        handed: Mutex<Vec<(Task, Duration)>>,
    }

    #[async_trait]
    impl FanoutQueue for Arc<FakeQueue> {
        async fn hand_on(&self, body: String, delay: Duration) -> Result<(), DependencyError> {
            assert!(body.len() < 256 * 1024, "an SQS message");
            let task = Task::parse(&body).expect("a task").expect("that parses");
            self.handed.lock().unwrap().push((task, delay));
            Ok(())
        }
    }

    impl FakeQueue {
        fn take(&self) -> Vec<(Task, Duration)> {
            std::mem::take(&mut *self.handed.lock().unwrap())
        }
    }

    fn pool_user(email: &str, tenant: &str, subscribed: bool) -> PoolUser {
        PoolUser {
            sub: Some(format!("sub-{email}")),
            email: Some(email.into()),
            given_name: None,
            tenant: Some(tenant.into()),
            subscribed,
            enabled: true,
            confirmed: true,
            email_verified: true,
        }
    }

    type TestNotifier =
        Notifier<Arc<FakeUsers>, Arc<FakeMailer>, Arc<MemoryStore>, Arc<FakeQueue>, Box<dyn SenderRegistry>>;

    struct Fixture {
        users: Arc<FakeUsers>,
        mailer: Arc<FakeMailer>,
        store: Arc<MemoryStore>,
        queue: Arc<FakeQueue>,
        metrics: Arc<Metrics>,
        notifier: TestNotifier,
    }

    fn sample_users() -> Vec<PoolUser> {
        vec![
            pool_user("ada@example.com", "acme", true),
            pool_user("grace@example.com", "acme", true),
            pool_user("edsger@example.com", "acme", false),
            PoolUser {
                enabled: false,
                ..pool_user("disabled@example.com", "acme", true)
            },
            pool_user("alan@example.com", "globex", true),
        ]
    }

    fn fixture_with(users: Vec<PoolUser>, ttl: Duration, links: Option<UnsubscribeLinks>) -> Fixture {
        fixture_of(users, ttl, links, 1)
    }

    /// `fanout_parts`: the instances that take chunks at once.
    fn fixture_of(
        users: Vec<PoolUser>,
        ttl: Duration,
        links: Option<UnsubscribeLinks>,
        fanout_parts: usize,
    ) -> Fixture {
        let users = Arc::new(FakeUsers {
            users,
            page_size: 60,
            pages: AtomicUsize::new(0),
        });
        let mailer = Arc::new(FakeMailer::default());
        let store = Arc::new(MemoryStore {
            ttl: DEFAULT_RECORD_TTL,
            ..Default::default()
        });
        let queue = Arc::new(FakeQueue::default());
        let metrics = Arc::new(Metrics::new("Test", "publish-history-email"));
        let delivery = Delivery::new(
            mailer.clone(),
            store.clone(),
            SendBudget::new(None, 1),
            EmailTemplates::new(None).unwrap(),
            metrics.clone(),
        )
        .with_retry_policy(RetryPolicy::default());
        let delivery = match links {
            Some(links) => delivery.with_unsubscribe(links),
            None => delivery,
        };
        let settings = NotifierSettings {
            table: "publish_history".into(),
            subscriber_cache_ttl: ttl,
            list_users_rate: 10.0,
            daily_quota_retry: Duration::from_secs(900),
            fanout_parts,
        };
        let notifier = Notifier::new(users.clone(), delivery, queue.clone(), settings, metrics.clone());
        Fixture {
            users,
            mailer,
            store,
            queue,
            metrics,
            notifier,
        }
    }

    fn fixture(ttl: Duration) -> Fixture {
        fixture_with(sample_users(), ttl, None)
    }

    fn created(id: &str, tenant: &str) -> String {
        let message = json!({"event": "records_created", "table": "publish_history", "records": [{"id": id, "_tenant": tenant, "title": format!("History {id}")}]});
        sns_envelope(&message.to_string(), "records_created", "publish_history")
    }

    async fn run_for(fixture: &Fixture, records: Vec<(String, String)>, time: Duration) -> Vec<String> {
        let event = sqs_event(records.iter().map(|(id, body)| sqs_record(id, body)).collect());
        let deadline = Instant::now() + time;
        let response = fixture
            .notifier
            .handle_batch(&BatchProcessor::new(RECORD_CONCURRENCY, None), event, deadline)
            .await;
        let mut failed: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        failed.sort();
        failed
    }

    async fn run(fixture: &Fixture, records: Vec<(&str, String)>) -> Vec<String> {
        run_for(
            fixture,
            records.into_iter().map(|(id, body)| (id.to_owned(), body)).collect(),
            Duration::from_secs(60),
        )
        .await
    }

    /// Runs every handed-on task, one batch per round, as the fan-out queue's event source would (delays waited out);
    /// returns the rounds.
    async fn drain(fixture: &Fixture) -> usize {
        for round in 0..100 {
            let tasks = fixture.queue.take();
            if tasks.is_empty() {
                return round;
            }
            let longest = tasks.iter().map(|(_, delay)| *delay).max().unwrap_or_default();
            tokio::time::advance(longest).await;
            let records = tasks
                .iter()
                .enumerate()
                .map(|(i, (task, _))| (format!("t{round}-{i}"), serde_json::to_string(task).unwrap()))
                .collect();
            assert!(
                run_for(fixture, records, Duration::from_secs(60)).await.is_empty(),
                "a task failed"
            );
        }
        panic!("the tasks never ran out");
    }

    #[tokio::test(start_paused = true)]
    async fn emails_exactly_the_eligible_subscribers_of_the_rows_tenant() {
        let f = fixture(Duration::from_secs(300));
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);
        let sent = f.mailer.sent.lock().unwrap();
        assert!(sent.iter().all(|e| e.subject == "New publish history: History ph-1"));
        assert!(
            f.queue.take().is_empty(),
            "a small row is emailed by its own invocation"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_send_is_retried_then_succeeds() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail(
            "ada@example.com",
            2,
            SendError::Retryable("Throttling: Maximum sending rate exceeded.".into()),
        );
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("ada@example.com"), 3);
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_retries_hand_the_rest_on_and_the_chunk_sends_only_to_it() {
        let f = fixture(Duration::from_secs(300));
        f.mailer
            .fail("grace@example.com", 5, SendError::Retryable("Throttling".into()));
        assert!(
            run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty(),
            "handed on, not failed"
        );
        assert_eq!(
            f.mailer.attempts("grace@example.com"),
            RetryPolicy::default().max_attempts as usize
        );
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com"]);
        let handed = f.queue.take();
        let [(Task::Chunk { recipients, stalls, .. }, delay)] = handed.as_slice() else {
            panic!("{handed:?}")
        };
        assert_eq!(
            (
                recipients.iter().map(|r| r.email.as_str()).collect::<Vec<_>>(),
                *stalls,
                *delay
            ),
            (vec!["grace@example.com"], 0, Duration::ZERO)
        );
        f.queue.handed.lock().unwrap().extend(handed);
        drain(&f).await;
        assert_eq!(
            f.mailer.sent_to(),
            vec!["ada@example.com", "grace@example.com"],
            "Ada must not get a second email"
        );
        // The row delivered again sends nothing at all.
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_that_keep_failing_are_handed_on_with_a_delay_until_the_stall_limit_fails_the_message() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail(
            "ada@example.com",
            usize::MAX,
            SendError::Retryable("ServiceUnavailable".into()),
        );
        f.mailer.fail(
            "grace@example.com",
            usize::MAX,
            SendError::Retryable("ServiceUnavailable".into()),
        );
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        let mut stalls_seen = Vec::new();
        loop {
            let handed = f.queue.take();
            let [(task @ Task::Chunk { stalls, .. }, delay)] = handed.as_slice() else {
                panic!("{handed:?}")
            };
            assert_eq!(*delay, RETRY_DELAY);
            stalls_seen.push(*stalls);
            let failed = run(&f, vec![("c", serde_json::to_string(task).unwrap())]).await;
            if !failed.is_empty() {
                break;
            }
        }
        assert_eq!(
            stalls_seen,
            (1..=MAX_STALLS).collect::<Vec<_>>(),
            "each hand-on without progress counts"
        );
        assert!(
            f.queue.take().is_empty(),
            "the failed chunk is the queue's to redeliver, then dead-letter"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_recipient_is_counted_and_does_not_block_the_others() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail(
            "ada@example.com",
            usize::MAX,
            SendError::Rejected("Address blacklisted.".into()),
        );
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("ada@example.com"), 1, "a rejection is not retried");
        assert_eq!(f.mailer.sent_to(), vec!["grace@example.com"]);
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("ada@example.com"), 1, "nor retried on redelivery");
        assert_eq!(f.metrics.take_document().unwrap()["EmailsRejected"], 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn subscriber_list_is_cached_for_the_ttl_and_listed_once_per_batch() {
        let f = fixture(Duration::from_secs(300));
        let batch = || {
            vec![
                ("m1", created("ph-1", "acme")),
                ("m2", created("ph-2", "acme")),
                ("m3", created("ph-3", "globex")),
            ]
        };
        assert!(run(&f, batch()).await.is_empty());
        assert_eq!(
            f.users.pages.load(Ordering::SeqCst),
            1,
            "one listing for a batch of three rows and two tenants"
        );
        tokio::time::advance(Duration::from_secs(200)).await;
        run(&f, vec![("m4", created("ph-4", "acme"))]).await;
        assert_eq!(
            f.users.pages.load(Ordering::SeqCst),
            1,
            "a second batch within the TTL lists no users"
        );
        tokio::time::advance(Duration::from_secs(200)).await;
        run(&f, vec![("m5", created("ph-5", "acme"))]).await;
        assert_eq!(
            f.users.pages.load(Ordering::SeqCst),
            2,
            "after the TTL the pool is listed again"
        );
        assert_eq!(f.mailer.sent.lock().unwrap().len(), 2 * 4 + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_claimed_elsewhere_is_looked_at_again_after_a_delay() {
        let f = fixture(Duration::from_secs(300));
        let key = notification_key("acme", "ph-1", "ada@example.com");
        f.store
            .records
            .lock()
            .unwrap()
            .insert(key, (STATUS_IN_PROGRESS, SystemTime::now() + Duration::from_secs(20)));
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent_to(), vec!["grace@example.com"]);
        let handed = f.queue.take();
        assert!(
            matches!(handed.as_slice(), [(Task::Chunk { .. }, delay)] if *delay == HELD_DELAY),
            "{handed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_time_left_nothing_is_sent_or_claimed_and_everything_is_handed_on() {
        let f = fixture(Duration::from_secs(300));
        let event = sqs_event(vec![sqs_record("m1", &created("ph-1", "acme"))]);
        let response = f
            .notifier
            .handle_batch(&BatchProcessor::new(1, None), event, Instant::now())
            .await;
        assert!(
            response.batch_item_failures.is_empty(),
            "handed on, so the row uses up no receive"
        );
        assert!(f.mailer.sent_to().is_empty());
        assert!(f.store.records.lock().unwrap().is_empty(), "no claim taken");
        let handed = f.queue.take();
        assert!(
            matches!(handed.as_slice(), [(Task::Listing { from: None, .. }, _)]),
            "{handed:?}"
        );
        f.queue.handed.lock().unwrap().extend(handed);
        drain(&f).await;
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_rows_are_poison_and_other_events_are_ignored() {
        let f = fixture(Duration::from_secs(300));
        let no_id = json!({"event": "records_created", "table": "publish_history", "records": [{"_tenant": "acme"}]})
            .to_string();
        let updated =
            json!({"event": "record_updated", "table": "publish_history", "record": {"id": "ph-1", "_tenant": "acme"}})
                .to_string();
        let users = json!({"event": "records_created", "table": "users", "record": {"id": 1}}).to_string();
        let bad_task = json!({"fanout": "chunk", "recipients": "nobody"}).to_string();
        assert_eq!(
            run(
                &f,
                vec![
                    ("bad", no_id),
                    ("upd", updated),
                    ("usr", users),
                    ("junk", "{".into()),
                    ("task", bad_task)
                ]
            )
            .await,
            vec!["bad", "junk", "task"]
        );
        assert!(f.mailer.sent_to().is_empty());
        assert_eq!(
            f.users.pages.load(Ordering::SeqCst),
            0,
            "nothing to send, nothing listed"
        );
    }

    fn many(tenant: &str, count: usize) -> Vec<PoolUser> {
        (0..count)
            .map(|i| pool_user(&format!("{tenant}{i:05}@example.com"), tenant, true))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_row_fans_out_in_chunks_and_each_subscriber_gets_one_email() {
        let mut users = many("initech", 1_234);
        users.extend(sample_users());
        let f = fixture_of(users, Duration::from_secs(300), None, 2);
        assert!(run(&f, vec![("m1", created("ph-1", "initech"))]).await.is_empty());
        assert!(
            f.mailer.sent_to().is_empty(),
            "the row's own invocation sends none of a large row"
        );
        let handed = f.queue.take();
        let sizes: Vec<usize> = handed
            .iter()
            .map(|(t, _)| {
                if let Task::Chunk { recipients, .. } = t {
                    recipients.len()
                } else {
                    0
                }
            })
            .collect();
        // Two instances take chunks: each full chunk the listing finds is one message, the rest one for each.
        assert_eq!(sizes, vec![500, 500, 117, 117]);
        f.queue.handed.lock().unwrap().extend(handed);
        // A small row meanwhile is emailed at once, by its own invocation.
        assert!(run(&f, vec![("m2", created("ph-2", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);
        drain(&f).await;
        let sent = f.mailer.sent_to();
        assert_eq!(sent.len(), 1_234 + 2);
        let mut unique = sent.clone();
        unique.dedup();
        assert_eq!(unique.len(), sent.len(), "nobody twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_delivered_twice_at_once_and_again_later_sends_each_email_once() {
        let f = fixture_with(many("initech", 80), Duration::from_secs(300), None);
        assert!(run(&f, vec![("m1", created("ph-1", "initech"))]).await.is_empty());
        let [(chunk, _)] = f.queue.take().try_into().unwrap();
        let body = serde_json::to_string(&chunk).unwrap();
        // SQS hands the same message to one batch twice, and to a later batch days after.
        assert!(run(&f, vec![("c1", body.clone()), ("c2", body.clone())])
            .await
            .is_empty());
        drain(&f).await;
        tokio::time::advance(Duration::from_secs(3 * 24 * 3600)).await;
        assert!(run(&f, vec![("c3", body)]).await.is_empty());
        drain(&f).await;
        let sent = f.mailer.sent_to();
        assert_eq!(sent.len(), 80);
        let mut unique = sent.clone();
        unique.dedup();
        assert_eq!(unique.len(), 80, "nobody twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_short_of_time_hands_its_rest_on_and_answers_in_time() {
        let f = fixture_with(many("initech", 120), Duration::from_secs(300), None);
        assert!(run(&f, vec![("m1", created("ph-1", "initech"))]).await.is_empty());
        let [(chunk, _)] = f.queue.take().try_into().unwrap();
        // 14/s x 0.95: about 26 sends in two seconds.
        let started = Instant::now();
        assert!(run_for(
            &f,
            vec![("c".into(), serde_json::to_string(&chunk).unwrap())],
            Duration::from_secs(2)
        )
        .await
        .is_empty());
        assert!(
            started.elapsed() <= Duration::from_secs(2) + ANSWER_SLACK,
            "answered within the deadline"
        );
        let first = f.mailer.sent.lock().unwrap().len();
        assert!((20..=30).contains(&first), "{first}");
        let handed = f.queue.take();
        let [(
            Task::Chunk {
                recipients, stalls: 0, ..
            },
            delay,
        )] = handed.as_slice()
        else {
            panic!("{handed:?}")
        };
        assert_eq!((recipients.len(), *delay), (120 - first, Duration::ZERO));
        f.queue.handed.lock().unwrap().extend(handed);
        drain(&f).await;
        assert_eq!(f.mailer.sent.lock().unwrap().len(), 120);
    }

    #[tokio::test(start_paused = true)]
    async fn claims_the_store_answers_too_late_are_handed_on_to_look_at_later_and_the_chunk_answers_in_time() {
        let f = fixture_with(many("initech", 80), Duration::from_secs(300), None);
        assert!(run(&f, vec![("m1", created("ph-1", "initech"))]).await.is_empty());
        let [(chunk, _)] = f.queue.take().try_into().unwrap();
        // A loaded store: each claim takes longer than the whole invocation.
        *f.store.claim_latency.lock().unwrap() = Duration::from_secs(10);
        let started = Instant::now();
        let failed = run_for(
            &f,
            vec![("c".into(), serde_json::to_string(&chunk).unwrap())],
            Duration::from_secs(2),
        )
        .await;
        assert!(failed.is_empty(), "the chunk was handed back whole: {failed:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(2) + ANSWER_SLACK,
            "answered within the deadline: {:?}",
            started.elapsed()
        );
        assert!(f.mailer.sent.lock().unwrap().is_empty(), "nothing sent without a claim");
        let handed = f.queue.take();
        // Those whose claims were cut are looked at again after the claims lapse; those never claimed go on at once.
        let (mut held, mut left) = (0, 0);
        for (task, delay) in &handed {
            match (task, *delay) {
                (Task::Chunk { recipients, .. }, HELD_DELAY) => held += recipients.len(),
                (Task::Chunk { recipients, .. }, Duration::ZERO) => left += recipients.len(),
                other => panic!("not a chunk handed on: {other:?}"),
            }
        }
        assert!(held > 0, "no claim was cut: {handed:?}");
        assert_eq!(held + left, 80, "every recipient handed on");
        *f.store.claim_latency.lock().unwrap() = Duration::ZERO;
        f.queue.handed.lock().unwrap().extend(handed);
        drain(&f).await;
        assert_eq!(f.mailer.sent.lock().unwrap().len(), 80, "then each is sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_daily_quota_hands_the_rest_on_for_later_and_a_refusal_fails_the_message() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail(
            "grace@example.com",
            1,
            SendError::QuotaSpent("Daily message quota exceeded.".into()),
        );
        f.mailer.fail(
            "ada@example.com",
            1,
            SendError::QuotaSpent("Daily message quota exceeded.".into()),
        );
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        let handed = f.queue.take();
        let [(
            Task::Chunk {
                recipients, stalls: 0, ..
            },
            delay,
        )] = handed.as_slice()
        else {
            panic!("{handed:?}")
        };
        assert_eq!(
            (recipients.len(), *delay),
            (2, Duration::from_secs(900)),
            "both wait for the quota"
        );
        f.queue.handed.lock().unwrap().extend(handed);
        drain(&f).await;
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);

        f.mailer
            .fail("alan@example.com", 1, SendError::Refused("AccessDenied".into()));
        assert_eq!(
            run(&f, vec![("m2", created("ph-2", "globex"))]).await,
            vec!["m2"],
            "an operator's problem: the queue keeps it"
        );
        assert!(f.queue.take().is_empty());
        assert!(run(&f, vec![("m2", created("ph-2", "globex"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("alan@example.com"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_too_long_for_one_invocation_goes_on_from_its_page_and_lists_the_pool_once() {
        let mut users = many("umbrella", 600);
        users.extend(many("initech", 30));
        let f = fixture_with(users, Duration::from_secs(300), None);
        // 11 pages at 10/s take a second; the row's invocation has a third of it.
        assert!(run_for(
            &f,
            vec![("m1".into(), created("ph-1", "initech"))],
            Duration::from_millis(350)
        )
        .await
        .is_empty());
        let handed = f.queue.take();
        let Some((Task::Listing { from: Some(from), .. }, _)) =
            handed.iter().find(|(t, _)| matches!(t, Task::Listing { .. }))
        else {
            panic!("{handed:?}")
        };
        assert!(from.parse::<usize>().unwrap() < 630);
        f.queue.handed.lock().unwrap().extend(handed);
        drain(&f).await;
        assert_eq!(f.users.pages.load(Ordering::SeqCst), 11, "every page once");
        assert_eq!(
            f.mailer.sent_to(),
            (0..30)
                .map(|i| format!("initech{i:05}@example.com"))
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_email_carries_its_recipients_own_unsubscribe_link() {
        let key = || shared::unsubscribe::SigningKey::new(&"k".repeat(64)).unwrap();
        let links = UnsubscribeLinks {
            base_url: "https://unsub.example.com/u".into(),
            key: key(),
            sender: "no-reply@navlab.online".into(),
        };
        let f = fixture_with(sample_users(), Duration::from_secs(300), Some(links));
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        let sent = f.mailer.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        for email in &sent {
            let link = email.list_unsubscribe.as_ref().expect("a link");
            let token = link
                .url
                .strip_prefix("https://unsub.example.com/u?token=")
                .expect("the token in the query string");
            let verified =
                shared::unsubscribe::verify(Some(token), &key(), None, chrono::Utc::now().timestamp()).unwrap();
            assert_eq!(
                verified.sub,
                format!("sub-{}", email.to),
                "the link names its own recipient"
            );
            assert_eq!(verified.tenant, "acme");
            assert_eq!(link.list_id, "Publish history <publish-history.acme.navlab.online>");
            assert!(
                email.text.contains(&link.url) && email.html.contains(&link.url.replace('/', "&#x2f;")),
                "the visible link in both parts"
            );
            assert!(!link.url.contains('@'), "no address in the URL");
        }
    }
}
