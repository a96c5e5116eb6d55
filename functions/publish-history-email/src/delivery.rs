//! Delivery: a once-only claim per (row, recipient) taken only when a send slot is free, and the send itself, paced
//! at this instance's share of the account's send rate ([`crate::send_rate`]) and retried within the time left.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use shared::logging::mask_email;
use shared::metrics::Metrics;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::deadline::ANSWER_SLACK;
use crate::idempotency::{notification_key, Guarded, IdempotencyStore, OnceOnly};
use crate::notification::{EmailTemplates, PublishHistory};
use crate::ports::{ListUnsubscribe, Mailer, OutgoingEmail, Recipient, SendError};
use crate::send_rate::{SendBudget, SenderRegistry};

/// Sends in flight at once per instance, and so once-only claims open at once.
pub const SEND_CONCURRENCY: usize = 16;
/// The longest one SES call may take; less when the invocation has less left.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// What a call must have left to be made at all.
const SHORTEST_CALL: Duration = Duration::from_millis(500);
/// Kept back from the answer slack after a send: releasing its claim and handing the rest on.
const AFTER_SEND: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // The only retries: the SES client makes one attempt per call, so every attempt takes a paced slot.
        Self {
            max_attempts: 5,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
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
        ListUnsubscribe {
            url: format!("{}{separator}token={token}", self.base_url),
            list_id: crate::mime::list_id(tenant, &self.sender),
        }
    }
}

/// Why an instance stopped sending before its recipients ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The 24-hour quota: the rest waits for it.
    QuotaSpent(String),
    /// Refused for every recipient (see [`SendError::Refused`]): the message comes back for an operator.
    Refused(String),
}

/// What one delivery of a row to some recipients ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: usize,
    pub already_sent: usize,
    pub rejected: usize,
    /// Not sent yet: out of time, a failed send, the store unreachable, or after a stop.
    pub left: Vec<Recipient>,
    /// Claimed by another invocation right now.
    pub held: Vec<Recipient>,
    /// Of `left`, those whose send or claim failed.
    pub failed: usize,
    pub stop: Option<Stop>,
}

impl Outcome {
    /// Recipients settled by this delivery.
    pub fn progress(&self) -> usize {
        self.sent + self.already_sent + self.rejected
    }
}

enum One {
    Sent,
    AlreadySent,
    Rejected,
    Left(Recipient, bool),
    Held(Recipient),
}

pub struct Delivery<M, I, R> {
    mailer: M,
    once: OnceOnly<I>,
    budget: SendBudget<R>,
    templates: EmailTemplates,
    send_slots: Semaphore,
    retry: RetryPolicy,
    unsubscribe: Option<UnsubscribeLinks>,
    metrics: std::sync::Arc<Metrics>,
}

impl<M: Mailer, I: IdempotencyStore, R: SenderRegistry> Delivery<M, I, R> {
    pub fn new(
        mailer: M,
        store: I,
        budget: SendBudget<R>,
        templates: EmailTemplates,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            mailer,
            once: OnceOnly::new(store),
            budget,
            templates,
            send_slots: Semaphore::new(SEND_CONCURRENCY),
            retry: RetryPolicy::default(),
            unsubscribe: None,
            metrics,
        }
    }

    pub fn with_unsubscribe(mut self, links: UnsubscribeLinks) -> Self {
        self.unsubscribe = Some(links);
        self
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub async fn leave(&self) {
        self.budget.leave().await;
    }

    /// Emails `history` to `recipients` until `until` (no send starts after it), [`SEND_CONCURRENCY`] at a time.
    pub async fn deliver(&self, history: &PublishHistory, recipients: Vec<Recipient>, until: Instant) -> Outcome {
        let stop = Mutex::new(None);
        let results: Vec<One> = futures::stream::iter(recipients)
            .map(|recipient| self.one(history, recipient, until, &stop))
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut outcome = Outcome {
            stop: stop.into_inner().unwrap_or_else(|e| e.into_inner()),
            ..Outcome::default()
        };
        for result in results {
            match result {
                One::Sent => outcome.sent += 1,
                One::AlreadySent => outcome.already_sent += 1,
                One::Rejected => outcome.rejected += 1,
                One::Left(recipient, failed) => {
                    outcome.failed += usize::from(failed);
                    outcome.left.push(recipient);
                }
                One::Held(recipient) => outcome.held.push(recipient),
            }
        }
        self.metrics.count("EmailsSent", outcome.sent);
        self.metrics.count("EmailsAlreadySent", outcome.already_sent);
        self.metrics.count("EmailsRejected", outcome.rejected);
        self.metrics
            .count("EmailsPending", outcome.left.len() + outcome.held.len());
        outcome
    }

    async fn one(
        &self,
        history: &PublishHistory,
        recipient: Recipient,
        until: Instant,
        stop: &Mutex<Option<Stop>>,
    ) -> One {
        let stopped = || stop.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if stopped() || Instant::now() >= until {
            return One::Left(recipient, false);
        }
        // The claim only once a send slot is free: claims in flight never outnumber the sends.
        let Ok(_slot) = self.send_slots.acquire().await else {
            return One::Left(recipient, false);
        };
        if stopped() || Instant::now() >= until {
            return One::Left(recipient, false);
        }
        let to = mask_email(&recipient.email);
        let key = notification_key(&history.tenant, &history.id, &recipient.email);
        // A claim left by a crash lapses when this invocation would have ended.
        let in_progress_until = SystemTime::now() + (until + ANSWER_SLACK).saturating_duration_since(Instant::now());
        // A claim still unanswered when no send could start any more is given up: the recipient is looked at again
        // later, and the record answers in time instead of being handed back whole.
        let claim_by = until + ANSWER_SLACK - AFTER_SEND - SHORTEST_CALL;
        let guarded = self
            .once
            .run(&key, in_progress_until, claim_by, || {
                self.send(history, &recipient, until)
            })
            .await;
        match guarded {
            Guarded::AlreadyCompleted => One::AlreadySent,
            Guarded::InProgress => {
                tracing::info!(to = %to, row = %history.id, "another invocation is sending this notification");
                One::Held(recipient)
            }
            Guarded::ClaimUnanswered => {
                tracing::warn!(to = %to, row = %history.id, "the idempotency store did not answer the claim in time; looked at again later");
                One::Held(recipient)
            }
            Guarded::StoreUnavailable(error) => {
                tracing::error!(to = %to, row = %history.id, error = %error, "idempotency store unavailable");
                One::Left(recipient, true)
            }
            Guarded::Ran {
                outcome: Ok(message_id),
                ..
            } => {
                tracing::info!(to = %to, row = %history.id, message_id = %message_id, "email sent");
                One::Sent
            }
            Guarded::Ran {
                outcome: Err(SendError::Rejected(reason)),
                ..
            } => {
                tracing::warn!(to = %to, row = %history.id, reason = %reason, "recipient rejected permanently; not retried");
                One::Rejected
            }
            Guarded::Ran {
                outcome: Err(SendError::Retryable(reason)),
                ..
            } => {
                tracing::error!(to = %to, row = %history.id, reason = %reason, "email not sent; handed on");
                One::Left(recipient, true)
            }
            Guarded::Ran {
                outcome: Err(error @ (SendError::QuotaSpent(_) | SendError::Refused(_))),
                ..
            } => {
                let mut stop = stop.lock().unwrap_or_else(|e| e.into_inner());
                if stop.is_none() {
                    tracing::error!(row = %history.id, reason = %error, "sending stopped for every recipient");
                    *stop = Some(match error {
                        SendError::QuotaSpent(reason) => Stop::QuotaSpent(reason),
                        other => Stop::Refused(other.to_string()),
                    });
                }
                One::Left(recipient, false)
            }
            Guarded::Ran {
                outcome: Err(SendError::NoTime),
                ..
            } => One::Left(recipient, false),
        }
    }

    /// Renders and sends one email, paced and retried until `until`.
    async fn send(&self, history: &PublishHistory, recipient: &Recipient, until: Instant) -> Result<String, SendError> {
        let list_unsubscribe = self.unsubscribe.as_ref().and_then(|links| {
            recipient
                .sub
                .as_deref()
                .map(|sub| links.for_recipient(sub, &history.tenant))
        });
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
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            if self.budget.acquire(&self.mailer, until).await.is_err() {
                return Err(SendError::NoTime);
            }
            // Sends started before `until` may finish within the answer slack, less what follows a send.
            let left = (until + ANSWER_SLACK - AFTER_SEND).saturating_duration_since(Instant::now());
            if left < SHORTEST_CALL {
                return Err(SendError::NoTime);
            }
            match self.mailer.send(&email, left.min(SEND_TIMEOUT)).await {
                Ok(id) => return Ok(id),
                Err(SendError::Retryable(reason))
                    if attempt < self.retry.max_attempts && Instant::now() + backoff < until =>
                {
                    tracing::warn!(attempt, error = %reason, backoff_ms = backoff.as_millis() as u64, "send failed; retrying");
                    self.metrics.count("SendRetries", 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
