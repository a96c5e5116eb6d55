//! The retry of throttled or failed sends, with backoff, within the invocation's deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{Mailer, OutgoingEmail, SendError};
use shared::pacer::Pacer;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // On top of the SDK's own retries: a send that SES keeps throttling waits up to a few seconds more, if the
        // invocation's deadline leaves time for it.
        Self { max_attempts: 5, first_backoff: Duration::from_millis(250), max_backoff: Duration::from_secs(4) }
    }
}

/// Sends with pacing and retries until sent, rejected, out of attempts, or out of time before `deadline`.
pub async fn send_with_retry<M: Mailer + ?Sized>(
    mailer: &M,
    pacer: &Pacer,
    policy: RetryPolicy,
    email: &OutgoingEmail,
    deadline: Instant,
) -> Result<String, SendError> {
    let mut backoff = policy.first_backoff;
    let mut attempt = 1;
    loop {
        if pacer.acquire(deadline).await.is_err() {
            return Err(SendError::Retryable("no send slot left before the invocation's deadline".into()));
        }
        match mailer.send(email).await {
            Ok(id) => return Ok(id),
            Err(final_answer @ (SendError::Rejected(_) | SendError::Refused(_))) => return Err(final_answer),
            Err(error) if attempt >= policy.max_attempts || Instant::now() + backoff >= deadline => return Err(error),
            Err(error) => {
                tracing::warn!(attempt, error = %error, backoff_ms = backoff.as_millis() as u64, "send failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                attempt += 1;
            }
        }
    }
}
