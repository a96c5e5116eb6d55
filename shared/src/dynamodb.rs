//! What the DynamoDB adapters of the functions share: numbers and times as attribute values, a consistent read of
//! one attribute, and the SDK's error text.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

pub fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn epoch_millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// The SDK error with its causes, for logs and error messages.
pub fn error_text(error: impl std::error::Error + Send + Sync + 'static) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string()
}

/// One attribute of the item whose `id` is `key`, read consistently (after a refused conditional write, to say why);
/// `None` when the item or the attribute is missing.
pub async fn consistent_attribute(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    attribute: &str,
) -> Result<Option<AttributeValue>, String> {
    let item = client
        .get_item()
        .table_name(table)
        .key("id", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(error_text)?;
    Ok(item.item().and_then(|i| i.get(attribute)).cloned())
}
