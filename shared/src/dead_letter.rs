//! Where poison records go: the function's own dead-letter queue, with the original body and attributes that say
//! why and where from, so an operator can read the reason and redrive the message once the cause is fixed.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::dependency::DependencyError;

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
    async fn send(&self, record: &SqsMessage, error: &str) -> Result<(), DependencyError>;
}

/// The SQS adapter, for `DEAD_LETTER_QUEUE_URL`.
pub struct SqsDeadLetterQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetterQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// The sink of a queue-fed function: the queue `DEAD_LETTER_QUEUE_URL` names, or none when it is not set (poison
    /// records are then reported for redelivery, and the queue's redrive policy moves them).
    pub fn from_setting(
        client: &aws_sdk_sqs::Client,
        queue_url: Option<String>,
    ) -> Option<std::sync::Arc<dyn DeadLetterSink>> {
        queue_url.map(|url| std::sync::Arc::new(Self::new(client.clone(), url)) as std::sync::Arc<dyn DeadLetterSink>)
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// SQS's limit on a message: its body and each attribute's name, data type and value.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// The attributes a dead-lettered `record` carries: ours first (the reason, shortened to keep the whole message
/// within SQS's limit), then as many of the original ones as fit. The body is never cut: it is what gets redriven.
fn attributes_within_limit(record: &SqsMessage, body: &str, error: &str) -> Vec<(String, String)> {
    let size = |attributes: &[(String, String)]| {
        body.len()
            + attributes
                .iter()
                .map(|(name, value)| name.len() + "String".len() + value.len())
                .sum::<usize>()
    };
    let mut attributes = vec![
        (ATTR_ERROR.to_owned(), truncate_chars(error, MAX_ERROR_CHARS).to_owned()),
        (
            ATTR_SOURCE_MESSAGE_ID.to_owned(),
            record.message_id.as_deref().unwrap_or("unknown").to_owned(),
        ),
    ];
    if let Some(arn) = record.event_source_arn.as_deref() {
        attributes.push((ATTR_SOURCE_QUEUE.to_owned(), arn.to_owned()));
    }
    let mut originals: Vec<_> = record.message_attributes.iter().collect();
    originals.sort_by(|a, b| a.0.cmp(b.0));
    for (name, attribute) in originals {
        if attributes.len() >= MAX_ATTRIBUTES {
            break;
        }
        if let (Some(value), false) = (
            attribute.string_value.as_deref(),
            [ATTR_ERROR, ATTR_SOURCE_MESSAGE_ID, ATTR_SOURCE_QUEUE].contains(&name.as_str()),
        ) {
            let candidate = (name.clone(), value.to_owned());
            if size(&attributes) + size(std::slice::from_ref(&candidate)) - body.len() <= MAX_MESSAGE_BYTES {
                attributes.push(candidate);
            }
        }
    }
    // A body near the limit leaves little room: the reason is shortened (to no less than its first words), then
    // the least useful attributes go, last first; the reason stays (an empty attribute SQS would refuse).
    const MIN_REASON_BYTES: usize = 32;
    loop {
        let over = size(&attributes).saturating_sub(MAX_MESSAGE_BYTES);
        if over == 0 {
            break;
        }
        let only_the_reason = attributes.len() == 1;
        let reason = &mut attributes[0].1;
        if reason.len() >= over + MIN_REASON_BYTES || only_the_reason {
            let keep = reason.len().saturating_sub(over).max(1);
            let cut = (1..=keep)
                .rev()
                .find(|&i| reason.is_char_boundary(i))
                .unwrap_or(reason.len());
            reason.truncate(cut);
            break;
        }
        attributes.pop();
    }
    attributes
}

#[async_trait]
impl DeadLetterSink for SqsDeadLetterQueue {
    async fn send(&self, record: &SqsMessage, error: &str) -> Result<(), DependencyError> {
        // An SQS body can be empty only in theory; SendMessage rejects an empty one, so say what happened.
        let body = record
            .body
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or("<empty body>");
        let mut request = self.client.send_message().queue_url(&self.queue_url).message_body(body);
        for (name, value) in attributes_within_limit(record, body, error) {
            request = request.message_attributes(name, string_attribute(&value));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DependencyError::from_sdk(e).within("sending to the dead-letter queue failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_smithy_mocks::{mock, mock_client};

    #[test]
    fn a_body_near_the_limit_keeps_the_message_within_it_and_the_body_whole() {
        let body = "x".repeat(MAX_MESSAGE_BYTES - 60);
        let mut record =
            crate::testing::with_string_attribute(crate::testing::sqs_record("m-1", &body), "table", "users");
        record.event_source_arn = Some("arn:aws:sqs:eu-west-1:123456789012:dev-cognito-attribute-sync".into());
        let attributes = attributes_within_limit(&record, &body, &"not JSON: ".repeat(100));
        let size = body.len() + attributes.iter().map(|(n, v)| n.len() + 6 + v.len()).sum::<usize>();
        assert!(size <= MAX_MESSAGE_BYTES, "{size}");
        assert!(
            attributes[0].1.starts_with("not JSON") && attributes[0].1.len() < 1000,
            "{attributes:?}"
        );
        assert_eq!(attributes[0].0, ATTR_ERROR, "the reason is kept");

        let small = crate::testing::with_string_attribute(crate::testing::sqs_record("m-2", "{bad"), "table", "users");
        let attributes = attributes_within_limit(&small, "{bad", "not JSON");
        assert_eq!(
            attributes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec![ATTR_ERROR, ATTR_SOURCE_MESSAGE_ID, ATTR_SOURCE_QUEUE, "table"]
        );
    }

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
        let mut record =
            crate::testing::with_string_attribute(crate::testing::sqs_record("m-7", "{bad"), "table", "users");
        record.event_source_arn = Some("arn:aws:sqs:eu-west-1:1:q".into());
        SqsDeadLetterQueue::new(client, "https://sqs.local/dlq")
            .send(&record, "not JSON")
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 1);
    }
}
