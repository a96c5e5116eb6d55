//! Handing on: the rows of a record that one invocation did not reach go back to the record's own queue as a new
//! message, and the record is acknowledged. A large import then goes on in the next invocations instead of being
//! handed back whole (which restarted it at row 1 and spent a receive each time, until it was dead-lettered).
//!
//! The new message is the same database event with only the rows not reached, and `occurredAt` set to the time
//! the rows were versioned by, so each row keeps its place in its user's history (see [`shared::ordering`]).

use async_trait::async_trait;
use serde_json::Value;
use shared::db_event::Row;
use shared::dependency::DependencyError;
use shared::ordering::Version;

/// Where the rest of a record goes: the queue it came from.
#[async_trait]
pub trait HandOn: Send + Sync {
    /// Sends `body` as a new message to the queue `queue_arn` (the record's `eventSourceARN`).
    async fn hand_on(&self, queue_arn: &str, body: &str) -> Result<(), DependencyError>;
}

/// The message that carries `rest` on: the published event `message` (its other fields kept as they are) with only
/// those rows, versioned as the original's were, and naming the message it continues for the logs.
pub fn continuation(
    message: &str,
    rest: Vec<Row>,
    event_version: Option<Version>,
    continues: &str,
) -> Result<String, String> {
    let mut event: serde_json::Map<String, Value> =
        serde_json::from_str(message).map_err(|e| format!("the event cannot be read again: {e}"))?;
    event.remove("record");
    event.insert(
        "records".into(),
        Value::Array(rest.into_iter().map(Value::Object).collect()),
    );
    // The original's version, to the microsecond: RFC 3339 with six decimals parses back to the same number.
    if let Some(time) = event_version.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros) {
        event.insert(
            "occurredAt".into(),
            Value::String(time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
    }
    event.insert("continues".into(), Value::String(continues.to_owned()));
    Ok(Value::Object(event).to_string())
}

/// A recording stand-in for the tests: every message handed on, or a refusal.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct RecordingHandOn {
        pub sent: Mutex<Vec<(String, String)>>,
        pub refuse: bool,
    }

    impl RecordingHandOn {
        pub fn bodies(&self) -> Vec<Value> {
            self.sent
                .lock()
                .unwrap()
                .iter()
                .map(|(_, body)| serde_json::from_str(body).unwrap())
                .collect()
        }
    }

    #[async_trait]
    impl HandOn for std::sync::Arc<RecordingHandOn> {
        async fn hand_on(&self, queue_arn: &str, body: &str) -> Result<(), DependencyError> {
            if self.refuse {
                return Err(DependencyError::Unavailable("queue unavailable".into()));
            }
            self.sent.lock().unwrap().push((queue_arn.to_owned(), body.to_owned()));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::db_event::DatabaseEvent;
    use shared::ordering::parse_version;

    #[test]
    fn a_continuation_is_the_same_event_with_the_rest_and_the_same_version() {
        let message = json!({"event": "records_created", "table": "users", "eventId": "e-1", "tenant": "acme",
                             "records": [{"email": "a@x.co"}, {"email": "b@x.co"}, {"email": "c@x.co"}]})
        .to_string();
        let version = parse_version(&json!("2026-11-20T10:00:00.123456Z")).unwrap();
        let rest = vec![json!({"email": "c@x.co"}).as_object().unwrap().clone()];
        let body = continuation(&message, rest, Some(version), "m-1").unwrap();
        let event = DatabaseEvent::from_json(&body).unwrap();
        assert_eq!(
            event.rows,
            vec![json!({"email": "c@x.co"}).as_object().unwrap().clone()]
        );
        assert_eq!(
            (event.event_id.as_deref(), event.tenant.as_deref()),
            (Some("e-1"), Some("acme"))
        );
        assert_eq!(
            parse_version(&json!(event.occurred_at.unwrap())),
            Some(version),
            "to the microsecond"
        );
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["continues"], "m-1");
    }

    #[test]
    fn a_single_record_event_continues_as_records() {
        let message = json!({"event": "record_updated", "table": "users", "record": {"email": "a@x.co"}}).to_string();
        let body = continuation(
            &message,
            vec![json!({"email": "a@x.co"}).as_object().unwrap().clone()],
            None,
            "m-2",
        )
        .unwrap();
        let event = DatabaseEvent::from_json(&body).unwrap();
        assert_eq!(event.rows.len(), 1);
        assert_eq!(event.occurred_at, None, "no version given, none made up");
    }
}
