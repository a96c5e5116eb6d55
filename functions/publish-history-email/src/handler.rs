//! One batch: open each record, validate its rows, and notify every eligible subscriber of the row's tenant once.
//!
//! A row is reported in `batchItemFailures` until every eligible recipient was sent or permanently rejected; with
//! an idempotency store, a redelivered row sends only to those not yet notified.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::batch::{BatchProcessor, RecordError};
use shared::db_event::EventKind;
use shared::envelope::database_event;
use shared::logging::mask_email;
use shared::metrics::Metrics;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use crate::idempotency::{notification_key, Guarded, OnceOnly};
use crate::notification::{EmailTemplates, PublishHistory};
use crate::ports::{IdempotencyStore, ListUnsubscribe, Mailer, OutgoingEmail, SendError, UserSource};
use crate::retry::{send_with_retry, RetryPolicy};
use crate::subscribers::{Recipient, SubscriberCache, SubscriberIndex};
use shared::pacer::Pacer;

/// Records handled at once.
pub const RECORD_CONCURRENCY: usize = 5;
/// The invocation's deadline less this is when no send may start; what is still running `ANSWER_SLACK` later is
/// given up, leaving a second to answer before Lambda's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);
pub const ANSWER_SLACK: Duration = Duration::from_secs(2);
/// Sends in flight at once (the pacer keeps their rate under the account's maximum).
pub const SEND_CONCURRENCY: usize = 8;
/// How long the send rate from GetSendQuota is trusted.
const QUOTA_TTL: Duration = Duration::from_secs(3600);
/// When GetSendQuota fails: the SES sandbox rate, the lowest an account has.
const FALLBACK_SEND_RATE: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Sent,
    AlreadySent,
    Rejected,
    /// Not sent yet; the row must come back.
    Pending,
}

pub struct Notifier<U, M, I> {
    subscribers: SubscriberCache<U>,
    mailer: M,
    once: OnceOnly<I>,
    templates: EmailTemplates,
    table: String,
    pacer: tokio::sync::Mutex<Option<(Instant, Arc<Pacer>)>>,
    send_slots: Semaphore,
    retry: RetryPolicy,
    unsubscribe: Option<UnsubscribeLinks>,
    metrics: Arc<Metrics>,
}

/// How the one-click unsubscribe links are made: the endpoint's base URL, the signing key, and the sender (whose
/// domain names the list).
pub struct UnsubscribeLinks {
    pub base_url: String,
    pub key: shared::unsubscribe::SigningKey,
    pub sender: String,
}

impl UnsubscribeLinks {
    /// The link and headers of one recipient, signed now. The token goes in the query string, so the base URL may
    /// carry any path.
    pub fn for_recipient(&self, sub: &str, tenant: &str) -> ListUnsubscribe {
        let token = self.key.sign(sub, tenant, chrono::Utc::now().timestamp());
        let separator = if self.base_url.contains('?') { '&' } else { '?' };
        ListUnsubscribe { url: format!("{}{separator}token={token}", self.base_url), list_id: crate::mime::list_id(tenant, &self.sender) }
    }
}

/// What one batch shares: one subscriber snapshot (listed at most once, even when it fails).
struct BatchContext {
    index: OnceCell<Result<Arc<SubscriberIndex>, String>>,
    deadline: Instant,
}

impl<U: UserSource, M: Mailer, I: IdempotencyStore> Notifier<U, M, I> {
    pub fn new(subscribers: SubscriberCache<U>, mailer: M, store: I, templates: EmailTemplates, table: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            subscribers,
            mailer,
            once: OnceOnly::new(store),
            templates,
            table: table.into(),
            pacer: tokio::sync::Mutex::new(None),
            send_slots: Semaphore::new(SEND_CONCURRENCY),
            retry: RetryPolicy::default(),
            unsubscribe: None,
            metrics,
        }
    }

    /// Every email then carries its recipient's one-click unsubscribe link and headers.
    pub fn with_unsubscribe(mut self, links: UnsubscribeLinks) -> Self {
        self.unsubscribe = Some(links);
        self
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Handles a batch; nothing is started after `deadline` (the invocation's deadline less a safety margin).
    pub async fn handle_batch(&self, processor: &BatchProcessor, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let context = BatchContext { index: OnceCell::new(), deadline };
        // Sends started before `deadline` get until just before Lambda's own deadline to finish.
        let answer_by = deadline + ANSWER_SLACK;
        let outcome = processor.process_until(event, Some(answer_by), |record| self.handle_record(record, &context)).await;
        outcome.count_into(&self.metrics);
        outcome.response()
    }

    async fn handle_record(&self, record: SqsMessage, context: &BatchContext) -> Result<(), RecordError> {
        let event = database_event(&record).map_err(RecordError::poison)?;
        if event.table != self.table || event.kind != EventKind::RecordsCreated {
            tracing::info!(event = %event.label(), "not a created publish history; acknowledged");
            self.metrics.count("RecordsIgnored", 1);
            return Ok(());
        }
        let histories = event.map_rows(|row| PublishHistory::from_row(row, event.tenant.as_deref())).map_err(RecordError::Poison)?;
        let index = context.index.get_or_init(|| self.subscribers.index()).await.clone().map_err(RecordError::transient)?;
        let mut pending = 0;
        for history in &histories {
            let recipients = index.get(&history.tenant).map(Vec::as_slice).unwrap_or_default();
            let deliveries = futures::future::join_all(recipients.iter().map(|r| self.deliver(history, r, context.deadline))).await;
            let count = |d: Delivery| deliveries.iter().filter(|x| **x == d).count();
            tracing::info!(
                row = %history.id,
                tenant = %history.tenant,
                recipients = recipients.len(),
                sent = count(Delivery::Sent),
                already_sent = count(Delivery::AlreadySent),
                rejected = count(Delivery::Rejected),
                pending = count(Delivery::Pending),
                "publish history notified"
            );
            pending += count(Delivery::Pending);
        }
        if pending > 0 {
            return Err(RecordError::transient(format!("{pending} recipient(s) not notified yet")));
        }
        Ok(())
    }

    async fn deliver(&self, history: &PublishHistory, recipient: &Recipient, deadline: Instant) -> Delivery {
        let to = mask_email(&recipient.email);
        let key = notification_key(&history.tenant, &history.id, &recipient.email);
        let in_progress_until = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
        let guarded = self.once.run(&key, in_progress_until, || self.send(history, recipient, deadline)).await;
        let delivery = match guarded {
            Guarded::AlreadyCompleted => {
                self.metrics.count("EmailsAlreadySent", 1);
                return Delivery::AlreadySent;
            }
            Guarded::InProgress => {
                tracing::info!(to = %to, row = %history.id, "another invocation is sending this notification");
                Delivery::Pending
            }
            Guarded::StoreUnavailable(error) => {
                tracing::error!(to = %to, row = %history.id, error = %error, "idempotency store unavailable");
                Delivery::Pending
            }
            Guarded::Ran { outcome: Ok(message_id), .. } => {
                tracing::info!(to = %to, row = %history.id, message_id = %message_id, "email sent");
                self.metrics.count("EmailsSent", 1);
                return Delivery::Sent;
            }
            Guarded::Ran { outcome: Err(SendError::Rejected(reason)), .. } => {
                tracing::warn!(to = %to, row = %history.id, reason = %reason, "recipient rejected permanently; not retried");
                self.metrics.count("EmailsRejected", 1);
                return Delivery::Rejected;
            }
            Guarded::Ran { outcome: Err(SendError::Retryable(reason) | SendError::Refused(reason)), .. } => {
                tracing::error!(to = %to, row = %history.id, reason = %reason, "email not sent; the row will be retried");
                Delivery::Pending
            }
        };
        self.metrics.count("EmailsPending", 1);
        delivery
    }

    /// Renders and sends one email, paced and retried within `deadline`.
    async fn send(&self, history: &PublishHistory, recipient: &Recipient, deadline: Instant) -> Result<String, SendError> {
        let list_unsubscribe = self.unsubscribe.as_ref().and_then(|links| recipient.sub.as_deref().map(|sub| links.for_recipient(sub, &history.tenant)));
        let unsubscribe_url = list_unsubscribe.as_ref().map(|l| l.url.as_str());
        let rendered = self
            .templates
            .render(history, recipient.given_name.as_deref(), unsubscribe_url)
            .map_err(|e| SendError::Retryable(format!("rendering the email failed: {e}")))?;
        let email = OutgoingEmail {
            to: recipient.email.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            list_unsubscribe,
            tags: vec![("tenant", history.tenant.clone()), ("row", history.id.clone())],
        };
        let _slot = self.send_slots.acquire().await.map_err(|e| SendError::Retryable(e.to_string()))?;
        let pacer = self.pacer().await;
        send_with_retry(&self.mailer, &pacer, self.retry, &email, deadline).await
    }

    /// The pacer at the account's send rate, read with GetSendQuota at the first send and then hourly.
    async fn pacer(&self) -> Arc<Pacer> {
        let mut cached = self.pacer.lock().await;
        if let Some((read_at, pacer)) = cached.as_ref() {
            if read_at.elapsed() < QUOTA_TTL {
                return pacer.clone();
            }
        }
        let rate = match self.mailer.max_send_rate().await {
            Ok(rate) if rate > 0.0 => rate,
            Ok(_) | Err(_) => {
                tracing::warn!(fallback = FALLBACK_SEND_RATE, "send quota unavailable; pacing at the sandbox rate");
                FALLBACK_SEND_RATE
            }
        };
        tracing::info!(max_send_rate = rate, "send rate");
        let pacer = Arc::new(Pacer::new(rate));
        *cached = Some((Instant::now(), pacer.clone()));
        pacer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::tests::MemoryStore;
    use crate::idempotency::{DEFAULT_RECORD_TTL, STATUS_IN_PROGRESS};
    use crate::subscribers::PoolUser;
    use async_trait::async_trait;
    use serde_json::json;
    use shared::testing::{sns_envelope, sqs_event, sqs_record};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    struct FakeUsers {
        users: Vec<PoolUser>,
        listings: AtomicUsize,
    }

    #[async_trait]
    impl UserSource for Arc<FakeUsers> {
        async fn list_users(&self) -> Result<Vec<PoolUser>, String> {
            self.listings.fetch_add(1, Ordering::SeqCst);
            Ok(self.users.clone())
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
        async fn max_send_rate(&self) -> Result<f64, String> {
            Ok(14.0)
        }
        async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError> {
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

    struct Fixture {
        users: Arc<FakeUsers>,
        mailer: Arc<FakeMailer>,
        store: Arc<MemoryStore>,
        notifier: Notifier<Arc<FakeUsers>, Arc<FakeMailer>, Arc<MemoryStore>>,
    }

    fn fixture(ttl: Duration) -> Fixture {
        let users = Arc::new(FakeUsers {
            users: vec![
                pool_user("ada@example.com", "acme", true),
                pool_user("grace@example.com", "acme", true),
                pool_user("edsger@example.com", "acme", false),
                PoolUser { enabled: false, ..pool_user("disabled@example.com", "acme", true) },
                pool_user("alan@example.com", "globex", true),
            ],
            listings: AtomicUsize::new(0),
        });
        let mailer = Arc::new(FakeMailer::default());
        let store = Arc::new(MemoryStore { ttl: DEFAULT_RECORD_TTL, ..Default::default() });
        let notifier = Notifier::new(
            SubscriberCache::new(users.clone(), ttl),
            mailer.clone(),
            store.clone(),
            EmailTemplates::new(None).unwrap(),
            "publish_history",
            Arc::new(Metrics::new("Test", "publish-history-email")),
        );
        Fixture { users, mailer, store, notifier }
    }

    fn created(id: &str, tenant: &str) -> String {
        let message =
            json!({"event": "records_created", "table": "publish_history", "records": [{"id": id, "_tenant": tenant, "title": format!("History {id}")}]});
        sns_envelope(&message.to_string(), "records_created", "publish_history")
    }

    async fn run(fixture: &Fixture, records: Vec<(&str, String)>) -> Vec<String> {
        let event = sqs_event(records.iter().map(|(id, body)| sqs_record(id, body)).collect());
        let deadline = Instant::now() + Duration::from_secs(60);
        let response = fixture.notifier.handle_batch(&BatchProcessor::new(RECORD_CONCURRENCY, None), event, deadline).await;
        let mut failed: Vec<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        failed.sort();
        failed
    }

    #[tokio::test(start_paused = true)]
    async fn emails_exactly_the_eligible_subscribers_of_the_rows_tenant() {
        let f = fixture(Duration::from_secs(300));
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);
        let sent = f.mailer.sent.lock().unwrap();
        assert!(sent.iter().all(|e| e.subject == "New publish history: History ph-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_send_is_retried_then_succeeds() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail("ada@example.com", 2, SendError::Retryable("Throttling: Maximum sending rate exceeded.".into()));
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("ada@example.com"), 3);
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"]);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_retries_report_the_row_and_redelivery_sends_only_to_the_rest() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail("grace@example.com", 5, SendError::Retryable("Throttling".into()));
        assert_eq!(run(&f, vec![("m1", created("ph-1", "acme"))]).await, vec!["m1"]);
        assert_eq!(f.mailer.attempts("grace@example.com"), RetryPolicy::default().max_attempts as usize);
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com"]);

        // SQS delivers the row again; SES has recovered.
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent_to(), vec!["ada@example.com", "grace@example.com"], "Ada must not get a second email");
        // A third delivery sends nothing at all.
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.sent.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_recipient_is_counted_and_does_not_block_the_others() {
        let f = fixture(Duration::from_secs(300));
        f.mailer.fail("ada@example.com", usize::MAX, SendError::Rejected("Address blacklisted.".into()));
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("ada@example.com"), 1, "a rejection is not retried");
        assert_eq!(f.mailer.sent_to(), vec!["grace@example.com"]);
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        assert_eq!(f.mailer.attempts("ada@example.com"), 1, "nor retried on redelivery");
        let metrics = f.notifier.metrics.take_document().unwrap();
        assert_eq!(metrics["EmailsRejected"], 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn subscriber_list_is_cached_for_the_ttl_and_listed_once_per_batch() {
        let f = fixture(Duration::from_secs(300));
        let batch = || vec![("m1", created("ph-1", "acme")), ("m2", created("ph-2", "acme")), ("m3", created("ph-3", "globex"))];
        assert!(run(&f, batch()).await.is_empty());
        assert_eq!(f.users.listings.load(Ordering::SeqCst), 1, "one listing for a batch of three rows and two tenants");
        tokio::time::advance(Duration::from_secs(200)).await;
        run(&f, vec![("m4", created("ph-4", "acme"))]).await;
        assert_eq!(f.users.listings.load(Ordering::SeqCst), 1, "a second batch within the TTL lists no users");
        tokio::time::advance(Duration::from_secs(200)).await;
        run(&f, vec![("m5", created("ph-5", "acme"))]).await;
        assert_eq!(f.users.listings.load(Ordering::SeqCst), 2, "after the TTL the pool is listed again");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ttl_lists_once_per_batch() {
        let f = fixture(Duration::ZERO);
        run(&f, vec![("m1", created("ph-1", "acme")), ("m2", created("ph-2", "globex"))]).await;
        run(&f, vec![("m3", created("ph-3", "acme"))]).await;
        assert_eq!(f.users.listings.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_claimed_elsewhere_keeps_the_row_pending() {
        let f = fixture(Duration::from_secs(300));
        let key = notification_key("acme", "ph-1", "ada@example.com");
        f.store.records.lock().unwrap().insert(key, (STATUS_IN_PROGRESS, SystemTime::now() + Duration::from_secs(60)));
        assert_eq!(run(&f, vec![("m1", created("ph-1", "acme"))]).await, vec!["m1"]);
        assert_eq!(f.mailer.sent_to(), vec!["grace@example.com"]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_send_is_started_past_the_deadline() {
        let f = fixture(Duration::from_secs(300));
        let event = sqs_event(vec![sqs_record("m1", &created("ph-1", "acme"))]);
        let response = f.notifier.handle_batch(&BatchProcessor::new(1, None), event, Instant::now()).await;
        assert_eq!(response.batch_item_failures.len(), 1);
        assert!(f.mailer.sent_to().is_empty());
        assert!(f.store.records.lock().unwrap().is_empty(), "claims are released for the redelivery");
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_rows_are_poison_and_other_events_are_ignored() {
        let f = fixture(Duration::from_secs(300));
        let no_id = json!({"event": "records_created", "table": "publish_history", "records": [{"_tenant": "acme"}]}).to_string();
        let updated = json!({"event": "record_updated", "table": "publish_history", "record": {"id": "ph-1", "_tenant": "acme"}}).to_string();
        let users = json!({"event": "records_created", "table": "users", "record": {"id": 1}}).to_string();
        assert_eq!(run(&f, vec![("bad", no_id), ("upd", updated), ("usr", users), ("junk", "{".into())]).await, vec!["bad", "junk"]);
        assert!(f.mailer.sent_to().is_empty());
        assert_eq!(f.users.listings.load(Ordering::SeqCst), 0, "nothing to send, nothing listed");
    }

    #[tokio::test(start_paused = true)]
    async fn each_email_carries_its_recipients_own_unsubscribe_link() {
        let key = || shared::unsubscribe::SigningKey::new(&"k".repeat(64)).unwrap();
        let mut f = fixture(Duration::from_secs(300));
        f.notifier = f.notifier.with_unsubscribe(UnsubscribeLinks {
            base_url: "https://unsub.example.com/u".into(),
            key: key(),
            sender: "no-reply@navlab.online".into(),
        });
        assert!(run(&f, vec![("m1", created("ph-1", "acme"))]).await.is_empty());
        let sent = f.mailer.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        for email in &sent {
            let link = email.list_unsubscribe.as_ref().expect("a link");
            let token = link.url.strip_prefix("https://unsub.example.com/u?token=").expect("the token in the query string");
            let verified = shared::unsubscribe::verify(Some(token), &key(), None, chrono::Utc::now().timestamp()).unwrap();
            assert_eq!(verified.sub, format!("sub-{}", email.to), "the link names its own recipient");
            assert_eq!(verified.tenant, "acme");
            assert_eq!(link.list_id, "Publish history <publish-history.acme.navlab.online>");
            assert!(email.text.contains(&link.url) && email.html.contains(&link.url.replace('/', "&#x2f;")), "the visible link in both parts");
            assert!(!link.url.contains('@'), "no address in the URL");
        }
    }
}
