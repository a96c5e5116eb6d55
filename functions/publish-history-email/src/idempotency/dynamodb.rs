//! The once-only records on DynamoDB: conditional writes, so two invocations never both hold a claim, and completions
//! in `BatchWriteItem`s.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use shared::dynamodb::{consistent_attribute, epoch_millis, epoch_seconds, error_text, number};

use super::{Claim, IdempotencyStore, Unwritten, STATUS_COMPLETED, STATUS_IN_PROGRESS};
use crate::error::DependencyError;

/// Writes of the records a completion's `BatchWriteItem` left unprocessed, and the wait before the first of them
/// (doubling, jittered, as AWS advises for unprocessed items).
const UNPROCESSED_ATTEMPTS: u32 = 4;
const UNPROCESSED_BACKOFF: Duration = Duration::from_millis(50);

fn keys_of(requests: &[WriteRequest]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| r.put_request()?.item().get("id")?.as_s().ok().cloned())
        .collect()
}

pub struct DynamoIdempotency {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// How long a completed record prevents a second send (`IDEMPOTENCY_TTL_SECONDS`).
    ttl: Duration,
}

impl DynamoIdempotency {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, ttl: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            ttl,
        }
    }

    async fn status(&self, key: &str) -> Result<Option<String>, String> {
        let status = consistent_attribute(&self.client, &self.table, key, "status").await?;
        Ok(status.as_ref().and_then(|s| s.as_s().ok()).cloned())
    }
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotency {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, DependencyError> {
        let now = SystemTime::now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(key.to_owned()))
            .item("status", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .item("expiration", number(epoch_seconds(now + self.ttl)))
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
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => {
                match self.status(key).await.map_err(DependencyError::Unavailable)?.as_deref() {
                    Some(STATUS_COMPLETED) => Ok(Claim::AlreadyCompleted),
                    _ => Ok(Claim::InProgress),
                }
            }
            Err(error) => Err(DependencyError::from_sdk(error)),
        }
    }

    /// One `BatchWriteItem` of whole COMPLETED records (what the UpdateItem of one record left: no
    /// `in_progress_expiration`); the items DynamoDB leaves unprocessed (throttling) are written again after a backoff.
    async fn complete(&self, completed: &[(String, String)]) -> Result<(), Unwritten> {
        let expiration = number(epoch_seconds(SystemTime::now() + self.ttl));
        let mut requests: Vec<WriteRequest> = Vec::with_capacity(completed.len());
        for (key, outcome) in completed {
            let item = PutRequest::builder()
                .item("id", AttributeValue::S(key.clone()))
                .item("status", AttributeValue::S(STATUS_COMPLETED.into()))
                .item("expiration", expiration.clone())
                .item("outcome", AttributeValue::S(outcome.clone()))
                .build()
                .map_err(|e| Unwritten {
                    keys: vec![key.clone()],
                    error: e.to_string(),
                })?;
            requests.push(WriteRequest::builder().put_request(item).build());
        }
        let mut attempt = 1;
        loop {
            let output = match self
                .client
                .batch_write_item()
                .request_items(&self.table, requests.clone())
                .send()
                .await
            {
                Ok(output) => output,
                Err(error) => {
                    return Err(Unwritten {
                        keys: keys_of(&requests),
                        error: error_text(error),
                    })
                }
            };
            requests = output
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            if attempt == UNPROCESSED_ATTEMPTS {
                return Err(Unwritten {
                    keys: keys_of(&requests),
                    error: format!("DynamoDB left {} records unprocessed {attempt} times", requests.len()),
                });
            }
            tokio::time::sleep(shared::backoff::jittered(
                UNPROCESSED_BACKOFF,
                attempt,
                UNPROCESSED_BACKOFF * 4,
            ))
            .await;
            attempt += 1;
        }
    }

    async fn release(&self, key: &str) -> Result<(), DependencyError> {
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
            Err(error) => Err(DependencyError::from_sdk(error)),
        }
    }
}

// The once-only record's conditions, as the adapter sends them to DynamoDB (moto evaluates them in the e2e tests).
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemOutput};
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn refused() -> ConditionalCheckFailedException {
        ConditionalCheckFailedException::builder()
            .message("The conditional request failed")
            .meta(
                aws_sdk_dynamodb::error::ErrorMetadata::builder()
                    .code("ConditionalCheckFailedException")
                    .build(),
            )
            .build()
    }

    fn stored(status: &str) -> GetItemOutput {
        GetItemOutput::builder()
            .item("id", AttributeValue::S("k".into()))
            .item("status", AttributeValue::S(status.into()))
            .build()
    }

    fn number_of(values: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u128 {
        values[name].as_n().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn a_claim_may_take_over_only_an_in_progress_record_whose_invocation_has_ended() {
        let until = SystemTime::now() + Duration::from_secs(30);
        let claim = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| {
                let condition = r.condition_expression().unwrap();
                let values = r.expression_attribute_values().unwrap();
                let item = r.item().unwrap();
                let now_ms = epoch_millis(SystemTime::now());
                // New, expired, or INPROGRESS with a lapsed invocation deadline: a COMPLETED record matches none.
                condition == "attribute_not_exists(id) OR expiration < :now OR (#status = :in_progress AND in_progress_expiration < :now_ms)"
                    && values[":in_progress"].as_s().unwrap() == STATUS_IN_PROGRESS
                    && number_of(values, ":now_ms").abs_diff(now_ms) < 5_000
                    && item["status"].as_s().unwrap() == STATUS_IN_PROGRESS
                    && number_of(item, "in_progress_expiration") == epoch_millis(until)
                    && number_of(item, "expiration") >= epoch_seconds(SystemTime::now() + 14 * DAY) as u128
            })
            .then_output(|| PutItemOutput::builder().build());
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, [&claim]), "t", 15 * DAY);
        assert_eq!(store.claim("k", until).await, Ok(Claim::Acquired));
    }

    #[tokio::test]
    async fn a_refused_claim_is_already_completed_or_in_progress_as_the_record_says() {
        for (status, expected) in [
            (STATUS_COMPLETED, Claim::AlreadyCompleted),
            (STATUS_IN_PROGRESS, Claim::InProgress),
        ] {
            let put = mock!(aws_sdk_dynamodb::Client::put_item)
                .then_error(|| PutItemError::ConditionalCheckFailedException(refused()));
            let get = mock!(aws_sdk_dynamodb::Client::get_item)
                .match_requests(|r| r.consistent_read() == Some(true))
                .then_output(move || stored(status));
            let store = DynamoIdempotency::new(
                mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &get]),
                "t",
                15 * DAY,
            );
            assert_eq!(store.claim("k", SystemTime::now()).await, Ok(expected), "{status}");
        }
    }

    fn put_keys(r: &aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput) -> Vec<String> {
        r.request_items().unwrap()["t"]
            .iter()
            .map(|w| w.put_request().unwrap().item()["id"].as_s().unwrap().clone())
            .collect()
    }

    #[tokio::test]
    async fn completing_writes_whole_completed_records_and_writes_again_what_dynamodb_left_unprocessed() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        let first = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                let requests = &r.request_items().unwrap()["t"];
                put_keys(r) == ["a", "b"]
                    && requests.iter().all(|w| {
                        let item = w.put_request().unwrap().item();
                        // The whole record: what the claim's in-progress deadline was is gone with it.
                        item.len() == 4
                            && item["status"].as_s().unwrap() == STATUS_COMPLETED
                            && number_of(item, "expiration") >= epoch_seconds(SystemTime::now() + 14 * DAY) as u128
                    })
                    && requests[1].put_request().unwrap().item()["outcome"].as_s().unwrap() == "rejected"
            })
            .then_output(|| {
                let left = WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .item("id", AttributeValue::S("b".into()))
                            .build()
                            .unwrap(),
                    )
                    .build();
                BatchWriteItemOutput::builder()
                    .unprocessed_items("t", vec![left])
                    .build()
            });
        let again = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| put_keys(r) == ["b"])
            .then_output(|| BatchWriteItemOutput::builder().build());
        let store = DynamoIdempotency::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&first, &again]),
            "t",
            15 * DAY,
        );
        let completed = [
            ("a".to_string(), "sent".to_string()),
            ("b".to_string(), "rejected".to_string()),
        ];
        assert_eq!(store.complete(&completed).await, Ok(()));
        assert_eq!((first.num_calls(), again.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn records_left_unprocessed_every_time_are_named_unwritten() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        let stuck = mock!(aws_sdk_dynamodb::Client::batch_write_item).then_compute_output(|r| {
            BatchWriteItemOutput::builder()
                .unprocessed_items("t", r.request_items().unwrap()["t"].clone())
                .build()
        });
        let store = DynamoIdempotency::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&stuck]),
            "t",
            15 * DAY,
        );
        let unwritten = store
            .complete(&[("a".to_string(), "sent".to_string())])
            .await
            .unwrap_err();
        assert_eq!(unwritten.keys, ["a"]);
        assert_eq!(stuck.num_calls(), UNPROCESSED_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn releasing_removes_only_an_in_progress_record() {
        let release = mock!(aws_sdk_dynamodb::Client::delete_item)
            .match_requests(|r| r.condition_expression() == Some("#status = :in_progress"))
            .then_output(|| DeleteItemOutput::builder().build());
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, [&release]), "t", 15 * DAY);
        store.release("k").await.unwrap();
        // A completed record refuses the release: that is no error, and the record stays.
        let kept = mock!(aws_sdk_dynamodb::Client::delete_item)
            .then_error(|| DeleteItemError::ConditionalCheckFailedException(refused()));
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, [&kept]), "t", 15 * DAY);
        assert_eq!(store.release("k").await, Ok(()));
    }
}
