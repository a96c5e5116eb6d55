//! One SQS record at a time: open the SNS envelope, read the SES notification, and unsubscribe each recipient it
//! names for good (a complaint, a permanent bounce). Everything else is counted and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::batch::{BatchProcessor, RecordError};
use shared::envelope::unwrap_sqs_body;
use shared::logging::mask_email;
use shared::metrics::Metrics;
use tokio::time::Instant;

use crate::feedback::{parse, Notification};
use shared::subscriptions::{SubscriberKey, Subscriptions};

use crate::error::DirectoryError;

/// Records handled at once: feedback is a trickle, and each record costs Cognito one ListUsers (30 a second for the
/// whole account) and at most one update per recipient.
pub const CONCURRENCY: usize = 2;

pub struct FeedbackHandler<R> {
    recipients: R,
    metrics: Arc<Metrics>,
}

impl<R: Subscriptions> FeedbackHandler<R> {
    pub fn new(recipients: R, metrics: Arc<Metrics>) -> Self {
        Self { recipients, metrics }
    }

    pub async fn handle_batch(
        &self,
        processor: &BatchProcessor,
        event: SqsEvent,
        deadline: Instant,
    ) -> SqsBatchResponse {
        // Half a second is left to post the answer: past the deadline Lambda throws it away with the whole batch.
        let answer_by = deadline.checked_sub(Duration::from_millis(500)).unwrap_or(deadline);
        let outcome = processor
            .process_until(event, Some(answer_by), |record| self.handle_record(record))
            .await;
        outcome.count_into(&self.metrics);
        outcome.response()
    }

    pub async fn handle_record(&self, record: SqsMessage) -> Result<(), RecordError> {
        let published = unwrap_sqs_body(&record).map_err(RecordError::poison)?;
        let notification = parse(&published.message).map_err(RecordError::poison)?;
        self.metrics.count(notification.feedback.metric(), 1);
        let recipients = notification.feedback.to_unsubscribe();
        if recipients.is_empty() {
            tracing::info!(feedback = %notification.feedback.describe(), message_id = ?notification.message_id, "feedback that unsubscribes nobody; counted");
            return Ok(());
        }
        for address in recipients {
            self.unsubscribe(address, &notification).await?;
        }
        Ok(())
    }

    /// One write, and none when the flag is off already: a replayed notification writes nothing more.
    async fn unsubscribe(&self, address: &str, notification: &Notification) -> Result<(), RecordError> {
        let masked = mask_email(address);
        let (tenant, row) = (
            notification.tags.get("tenant").map(String::as_str),
            notification.tags.get("row").map(String::as_str),
        );
        let feedback = notification.feedback.describe();
        let recipient = match self.recipients.find(SubscriberKey::Email(address)).await {
            Ok(Some(recipient)) => recipient,
            Ok(None) => {
                tracing::warn!(recipient = %masked, feedback = %feedback, tenant = ?tenant, row = ?row, "feedback for an address not in the pool; counted");
                self.metrics.count("RecipientsNotInPool", 1);
                return Ok(());
            }
            Err(error) => return Err(RecordError::from(error)),
        };
        if !recipient.subscribed {
            tracing::info!(recipient = %masked, feedback = %feedback, "already unsubscribed; no write");
            self.metrics.count("RecipientsAlreadyUnsubscribed", 1);
            return Ok(());
        }
        match self.recipients.unsubscribe(&recipient.username).await {
            // Deleted between the two calls: nobody left to email.
            Ok(()) | Err(DirectoryError::UserNotFound) => {
                tracing::info!(recipient = %masked, feedback = %feedback, tenant = ?tenant, row = ?row, "unsubscribed from the publish-history email");
                self.metrics.count("RecipientsUnsubscribed", 1);
                Ok(())
            }
            Err(error) => Err(RecordError::from(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::subscriptions::memory::MemorySubscriptions;
    use shared::testing::{sqs_event, sqs_record};

    fn envelope(message: serde_json::Value) -> String {
        json!({"Type": "Notification", "MessageId": "n-1", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:dev-ses-feedback", "Message": message.to_string(), "Timestamp": "2026-12-01T10:00:00.000Z"}).to_string()
    }

    fn complaint(address: &str) -> String {
        envelope(
            json!({"eventType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": "abuse"}, "mail": {"tags": {"tenant": ["acme"]}}}),
        )
    }

    fn handler(users: &[(&str, bool)]) -> (FeedbackHandler<Arc<MemorySubscriptions>>, Arc<MemorySubscriptions>) {
        let pool = Arc::new(MemorySubscriptions::default());
        users
            .iter()
            .for_each(|(address, subscribed)| pool.add(address, *subscribed));
        (
            FeedbackHandler::new(pool.clone(), Arc::new(Metrics::new("Test", "ses-feedback"))),
            pool,
        )
    }

    #[tokio::test]
    async fn a_complaint_unsubscribes_once_and_a_replay_writes_nothing() {
        let (h, pool) = handler(&[("ada@example.com", true)]);
        h.handle_record(sqs_record("m1", &complaint("ada@example.com")))
            .await
            .unwrap();
        h.handle_record(sqs_record("m1", &complaint("ada@example.com")))
            .await
            .unwrap();
        assert_eq!(pool.writes(), ["unsubscribe ada@example.com"]);
        assert_eq!(pool.is_subscribed("ada@example.com"), Some(false));
    }

    #[tokio::test]
    async fn an_unknown_address_is_counted_and_a_malformed_record_is_poison_alone() {
        let (h, pool) = handler(&[("ada@example.com", true)]);
        h.handle_record(sqs_record("m1", &complaint("nobody@example.com")))
            .await
            .unwrap();
        assert!(pool.writes().is_empty());
        let processor = BatchProcessor::new(CONCURRENCY, None);
        let event = sqs_event(vec![
            sqs_record("bad", "{oops"),
            sqs_record("good", &complaint("ada@example.com")),
        ]);
        let response = h
            .handle_batch(&processor, event, Instant::now() + Duration::from_secs(10))
            .await;
        let failed: Vec<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(
            failed,
            vec!["bad"],
            "without a dead-letter queue the poison comes back for the queue's redrive"
        );
        assert_eq!(pool.writes(), ["unsubscribe ada@example.com"]);
    }

    #[tokio::test]
    async fn cognito_unavailable_hands_the_record_back() {
        let (h, pool) = handler(&[("ada@example.com", true)]);
        *pool.unavailable.lock().unwrap() = true;
        assert!(matches!(
            h.handle_record(sqs_record("m1", &complaint("ada@example.com"))).await,
            Err(RecordError::Transient(_))
        ));
    }
}
