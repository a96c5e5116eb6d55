//! The body of an SQS record fed by an SNS topic: either the SNS envelope (`Type: Notification`, `Message` as a
//! JSON string, `MessageAttributes`) or, with raw message delivery, the message itself with the SNS message
//! attributes turned into SQS message attributes. Both arrive at the same handler code through [`unwrap_sqs_body`].

use std::collections::HashMap;

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::db_event::{DatabaseEvent, DatabaseEventError};

/// The published message, whichever way it was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub message: String,
    /// String-valued message attributes (SNS envelope `MessageAttributes` or SQS message attributes).
    pub attributes: HashMap<String, String>,
    /// The SNS message id when the envelope was kept; `None` for raw delivery.
    pub sns_message_id: Option<String>,
    /// When it was published: the SNS envelope's `Timestamp`, or for raw delivery the SQS `SentTimestamp` (when SNS
    /// put it in the queue). Redeliveries keep both.
    pub published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("SQS record has no body")]
    NoBody,
    #[error("SNS envelope of type {0:?} is not a notification")]
    NotANotification(String),
    #[error("SNS envelope has no string `Message`")]
    NoMessage,
    #[error("record is neither an SNS notification (`Sns.Message`) nor an SQS message (`body`)")]
    UnknownRecord,
    #[error(transparent)]
    Event(#[from] DatabaseEventError),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    message_attributes: HashMap<String, SnsAttribute>,
    #[serde(default)]
    timestamp: Option<String>,
    // Present on every SNS envelope; its absence is how a raw message that happens to have `Type` is told apart.
    // Required for that, never read.
    #[serde(rename = "TopicArn")]
    _topic_arn: String,
}

#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Value")]
    value: Option<String>,
}

/// Opens the SNS envelope when there is one; otherwise the body is the raw message.
pub fn unwrap_sqs_body(record: &SqsMessage) -> Result<Published, EnvelopeError> {
    let body = record.body.as_deref().ok_or(EnvelopeError::NoBody)?;
    if let Ok(envelope) = serde_json::from_str::<SnsEnvelope>(body) {
        if envelope.kind != "Notification" {
            return Err(EnvelopeError::NotANotification(envelope.kind));
        }
        let message = envelope.message.ok_or(EnvelopeError::NoMessage)?;
        let attributes = envelope
            .message_attributes
            .into_iter()
            .filter_map(|(name, attribute)| attribute.value.map(|value| (name, value)))
            .collect();
        let published_at = envelope
            .timestamp
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        return Ok(Published {
            message,
            attributes,
            sns_message_id: envelope.message_id,
            published_at,
        });
    }
    let attributes = record
        .message_attributes
        .iter()
        .filter_map(|(name, attribute)| attribute.string_value.clone().map(|value| (name.clone(), value)))
        .collect();
    let published_at = record
        .attributes
        .get("SentTimestamp")
        .and_then(|ms| ms.parse().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    Ok(Published {
        message: body.to_owned(),
        attributes,
        sns_message_id: None,
        published_at,
    })
}

/// The database event carried by an SQS record, delivered raw or in an SNS envelope.
pub fn database_event(record: &SqsMessage) -> Result<DatabaseEvent, EnvelopeError> {
    Ok(published_database_event(record)?.0)
}

/// The database event and when it was published (see [`Published::published_at`]).
pub fn published_database_event(record: &SqsMessage) -> Result<(DatabaseEvent, Option<DateTime<Utc>>), EnvelopeError> {
    let published = unwrap_sqs_body(record)?;
    Ok((DatabaseEvent::from_json(&published.message)?, published.published_at))
}

/// The message of each record of an invocation fed by SNS (`Records[].Sns.Message`) or SQS (`Records[].body`), for
/// functions whose events arrive either way. `None` when the payload has no `Records`: it is some other event.
pub fn record_messages(payload: &serde_json::Value) -> Option<Result<Vec<&str>, EnvelopeError>> {
    let records = payload.get("Records")?.as_array()?;
    Some(
        records
            .iter()
            .map(|record| {
                record
                    .pointer("/Sns/Message")
                    .or_else(|| record.get("body"))
                    .and_then(serde_json::Value::as_str)
                    .ok_or(EnvelopeError::UnknownRecord)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(body: &str) -> SqsMessage {
        crate::testing::sqs_record("m-1", body)
    }

    fn sns_body(message: &str) -> String {
        json!({
            "Type": "Notification",
            "MessageId": "sns-1",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:database-events",
            "Message": message,
            "Timestamp": "2026-11-20T10:00:00.000Z",
            "SignatureVersion": "1",
            "MessageAttributes": {
                "event": {"Type": "String", "Value": "record_updated"},
                "table": {"Type": "String", "Value": "users"}
            }
        })
        .to_string()
    }

    const EVENT: &str = r#"{"event":"record_updated","table":"users","record":{"email":"a@b.co"}}"#;

    #[test]
    fn opens_sns_envelope_with_attributes() {
        let published = unwrap_sqs_body(&record(&sns_body(EVENT))).unwrap();
        assert_eq!(published.message, EVENT);
        assert_eq!(published.sns_message_id.as_deref(), Some("sns-1"));
        assert_eq!(published.attributes["table"], "users");
        assert_eq!(published.attributes["event"], "record_updated");
        assert_eq!(published.published_at, Some("2026-11-20T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn raw_delivery_uses_sqs_message_attributes() {
        let raw = crate::testing::with_string_attribute(record(EVENT), "table", "users");
        let published = unwrap_sqs_body(&raw).unwrap();
        assert_eq!(published.message, EVENT);
        assert_eq!(published.sns_message_id, None);
        assert_eq!(published.attributes["table"], "users");
        assert_eq!(published.published_at, None, "no SentTimestamp on this record");
        let mut sent = raw.clone();
        sent.attributes.insert("SentTimestamp".into(), "1763719200000".into());
        assert_eq!(
            unwrap_sqs_body(&sent).unwrap().published_at,
            DateTime::<Utc>::from_timestamp_millis(1_763_719_200_000)
        );
    }

    #[test]
    fn both_deliveries_give_the_same_database_event() {
        assert_eq!(
            database_event(&record(&sns_body(EVENT))).unwrap(),
            database_event(&record(EVENT)).unwrap()
        );
    }

    #[test]
    fn subscription_confirmation_and_missing_message_are_errors() {
        let confirmation = json!({"Type":"SubscriptionConfirmation","TopicArn":"arn:t","Token":"x"}).to_string();
        assert_eq!(
            unwrap_sqs_body(&record(&confirmation)),
            Err(EnvelopeError::NotANotification("SubscriptionConfirmation".into()))
        );
        let no_message = json!({"Type":"Notification","TopicArn":"arn:t"}).to_string();
        assert_eq!(unwrap_sqs_body(&record(&no_message)), Err(EnvelopeError::NoMessage));
        let no_body = SqsMessage::default();
        assert_eq!(unwrap_sqs_body(&no_body), Err(EnvelopeError::NoBody));
    }

    #[test]
    fn record_messages_reads_sns_and_sqs_records_and_nothing_else() {
        let sns = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "a"}}, {"Sns": {"Message": "b"}}]});
        assert_eq!(record_messages(&sns), Some(Ok(vec!["a", "b"])));
        let sqs = json!({"Records": [{"messageId": "m", "body": "c"}]});
        assert_eq!(record_messages(&sqs), Some(Ok(vec!["c"])));
        assert_eq!(
            record_messages(&json!({"Records": [{"Sns": {}}]})),
            Some(Err(EnvelopeError::UnknownRecord))
        );
        assert_eq!(record_messages(&json!({"source": "aws.autoscaling"})), None);
    }

    #[test]
    fn malformed_message_inside_envelope_is_an_event_error() {
        let err = database_event(&record(&sns_body("{not json"))).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Event(DatabaseEventError::Malformed(_))),
            "{err:?}"
        );
    }
}
