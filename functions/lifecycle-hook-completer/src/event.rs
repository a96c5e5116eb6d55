//! The lifecycle action, from any of the ways Auto Scaling delivers it: an EventBridge event
//! (`EC2 Instance-launch Lifecycle Action`), or the lifecycle hook's own notification through SNS or SQS.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

pub const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
pub const TEST_NOTIFICATION: &str = "autoscaling:TEST_NOTIFICATION";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LifecycleAction {
    pub lifecycle_action_token: String,
    pub auto_scaling_group_name: String,
    pub lifecycle_hook_name: String,
    #[serde(rename = "EC2InstanceId")]
    pub ec2_instance_id: String,
    pub lifecycle_transition: String,
    #[serde(default)]
    pub notification_metadata: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub destination: Option<String>,
}

impl LifecycleAction {
    /// Launching into the warm pool, not into service: there is no application to wait for.
    pub fn is_warm_pool(&self) -> bool {
        self.destination.as_deref() == Some("WarmPool")
    }
}

// A handful per invocation, consumed at once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Action {
        action: LifecycleAction,
        time: DateTime<Utc>,
    },
    TestNotification,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("unrecognised event: {0}")]
    Unrecognised(String),
    #[error("malformed lifecycle action: {0}")]
    Malformed(String),
}

fn parse_time(value: Option<&Value>, received: DateTime<Utc>) -> DateTime<Utc> {
    value
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(received)
}

/// A lifecycle hook notification body (SNS message or SQS body): the detail fields at top level, plus `Time`.
fn from_notification(text: &str, received: DateTime<Utc>) -> Result<Delivery, EventError> {
    let value: Value = serde_json::from_str(text).map_err(|e| EventError::Malformed(e.to_string()))?;
    if value.get("Event").and_then(Value::as_str) == Some(TEST_NOTIFICATION) {
        return Ok(Delivery::TestNotification);
    }
    let time = parse_time(value.get("Time"), received);
    let action = serde_json::from_value(value).map_err(|e| EventError::Malformed(e.to_string()))?;
    Ok(Delivery::Action { action, time })
}

/// Every delivery in an invocation. `received` stands in for a missing or unreadable event time.
pub fn parse(payload: &Value, received: DateTime<Utc>) -> Result<Vec<Delivery>, EventError> {
    if payload.get("source").and_then(Value::as_str) == Some("aws.autoscaling") {
        let detail = payload
            .get("detail")
            .cloned()
            .ok_or_else(|| EventError::Malformed("no detail".into()))?;
        let time = parse_time(payload.get("time"), received);
        let action = serde_json::from_value(detail).map_err(|e| EventError::Malformed(e.to_string()))?;
        return Ok(vec![Delivery::Action { action, time }]);
    }
    if let Some(messages) = shared::envelope::record_messages(payload) {
        return messages
            .map_err(|e| EventError::Unrecognised(e.to_string()))?
            .into_iter()
            .map(|text| from_notification(text, received))
            .collect();
    }
    Err(EventError::Unrecognised(
        "expected an aws.autoscaling EventBridge event, SNS records or SQS records".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail() -> Value {
        json!({
            "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
            "AutoScalingGroupName": "workers",
            "LifecycleHookName": "workers-launching",
            "EC2InstanceId": "i-1234567890abcdef0",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "NotificationMetadata": "{\"role\":\"worker\"}",
            "Origin": "EC2",
            "Destination": "AutoScalingGroup"
        })
    }

    fn received() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn eventbridge_event() {
        let event = json!({"version": "0", "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
                           "time": "2026-11-21T09:58:00Z", "detail": detail()});
        let deliveries = parse(&event, received()).unwrap();
        let Delivery::Action { action, time } = &deliveries[0] else {
            panic!("{deliveries:?}")
        };
        assert_eq!(action.ec2_instance_id, "i-1234567890abcdef0");
        assert_eq!(action.lifecycle_transition, LAUNCHING);
        assert!(!action.is_warm_pool());
        assert_eq!(time.to_rfc3339(), "2026-11-21T09:58:00+00:00");
    }

    #[test]
    fn sns_and_sqs_notifications_and_the_test_notification() {
        let mut body = detail();
        body["Time"] = json!("2026-11-21T09:59:00.123Z");
        body["Service"] = json!("AWS Auto Scaling");
        body["Destination"] = json!("WarmPool");
        let sns = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": body.to_string()}}]});
        let sqs = json!({"Records": [{"eventSource": "aws:sqs", "body": body.to_string()}]});
        for payload in [sns, sqs] {
            let deliveries = parse(&payload, received()).unwrap();
            let Delivery::Action { action, time } = &deliveries[0] else {
                panic!()
            };
            assert!(action.is_warm_pool());
            assert_eq!(time.timestamp_millis() % 1000, 123);
        }
        let test = json!({"Records": [{"Sns": {"Message": json!({"Service": "AWS Auto Scaling", "Event": TEST_NOTIFICATION, "AutoScalingGroupName": "workers"}).to_string()}}]});
        assert_eq!(parse(&test, received()).unwrap(), vec![Delivery::TestNotification]);
    }

    #[test]
    fn missing_time_falls_back_and_bad_input_is_an_error() {
        let event = json!({"source": "aws.autoscaling", "detail": detail()});
        let Delivery::Action { time, .. } = &parse(&event, received()).unwrap()[0] else {
            panic!()
        };
        assert_eq!(*time, received());
        assert!(matches!(
            parse(
                &json!({"source": "aws.autoscaling", "detail": {"EC2InstanceId": "i-1"}}),
                received()
            ),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            parse(&json!({"x": 1}), received()),
            Err(EventError::Unrecognised(_))
        ));
    }
}
