//! The inputs, in one shape. SNS notifications of a CloudWatch alarm (and of the Auto Scaling group), the payload of
//! an alarm that invokes Lambda directly, and EventBridge launch results of the group all become [`Trigger`]s.
//! Only the fields used are read, so real notifications parse whatever else they carry (`"AlarmDescription": null`,
//! a display-name `Region`, metric-math `Trigger.Metrics`).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmState {
    Alarm,
    Ok,
    InsufficientData,
    Other(String),
}

impl AlarmState {
    fn parse(value: &str) -> Self {
        match value {
            "ALARM" => AlarmState::Alarm,
            "OK" => AlarmState::Ok,
            "INSUFFICIENT_DATA" => AlarmState::InsufficientData,
            other => AlarmState::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Alarm {
        name: String,
        state: AlarmState,
        reason: String,
        /// The alarm's `StateChangeTime`: orders its transitions whatever order the notifications arrive in.
        changed_at: Option<DateTime<Utc>>,
    },
    /// An instance launch of an Auto Scaling group finished, successfully or not.
    Launch {
        group: String,
        instance: Option<String>,
        successful: bool,
        /// When the launch finished (the event's `time`, the notification's `EndTime`).
        at: Option<DateTime<Utc>>,
    },
    /// Acknowledged and changes nothing (a test notification, another kind of group event).
    Ignored(String),
}

impl Trigger {
    pub fn describe(&self) -> String {
        match self {
            Trigger::Alarm { name, state, .. } => format!("alarm {name} {state:?}"),
            Trigger::Launch { group, successful, .. } => {
                format!(
                    "launch {} in {group}",
                    if *successful { "successful" } else { "unsuccessful" }
                )
            }
            Trigger::Ignored(what) => format!("ignored: {what}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    #[error("unrecognised event: {0}")]
    Unrecognised(String),
    #[error("SNS message is not JSON: {0}")]
    SnsMessage(String),
    #[error("{0}")]
    Malformed(String),
}

/// The SNS notification body of a CloudWatch alarm.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmNotification {
    alarm_name: String,
    new_state_value: String,
    #[serde(default)]
    new_state_reason: Option<String>,
    #[serde(default)]
    state_change_time: Option<String>,
}

/// The SNS notification body of an Auto Scaling group.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupNotification {
    event: String,
    #[serde(default)]
    auto_scaling_group_name: Option<String>,
    #[serde(rename = "EC2InstanceId", default)]
    ec2_instance_id: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// The payload of a CloudWatch alarm's Lambda action.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectAlarm {
    alarm_data: DirectAlarmData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectAlarmData {
    alarm_name: String,
    state: DirectAlarmState,
}

#[derive(Deserialize)]
struct DirectAlarmState {
    value: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// CloudWatch writes `2026-11-21T10:01:30.123+0000` (no colon in the offset); EventBridge and Auto Scaling write
/// RFC 3339. Unreadable: `None`, and the trigger is not ordered.
pub fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    let text = text?.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn malformed(what: &str, error: serde_json::Error) -> TriggerError {
    TriggerError::Malformed(format!("{what}: {error}"))
}

fn from_sns_message(message: &str) -> Result<Trigger, TriggerError> {
    let value: Value = serde_json::from_str(message).map_err(|e| TriggerError::SnsMessage(e.to_string()))?;
    if value.get("AlarmName").is_some() {
        let alarm: AlarmNotification = serde_json::from_value(value).map_err(|e| malformed("alarm notification", e))?;
        return Ok(Trigger::Alarm {
            name: alarm.alarm_name,
            state: AlarmState::parse(&alarm.new_state_value),
            reason: alarm.new_state_reason.unwrap_or_default(),
            changed_at: parse_time(alarm.state_change_time.as_deref()),
        });
    }
    if value.get("Event").is_some() {
        let event: GroupNotification =
            serde_json::from_value(value).map_err(|e| malformed("Auto Scaling notification", e))?;
        let group = event.auto_scaling_group_name.unwrap_or_default();
        let at = parse_time(event.end_time.as_deref().or(event.time.as_deref()));
        return Ok(match event.event.as_str() {
            "autoscaling:EC2_INSTANCE_LAUNCH" => Trigger::Launch {
                group,
                instance: event.ec2_instance_id,
                successful: true,
                at,
            },
            "autoscaling:EC2_INSTANCE_LAUNCH_ERROR" => Trigger::Launch {
                group,
                instance: event.ec2_instance_id,
                successful: false,
                at,
            },
            other => Trigger::Ignored(other.to_owned()),
        });
    }
    Err(TriggerError::Unrecognised(
        "SNS message is neither an alarm nor an Auto Scaling notification".into(),
    ))
}

/// Every trigger an invocation carries (SNS may deliver several records; the other sources one).
pub fn parse(payload: &Value) -> Result<Vec<Trigger>, TriggerError> {
    if let Some(messages) = shared::envelope::record_messages(payload) {
        return messages
            .map_err(|e| TriggerError::Unrecognised(e.to_string()))?
            .into_iter()
            .map(from_sns_message)
            .collect();
    }
    match payload.get("source").and_then(Value::as_str) {
        Some("aws.cloudwatch") => {
            let alarm: DirectAlarm =
                serde_json::from_value(payload.clone()).map_err(|e| malformed("CloudWatch alarm payload", e))?;
            Ok(vec![Trigger::Alarm {
                name: alarm.alarm_data.alarm_name,
                state: AlarmState::parse(&alarm.alarm_data.state.value),
                reason: alarm.alarm_data.state.reason.unwrap_or_default(),
                changed_at: parse_time(alarm.alarm_data.state.timestamp.as_deref()),
            }])
        }
        Some("aws.autoscaling") => {
            let detail_type = payload.get("detail-type").and_then(Value::as_str).unwrap_or_default();
            let detail = payload.get("detail").cloned().unwrap_or(Value::Null);
            let group = detail
                .get("AutoScalingGroupName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let instance = detail.get("EC2InstanceId").and_then(Value::as_str).map(str::to_owned);
            let at = parse_time(
                detail
                    .get("EndTime")
                    .and_then(Value::as_str)
                    .or(payload.get("time").and_then(Value::as_str)),
            );
            Ok(vec![match detail_type {
                "EC2 Instance Launch Successful" => Trigger::Launch {
                    group,
                    instance,
                    successful: true,
                    at,
                },
                "EC2 Instance Launch Unsuccessful" => Trigger::Launch {
                    group,
                    instance,
                    successful: false,
                    at,
                },
                other => Trigger::Ignored(format!("aws.autoscaling {other}")),
            }])
        }
        _ => Err(TriggerError::Unrecognised(
            "expected SNS records, an aws.cloudwatch alarm or an aws.autoscaling event".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sns(message: Value) -> Value {
        json!({"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": {"Type": "Notification", "Message": message.to_string()}}]})
    }

    #[test]
    fn real_alarm_notification_with_null_description_and_display_region() {
        let message = json!({
            "AlarmName": "cpu_high", "AlarmDescription": null, "AWSAccountId": "123456789012",
            "AlarmConfigurationUpdatedTimestamp": "2026-11-01T09:00:00.000+0000",
            "NewStateValue": "ALARM", "NewStateReason": "Threshold Crossed: 3 out of the last 3 datapoints [71.2 (21/11/26 10:00:00)] were greater than the threshold (60.0).",
            "StateChangeTime": "2026-11-21T10:01:30.123+0000", "Region": "EU (Ireland)",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:cpu_high", "OldStateValue": "OK", "OKActions": [],
            "AlarmActions": ["arn:aws:sns:eu-west-1:123456789012:alarm-update-instance"], "InsufficientDataActions": [],
            "Trigger": {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "StatisticType": "Statistic", "Statistic": "AVERAGE",
                        "Unit": null, "Dimensions": [{"value": "workers", "name": "AutoScalingGroupName"}], "Period": 30,
                        "EvaluationPeriods": 3, "ComparisonOperator": "GreaterThanThreshold", "Threshold": 60.0,
                        "TreatMissingData": "missing", "EvaluateLowSampleCountPercentile": ""}
        });
        let triggers = parse(&sns(message)).unwrap();
        assert!(
            matches!(&triggers[..], [Trigger::Alarm { name, state: AlarmState::Alarm, reason, changed_at: Some(_) }] if name == "cpu_high" && reason.starts_with("Threshold Crossed"))
        );
        let Trigger::Alarm { changed_at, .. } = &triggers[0] else {
            unreachable!()
        };
        assert_eq!(changed_at.unwrap().to_rfc3339(), "2026-11-21T10:01:30.123+00:00");
    }

    #[test]
    fn metric_math_alarm_notification() {
        let message = json!({
            "AlarmName": "fleet_cpu", "AlarmDescription": null, "NewStateValue": "OK", "NewStateReason": "Threshold Crossed", "OldStateValue": "ALARM",
            "Region": "US East (N. Virginia)", "StateChangeTime": "2026-11-21T10:01:30.123+0000",
            "Trigger": {"Period": 30, "EvaluationPeriods": 3, "ComparisonOperator": "GreaterThanThreshold", "Threshold": 60.0, "TreatMissingData": "missing",
                        "Metrics": [{"Expression": "AVG(METRICS())", "Id": "e1", "Label": "fleet", "ReturnData": true},
                                    {"Id": "m1", "MetricStat": {"Metric": {"Dimensions": [{"value": "workers", "name": "AutoScalingGroupName"}], "MetricName": "CPUUtilization", "Namespace": "AWS/EC2"}, "Period": 30, "Stat": "Average"}, "ReturnData": false}]}
        });
        let changed_at = parse_time(Some("2026-11-21T10:01:30.123+0000"));
        assert_eq!(
            parse(&sns(message)).unwrap(),
            vec![Trigger::Alarm {
                name: "fleet_cpu".into(),
                state: AlarmState::Ok,
                reason: "Threshold Crossed".into(),
                changed_at
            }]
        );
    }

    #[test]
    fn direct_alarm_action_payload() {
        let payload = json!({
            "source": "aws.cloudwatch", "alarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:cpu_high", "accountId": "123456789012",
            "time": "2026-11-21T10:01:30.123+0000", "region": "eu-west-1",
            "alarmData": {"alarmName": "cpu_high", "state": {"value": "INSUFFICIENT_DATA", "reason": "no data", "timestamp": "2026-11-21T10:01:30.123+0000"},
                          "previousState": {"value": "OK"}, "configuration": {"metrics": []}}
        });
        let changed_at = parse_time(Some("2026-11-21T10:01:30.123+0000"));
        assert_eq!(
            parse(&payload).unwrap(),
            vec![Trigger::Alarm {
                name: "cpu_high".into(),
                state: AlarmState::InsufficientData,
                reason: "no data".into(),
                changed_at
            }]
        );
    }

    #[test]
    fn eventbridge_launch_results_and_group_notifications() {
        let ok = json!({"version": "0", "source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Successful", "time": "2026-11-21T10:03:00Z",
                        "detail": {"AutoScalingGroupName": "workers", "EC2InstanceId": "i-0abc", "StatusCode": "InProgress"}});
        let at = parse_time(Some("2026-11-21T10:03:00Z"));
        assert_eq!(
            parse(&ok).unwrap(),
            vec![Trigger::Launch {
                group: "workers".into(),
                instance: Some("i-0abc".into()),
                successful: true,
                at
            }]
        );
        let failed = json!({"source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Unsuccessful", "detail": {"AutoScalingGroupName": "workers"}});
        assert!(matches!(
            &parse(&failed).unwrap()[..],
            [Trigger::Launch { successful: false, .. }]
        ));
        let via_sns = sns(
            json!({"Service": "AWS Auto Scaling", "Event": "autoscaling:EC2_INSTANCE_LAUNCH", "AutoScalingGroupName": "workers", "EC2InstanceId": "i-1"}),
        );
        assert!(matches!(
            &parse(&via_sns).unwrap()[..],
            [Trigger::Launch { successful: true, .. }]
        ));
        let test = sns(
            json!({"Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION", "AutoScalingGroupName": "workers"}),
        );
        assert_eq!(
            parse(&test).unwrap(),
            vec![Trigger::Ignored("autoscaling:TEST_NOTIFICATION".into())]
        );
    }

    #[test]
    fn every_sample_event_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/alarm-instance-updater");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let payload: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let triggers = parse(&payload).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(triggers.len(), 1, "{}", path.display());
            count += 1;
        }
        assert!(count >= 6);
    }

    #[test]
    fn unrecognised_input_is_a_clear_error() {
        assert!(matches!(
            parse(&json!({"hello": "world"})),
            Err(TriggerError::Unrecognised(_))
        ));
        assert!(matches!(
            parse(&sns(json!("plain text"))),
            Err(TriggerError::Unrecognised(_))
        ));
        let not_json = json!({"Records": [{"Sns": {"Message": "not json"}}]});
        assert!(matches!(parse(&not_json), Err(TriggerError::SnsMessage(_))));
        assert!(matches!(
            parse(&sns(json!({"AlarmName": "x"}))),
            Err(TriggerError::Malformed(_))
        ));
    }
}
