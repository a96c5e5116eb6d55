//! At most one email per (row, recipient), however often the row is delivered: an idempotency record per send, in
//! the way of the Powertools idempotency utility. Written conditionally before the send (`INPROGRESS`, expiring with
//! the invocation so a crashed send is retried), completed after it (`COMPLETED`, kept for a day).
//!
//! Table: partition key `id` (String), TTL attribute `expiration` (epoch seconds), `status`, `in_progress_expiration`
//! (epoch milliseconds) and `outcome`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

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

/// Without `IDEMPOTENCY_TABLE`: every claim is granted (at least once delivery).
pub struct NoIdempotency;

#[async_trait]
impl IdempotencyStore for NoIdempotency {
    async fn claim(&self, _: &str, _: SystemTime) -> Result<Claim, String> {
        Ok(Claim::Acquired)
    }
    async fn complete(&self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn release(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The key of one notification: the row and a hash of the recipient, so the table never holds an address.
pub fn notification_key(tenant: &str, row_id: &str, recipient: &str) -> String {
    let digest = Sha256::digest(recipient.trim().to_lowercase().as_bytes());
    let hash: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("publish-history-email#{tenant}#{row_id}#{hash}")
}

pub const STATUS_IN_PROGRESS: &str = "INPROGRESS";
pub const STATUS_COMPLETED: &str = "COMPLETED";
/// How long a completed record prevents a second send.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

pub struct DynamoIdempotency {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoIdempotency {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn status(&self, key: &str) -> Result<Option<String>, String> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        Ok(item.item().and_then(|i| i.get("status")).and_then(|s| s.as_s().ok()).cloned())
    }
}

fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn epoch_millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotency {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, String> {
        let now = SystemTime::now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(key.to_owned()))
            .item("status", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .item("expiration", number(epoch_seconds(now + RECORD_TTL)))
            .item("in_progress_expiration", number(epoch_millis(in_progress_until)))
            // New, or expired but not yet swept by TTL, or an in-progress claim whose invocation has ended.
            .condition_expression("attribute_not_exists(id) OR expiration < :now OR (#status = :in_progress AND in_progress_expiration < :now_ms)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", number(epoch_seconds(now)))
            .expression_attribute_values(":now_ms", number(epoch_millis(now)))
            .expression_attribute_values(":in_progress", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Acquired),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => match self.status(key).await?.as_deref() {
                Some(STATUS_COMPLETED) => Ok(Claim::AlreadyCompleted),
                _ => Ok(Claim::InProgress),
            },
            Err(error) => Err(aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string()),
        }
    }

    async fn complete(&self, key: &str, outcome: &str) -> Result<(), String> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .update_expression("SET #status = :completed, expiration = :expiration, outcome = :outcome REMOVE in_progress_expiration")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", AttributeValue::S(STATUS_COMPLETED.into()))
            .expression_attribute_values(":expiration", number(epoch_seconds(SystemTime::now() + RECORD_TTL)))
            .expression_attribute_values(":outcome", AttributeValue::S(outcome.to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
    }

    async fn release(&self, key: &str) -> Result<(), String> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .condition_expression("#status = :in_progress")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(error) => Err(aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_row_and_hashes_recipient() {
        let key = notification_key("acme", "ph-1", "Ada@Example.com ");
        assert!(key.starts_with("publish-history-email#acme#ph-1#"));
        assert!(!key.to_lowercase().contains("ada"), "{key}");
        assert_eq!(key, notification_key("acme", "ph-1", "ada@example.com"));
        assert_ne!(key, notification_key("acme", "ph-2", "ada@example.com"));
        assert_ne!(key, notification_key("acme", "ph-1", "grace@example.com"));
    }
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
