//! The ports of the handler: who is in the pool, how an email is sent, and where the once-only records live.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::subscribers::PoolUser;

/// The port: every user of the pool.
#[async_trait]
pub trait UserSource: Send + Sync {
    async fn list_users(&self) -> Result<Vec<PoolUser>, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The recipient's one-click unsubscribe (RFC 8058), when the function is configured for it.
    pub list_unsubscribe: Option<ListUnsubscribe>,
    /// Message tags (`tenant`, `row`): SES returns them with every bounce or complaint, so feedback is traced to its
    /// tenant and row. Never an address. The adapter fits the values to what SES takes.
    pub tags: Vec<(&'static str, String)>,
}

/// What the `List-Unsubscribe`, `List-Unsubscribe-Post` and `List-Id` headers say for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUnsubscribe {
    pub url: String,
    pub list_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The recipient is refused for good (invalid address, suppressed, rejected content): never retried.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Throttled, 5xx or a timeout: may succeed on a retry within this invocation.
    #[error("not sent: {0}")]
    Retryable(String),
    /// Refused for every recipient until an operator fixes it (AccessDenied, the sender's identity unverified):
    /// retrying within the invocation only repeats the refusal, so the row waits for its redelivery.
    #[error("refused: {0}")]
    Refused(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// The account's maximum send rate, emails per second.
    async fn max_send_rate(&self) -> Result<f64, String>;
    /// Sends one email; returns the provider's message id.
    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to send.
    Acquired,
    /// Sent (or rejected for good) before: skip.
    AlreadyCompleted,
    /// Another invocation is sending it right now, or crashed less than its deadline ago: try again later.
    InProgress,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, String>;
    async fn complete(&self, key: &str, outcome: &str) -> Result<(), String>;
    /// Gives a claim back after a failed send, so the next delivery may send.
    async fn release(&self, key: &str) -> Result<(), String>;
}

#[async_trait]
impl<T: IdempotencyStore + ?Sized> IdempotencyStore for Box<T> {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, String> {
        (**self).claim(key, in_progress_until).await
    }
    async fn complete(&self, key: &str, outcome: &str) -> Result<(), String> {
        (**self).complete(key, outcome).await
    }
    async fn release(&self, key: &str) -> Result<(), String> {
        (**self).release(key).await
    }
}
