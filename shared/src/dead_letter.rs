//! Where poison records go: the function's own dead-letter queue, with the original body and attributes that say
//! why and where from, so an operator can read the reason and redrive the message once the cause is fixed.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageAttributeValue;

/// Attribute names put on every dead-lettered message.
pub const ATTR_ERROR: &str = "ErrorMessage";
pub const ATTR_SOURCE_MESSAGE_ID: &str = "SourceMessageId";
pub const ATTR_SOURCE_QUEUE: &str = "SourceQueueArn";

/// SQS allows 10 message attributes; three are ours, the rest carry the original ones (event, table, ...).
const MAX_ATTRIBUTES: usize = 10;
/// Keeps the reason readable and well under SQS's 256 KiB message limit.
const MAX_ERROR_CHARS: usize = 1_000;

/// The port: something that keeps a poison record and its reason.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    async fn send(&self, record: &SqsMessage, error: &str) -> Result<(), String>;
}

/// The SQS adapter, for `DEAD_LETTER_QUEUE_URL`.
pub struct SqsDeadLetterQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetterQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type is set")
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[async_trait]
impl DeadLetterSink for SqsDeadLetterQueue {
    async fn send(&self, record: &SqsMessage, error: &str) -> Result<(), String> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            // An SQS body can be empty only in theory; SendMessage rejects an empty one, so say what happened.
            .message_body(record.body.as_deref().filter(|b| !b.is_empty()).unwrap_or("<empty body>"))
            .message_attributes(ATTR_ERROR, string_attribute(truncate_chars(error, MAX_ERROR_CHARS)))
            .message_attributes(ATTR_SOURCE_MESSAGE_ID, string_attribute(record.message_id.as_deref().unwrap_or("unknown")));
        let mut count = 2;
        if let Some(arn) = record.event_source_arn.as_deref() {
            request = request.message_attributes(ATTR_SOURCE_QUEUE, string_attribute(arn));
            count += 1;
        }
        let mut originals: Vec<_> = record.message_attributes.iter().collect();
        originals.sort_by(|a, b| a.0.cmp(b.0));
        for (name, attribute) in originals {
            if count >= MAX_ATTRIBUTES {
                break;
            }
            if let (Some(value), false) = (attribute.string_value.as_deref(), [ATTR_ERROR, ATTR_SOURCE_MESSAGE_ID, ATTR_SOURCE_QUEUE].contains(&name.as_str()))
            {
                request = request.message_attributes(name, string_attribute(value));
                count += 1;
            }
        }
        request.send().await.map(|_| ()).map_err(|e| format!("sending to the dead-letter queue failed: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_smithy_mocks::{mock, mock_client};

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
    }

    #[tokio::test]
    async fn sends_original_body_with_error_and_source_attributes() {
        let rule = mock!(aws_sdk_sqs::Client::send_message)
            .match_requests(|req| {
                let attrs = req.message_attributes().unwrap();
                req.queue_url() == Some("https://sqs.local/dlq")
                    && req.message_body() == Some("{bad")
                    && attrs[ATTR_ERROR].string_value() == Some("not JSON")
                    && attrs[ATTR_SOURCE_MESSAGE_ID].string_value() == Some("m-7")
                    && attrs[ATTR_SOURCE_QUEUE].string_value() == Some("arn:aws:sqs:eu-west-1:1:q")
                    && attrs["table"].string_value() == Some("users")
            })
            .then_output(|| SendMessageOutput::builder().message_id("dlq-1").build());
        let client = mock_client!(aws_sdk_sqs, [&rule]);
        let mut record = crate::testing::with_string_attribute(crate::testing::sqs_record("m-7", "{bad"), "table", "users");
        record.event_source_arn = Some("arn:aws:sqs:eu-west-1:1:q".into());
        SqsDeadLetterQueue::new(client, "https://sqs.local/dlq").send(&record, "not JSON").await.unwrap();
        assert_eq!(rule.num_calls(), 1);
    }
}
