//! Builders for test events (the aws_lambda_events types are `#[non_exhaustive]`).

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};

pub fn sqs_record(message_id: &str, body: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(message_id.to_owned());
    record.body = Some(body.to_owned());
    record.event_source_arn = Some("arn:aws:sqs:eu-west-1:123456789012:test-queue".to_owned());
    record
}

pub fn with_string_attribute(mut record: SqsMessage, name: &str, value: &str) -> SqsMessage {
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value = Some(value.to_owned());
    attribute.data_type = Some("String".to_owned());
    record.message_attributes.insert(name.to_owned(), attribute);
    record
}

pub fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// An SNS notification envelope around `message`, as SNS writes it into an SQS queue without raw delivery.
pub fn sns_envelope(message: &str, event: &str, table: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "5f1c7a8e-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:database-events",
        "Message": message,
        "Timestamp": "2026-11-20T10:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        "MessageAttributes": {
            "event": {"Type": "String", "Value": event},
            "table": {"Type": "String", "Value": table}
        }
    })
    .to_string()
}
