//! The sending instances' registry on DynamoDB: one item of the idempotency table.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use shared::dynamodb::{epoch_millis, epoch_seconds, number};

use super::SenderRegistry;
use crate::error::DependencyError;

/// The item of the idempotency table that lists the sending instances: `senders`, a map of instance id to the
/// epoch millisecond its entry lapses.
pub const SENDERS_KEY: &str = "publish-history-email#senders";

/// The sending instances' registry in one DynamoDB item (see [`SENDERS_KEY`]).
pub struct DynamoSenderRegistry {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSenderRegistry {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn set_entry(
        &self,
        instance: &str,
        until: SystemTime,
        lapsed: &[String],
    ) -> Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    > {
        let mut expression = "SET senders.#me = :until, expiration = :expiration".to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(SENDERS_KEY.into()));
        let forget: Vec<&String> = lapsed.iter().filter(|id| id.as_str() != instance).take(20).collect();
        if !forget.is_empty() {
            let names: Vec<String> = (0..forget.len()).map(|i| format!("senders.#lapsed{i}")).collect();
            expression.push_str(&format!(" REMOVE {}", names.join(", ")));
            for (i, id) in forget.iter().enumerate() {
                request = request.expression_attribute_names(format!("#lapsed{i}"), id.as_str());
            }
        }
        request
            .update_expression(expression)
            .expression_attribute_names("#me", instance)
            .expression_attribute_values(":until", number(epoch_millis(until)))
            // The item goes with the table's TTL a day after the last sender.
            .expression_attribute_values(
                ":expiration",
                number(epoch_seconds(SystemTime::now() + Duration::from_secs(24 * 3600))),
            )
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
    }
}

#[async_trait]
impl SenderRegistry for DynamoSenderRegistry {
    async fn renew(
        &self,
        instance: &str,
        until: SystemTime,
        lapsed: &[String],
    ) -> Result<Vec<(String, SystemTime)>, DependencyError> {
        let output = match self.set_entry(instance, until, lapsed).await {
            Ok(output) => output,
            // The first sender ever: the map does not exist yet for a nested SET.
            Err(error) if error.code() == Some("ValidationException") => {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("id", AttributeValue::S(SENDERS_KEY.into()))
                    .update_expression("SET senders = if_not_exists(senders, :empty)")
                    .expression_attribute_values(":empty", AttributeValue::M(Default::default()))
                    .send()
                    .await
                    .map_err(DependencyError::from_sdk)?;
                self.set_entry(instance, until, &[])
                    .await
                    .map_err(DependencyError::from_sdk)?
            }
            Err(error) => return Err(DependencyError::from_sdk(error)),
        };
        let senders = output
            .attributes()
            .and_then(|a| a.get("senders"))
            .and_then(|m| m.as_m().ok());
        Ok(senders
            .into_iter()
            .flatten()
            .filter_map(|(id, until)| {
                let millis: u64 = until.as_n().ok()?.parse().ok()?;
                Some((id.clone(), SystemTime::UNIX_EPOCH + Duration::from_millis(millis)))
            })
            .collect())
    }
}
