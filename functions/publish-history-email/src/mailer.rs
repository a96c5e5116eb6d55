//! Sending: the SES port and adapter, a pacer that keeps this instance under the account's maximum send rate, and
//! the retry of throttled or failed sends with backoff within the invocation's deadline.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ses::error::ProvideErrorMetadata;
use aws_sdk_ses::types::{Body, Content, Destination, Message};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The recipient is refused for good (invalid address, suppressed, rejected content): never retried.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Throttled, 5xx, a timeout, or a configuration problem an operator must fix: may succeed later.
    #[error("not sent: {0}")]
    Retryable(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// The account's maximum send rate, emails per second.
    async fn max_send_rate(&self) -> Result<f64, String>;
    /// Sends one email; returns the provider's message id.
    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError>;
}

/// The SES (v1 `SendEmail`) adapter.
pub struct SesMailer {
    client: aws_sdk_ses::Client,
    sender: String,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_ses::Client, sender: impl Into<String>, configuration_set: Option<String>) -> Self {
        Self { client, sender: sender.into(), configuration_set }
    }

    fn sender_address(&self) -> &str {
        match (self.sender.rfind('<'), self.sender.rfind('>')) {
            (Some(open), Some(close)) if open < close => &self.sender[open + 1..close],
            _ => &self.sender,
        }
    }
}

fn utf8(text: &str) -> Content {
    Content::builder().data(text).charset("UTF-8").build().expect("data is set")
}

#[async_trait]
impl Mailer for SesMailer {
    async fn max_send_rate(&self) -> Result<f64, String> {
        let quota = self.client.get_send_quota().send().await.map_err(|e| aws_sdk_ses::error::DisplayErrorContext(e).to_string())?;
        Ok(quota.max_send_rate())
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError> {
        let message = Message::builder().subject(utf8(&email.subject)).body(Body::builder().text(utf8(&email.text)).html(utf8(&email.html)).build()).build();
        let result = self
            .client
            .send_email()
            .source(&self.sender)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .message(message)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.message_id().to_owned()),
            Err(error) => {
                let message = error.message().unwrap_or_default().to_owned();
                Err(match error.code() {
                    // SES names the unverified identity. When that is our own sender the configuration is wrong, and
                    // every recipient would be "rejected": keep the notification for a retry instead.
                    Some("MessageRejected") if message.contains(self.sender_address()) => SendError::Retryable(format!("sender identity refused: {message}")),
                    Some("MessageRejected") | Some("InvalidParameterValue") => SendError::Rejected(message),
                    _ => SendError::Retryable(aws_sdk_ses::error::DisplayErrorContext(error).to_string()),
                })
            }
        }
    }
}

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
            Err(rejected @ SendError::Rejected(_)) => return Err(rejected),
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ses::error::ErrorMetadata;
    use aws_sdk_ses::operation::send_email::{SendEmailError, SendEmailOutput};
    use aws_sdk_ses::types::error::MessageRejected;
    use aws_smithy_mocks::{mock, mock_client};

    fn email() -> OutgoingEmail {
        OutgoingEmail { to: "ada@example.com".into(), subject: "S".into(), text: "T".into(), html: "<p>H</p>".into() }
    }

    fn rejected(message: &'static str) -> SendEmailError {
        SendEmailError::MessageRejected(
            MessageRejected::builder().message(message).meta(ErrorMetadata::builder().code("MessageRejected").message(message).build()).build(),
        )
    }

    #[tokio::test]
    async fn ses_request_carries_sender_recipient_both_parts_and_configuration_set() {
        let rule = mock!(aws_sdk_ses::Client::send_email)
            .match_requests(|r| {
                let message = r.message().unwrap();
                r.source() == Some("Navlab <no-reply@navlab.online>")
                    && r.destination().unwrap().to_addresses() == ["ada@example.com"]
                    && message.subject().unwrap().data() == "S"
                    && message.body().unwrap().html().unwrap().data() == "<p>H</p>"
                    && message.body().unwrap().text().unwrap().data() == "T"
                    && r.configuration_set_name() == Some("notifications")
            })
            .then_output(|| SendEmailOutput::builder().message_id("ses-1").build().unwrap());
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&rule]), "Navlab <no-reply@navlab.online>", Some("notifications".into()));
        assert_eq!(mailer.send(&email()).await.unwrap(), "ses-1");
    }

    #[tokio::test]
    async fn recipient_rejection_is_permanent_but_an_unverified_sender_is_not() {
        let recipient = mock!(aws_sdk_ses::Client::send_email).then_error(|| rejected("Email address is blacklisted."));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&recipient]), "no-reply@navlab.online", None);
        assert!(matches!(mailer.send(&email()).await, Err(SendError::Rejected(_))));

        let sender = mock!(aws_sdk_ses::Client::send_email).then_error(|| rejected("Email address not verified no-reply@navlab.online"));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&sender]), "Navlab <no-reply@navlab.online>", None);
        assert!(matches!(mailer.send(&email()).await, Err(SendError::Retryable(_))));
    }

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
