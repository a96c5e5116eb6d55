//! What AWS limits and moto does not, enforced by the recording proxy on the calls of function processes (the
//! harness's own set-up calls are free):
//!
//! - Always, as hard limits of the services: SQS messages of at most 256 KiB and batches of at most 10 entries
//!   and 256 KiB, `DelaySeconds` at most 900; DynamoDB items of at most 400 KB; SSM standard parameters of at most
//!   4 KB.
//!   SES sends whose `Source` or destinations are not 7-bit ASCII (a display name not RFC 2047 encoded) are refused
//!   with `InvalidParameterValue`, as SES refuses them.
//! - When a test switches them on ([`Quotas::aws`], on in the main job): SES's `MaxSendRate` and `Max24HourSend`
//!   (which `GetSendQuota` then answers), Cognito's request rates per category, account-wide across every function
//!   of the proxy, and SSM's one update at a time per parameter; and, when a test puts the account in the SES
//!   sandbox, its refusal of every recipient that is not a verified identity.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

/// AWS's answer to a call over a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    /// The error code, with its JSON namespace where the service has one.
    pub code: String,
    /// What the query-compatible JSON protocol of SQS puts in `x-amzn-query-error`.
    pub query_code: Option<String>,
    pub message: String,
}

impl Refusal {
    fn new(code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            code: code.to_owned(),
            query_code: None,
            message: message.into(),
        }
    }

    fn sqs(code: &str, query_code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            code: format!("com.amazonaws.sqs#{code}"),
            query_code: Some(query_code.to_owned()),
            message: message.into(),
        }
    }
}

/// The rate quotas a test switches on.
#[derive(Debug, Clone, PartialEq)]
pub struct Quotas {
    /// SES sends per second (`MaxSendRate`).
    pub ses_max_send_rate: f64,
    /// SES sends per 24 hours (`Max24HourSend`); the local day is the proxy's life.
    pub ses_max_24_hour_send: f64,
    /// Cognito's requests per second per category, account-wide: (category, its operations, rate).
    pub cognito: Vec<(&'static str, &'static [&'static str], usize)>,
    /// How long after a write to a parameter SSM refuses the next one with `TooManyUpdates`.
    pub ssm_update_interval: Duration,
    /// The SES sandbox: only these recipients (verified identities) may be sent to. `None`: production access.
    pub ses_sandbox_recipients: Option<Vec<String>>,
}

/// Cognito's `UserUpdate` category: the admin writes our functions make.
pub const COGNITO_USER_UPDATES: &[&str] = &[
    "AdminUpdateUserAttributes",
    "AdminDeleteUserAttributes",
    "AdminDisableUser",
    "AdminEnableUser",
    "AdminDeleteUser",
    "AdminAddUserToGroup",
    "AdminRemoveUserFromGroup",
];

impl Quotas {
    /// AWS's defaults for an account out of the SES sandbox: 14 emails a second, 50,000 a day; Cognito's
    /// ListUsers 30/s, AdminGetUser 120/s, user updates 25/s.
    pub fn aws() -> Quotas {
        Quotas {
            ses_max_send_rate: 14.0,
            ses_max_24_hour_send: 50_000.0,
            cognito: vec![
                ("UserList", &["ListUsers"], 30),
                ("UserRead", &["AdminGetUser"], 120),
                ("UserUpdate", COGNITO_USER_UPDATES, 25),
            ],
            ssm_update_interval: Duration::from_millis(250),
            ses_sandbox_recipients: None,
        }
    }
}

pub const SQS_MAX_MESSAGE_BYTES: usize = 262_144;
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;
pub const SQS_MAX_DELAY_SECONDS: i64 = 900;
pub const DYNAMODB_MAX_ITEM_BYTES: usize = 400 * 1024;
/// The most put and delete requests one `BatchWriteItem` takes.
pub const DYNAMODB_MAX_BATCH_WRITES: usize = 25;
pub const SSM_MAX_STANDARD_VALUE_BYTES: usize = 4096;

/// What the proxy counts for the quotas.
#[derive(Default)]
pub struct QuotaState {
    quotas: Option<Quotas>,
    /// The admitted calls of the last second, per Cognito category and for SES sends.
    recent: HashMap<&'static str, VecDeque<Instant>>,
    sent: u64,
    last_parameter_write: HashMap<String, Instant>,
    /// Every refusal so far, for tests to assert on.
    pub refusals: Vec<(String, Refusal)>,
}

/// Admits a call if fewer than `rate` were admitted in the last second.
fn admit(recent: &mut VecDeque<Instant>, rate: usize, now: Instant) -> bool {
    while recent
        .front()
        .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
    {
        recent.pop_front();
    }
    if recent.len() >= rate {
        return false;
    }
    recent.push_back(now);
    true
}

/// An SQS message's size as SQS counts it: the body and each attribute's name, type and value.
fn sqs_message_bytes(entry: &Value) -> usize {
    let body = entry["MessageBody"].as_str().map_or(0, str::len);
    let attributes: usize = entry["MessageAttributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            name.len()
                + value["DataType"].as_str().map_or(0, str::len)
                + value["StringValue"].as_str().map_or(0, str::len)
                + value["BinaryValue"].as_str().map_or(0, |b| b.len() * 3 / 4)
        })
        .sum();
    body + attributes
}

/// A DynamoDB attribute value's size: strings and binaries by length, numbers about one byte per two digits.
fn dynamodb_value_bytes(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
        "N" => inner.as_str().map_or(0, |n| n.len().div_ceil(2) + 1),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" | "L" => {
            3 + inner
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    if v.is_object() {
                        dynamodb_value_bytes(v) + 1
                    } else {
                        v.as_str().map_or(0, str::len)
                    }
                })
                .sum::<usize>()
        }
        "M" => {
            3 + inner
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| k.len() + dynamodb_value_bytes(v) + 1)
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// A DynamoDB item's size: each attribute's name and value.
pub fn dynamodb_item_bytes(item: &Value) -> usize {
    item.as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| name.len() + dynamodb_value_bytes(value))
        .sum()
}

/// The services' hard limits on one call; `None` when it is within them.
pub fn limits(service: &str, operation: &str, body: &str) -> Option<Refusal> {
    if service == "ses" && operation.starts_with("Send") {
        return ses_addresses(body);
    }
    let request: Value = serde_json::from_str(body).ok()?;
    match (service, operation) {
        ("sqs", "SendMessage") => {
            let delay = request["DelaySeconds"].as_i64().unwrap_or(0);
            if !(0..=SQS_MAX_DELAY_SECONDS).contains(&delay) {
                return Some(Refusal::sqs(
                    "InvalidParameterValue",
                    "InvalidParameterValue",
                    format!("Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."),
                ));
            }
            (sqs_message_bytes(&request) > SQS_MAX_MESSAGE_BYTES).then(|| {
                Refusal::sqs(
                    "InvalidParameterValue",
                    "InvalidParameterValue",
                    format!("One or more parameters are invalid. Reason: Message must be shorter than {SQS_MAX_MESSAGE_BYTES} bytes."),
                )
            })
        }
        ("sqs", "SendMessageBatch") => {
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            if entries.len() > SQS_MAX_BATCH_ENTRIES {
                return Some(Refusal::sqs(
                    "TooManyEntriesInBatchRequest",
                    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                    format!(
                        "Maximum number of entries per request are {SQS_MAX_BATCH_ENTRIES}. You have sent {}.",
                        entries.len()
                    ),
                ));
            }
            if let Some(delay) = entries
                .iter()
                .filter_map(|e| e["DelaySeconds"].as_i64())
                .find(|d| !(0..=SQS_MAX_DELAY_SECONDS).contains(d))
            {
                return Some(Refusal::sqs(
                    "InvalidParameterValue",
                    "InvalidParameterValue",
                    format!("Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."),
                ));
            }
            let total: usize = entries.iter().map(sqs_message_bytes).sum();
            (total > SQS_MAX_MESSAGE_BYTES).then(|| {
                Refusal::sqs(
                    "BatchRequestTooLong",
                    "AWS.SimpleQueueService.BatchRequestTooLong",
                    format!("Batch requests cannot be longer than {SQS_MAX_MESSAGE_BYTES} bytes. You have sent {total} bytes."),
                )
            })
        }
        ("dynamodb", "PutItem") => (dynamodb_item_bytes(&request["Item"]) > DYNAMODB_MAX_ITEM_BYTES).then(|| {
            Refusal::new(
                "com.amazonaws.dynamodb.v20120810#ValidationException",
                "Item size has exceeded the maximum allowed size",
            )
        }),
        ("dynamodb", "BatchWriteItem") => {
            let writes: Vec<&Value> = request["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .flat_map(|(_, w)| w.as_array().into_iter().flatten())
                .collect();
            if writes.len() > DYNAMODB_MAX_BATCH_WRITES {
                return Some(Refusal::new(
                    "com.amazonaws.dynamodb.v20120810#ValidationException",
                    "Too many items requested for the BatchWriteItem call",
                ));
            }
            writes
                .iter()
                .any(|w| dynamodb_item_bytes(&w["PutRequest"]["Item"]) > DYNAMODB_MAX_ITEM_BYTES)
                .then(|| {
                    Refusal::new(
                        "com.amazonaws.dynamodb.v20120810#ValidationException",
                        "Item size has exceeded the maximum allowed size",
                    )
                })
        }
        ("dynamodb", "UpdateItem") => {
            // The item after the update is not known here; the key and the values the update writes are a floor.
            let written =
                dynamodb_item_bytes(&request["Key"]) + dynamodb_item_bytes(&request["ExpressionAttributeValues"]);
            (written > DYNAMODB_MAX_ITEM_BYTES).then(|| {
                Refusal::new(
                    "com.amazonaws.dynamodb.v20120810#ValidationException",
                    "Item size to update has exceeded the maximum allowed size",
                )
            })
        }
        ("ssm", "PutParameter") => {
            let value = request["Value"].as_str().map_or(0, str::len);
            let advanced = request["Tier"].as_str() == Some("Advanced");
            (!advanced && value > SSM_MAX_STANDARD_VALUE_BYTES).then(|| {
                Refusal::new(
                    "ValidationException",
                    format!("Standard tier parameters support a maximum parameter value of {SSM_MAX_STANDARD_VALUE_BYTES} characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier."),
                )
            })
        }
        _ => None,
    }
}

/// The addresses of an SES send (`Source`, `Destinations.member.N`, `Destination.ToAddresses.member.N`), decoded.
fn ses_send_addresses(body: &str) -> Vec<(String, String)> {
    crate::proxy::form_fields(body)
        .into_iter()
        .filter(|(name, _)| name == "Source" || name.starts_with("Destination"))
        .collect()
}

/// SES takes 7-bit ASCII addresses only: a friendly name must be MIME encoded-word (RFC 2047), a domain Punycode.
fn ses_addresses(body: &str) -> Option<Refusal> {
    ses_send_addresses(body)
        .into_iter()
        .any(|(_, address)| !address.is_ascii())
        .then(|| Refusal::new("InvalidParameterValue", "Local address contains control or whitespace"))
}

impl QuotaState {
    pub fn enforce(&mut self, quotas: Option<Quotas>) {
        self.quotas = quotas;
    }

    /// The sends of the last 24 hours are forgotten, as on the next day.
    pub fn start_new_day(&mut self) {
        self.sent = 0;
    }

    pub fn quotas(&self) -> Option<&Quotas> {
        self.quotas.as_ref()
    }

    /// SES's `GetSendQuota` answer under the quotas, when they are on.
    pub fn send_quota(&self) -> Option<String> {
        let quotas = self.quotas.as_ref()?;
        Some(format!(
            "<GetSendQuotaResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><GetSendQuotaResult><SentLast24Hours>{}</SentLast24Hours><Max24HourSend>{}</Max24HourSend><MaxSendRate>{}</MaxSendRate></GetSendQuotaResult><ResponseMetadata><RequestId>00000000-0000-4000-8000-00000000005e</RequestId></ResponseMetadata></GetSendQuotaResponse>",
            self.sent as f64, quotas.ses_max_24_hour_send, quotas.ses_max_send_rate
        ))
    }

    /// Admits or refuses one call of a function process; a refusal is also kept in `refusals`.
    pub fn admit(&mut self, function: &str, service: &str, operation: &str, body: &str) -> Option<Refusal> {
        let refusal = limits(service, operation, body).or_else(|| self.rate(service, operation, body));
        if let Some(refusal) = &refusal {
            self.refusals.push((function.to_owned(), refusal.clone()));
        }
        refusal
    }

    fn rate(&mut self, service: &str, operation: &str, body: &str) -> Option<Refusal> {
        let quotas = self.quotas.clone()?;
        let now = Instant::now();
        match service {
            "ses" if operation.starts_with("Send") => {
                if let Some(verified) = &quotas.ses_sandbox_recipients {
                    let unverified: Vec<String> = ses_send_addresses(body)
                        .into_iter()
                        .filter(|(name, address)| {
                            name != "Source" && !verified.iter().any(|v| v.eq_ignore_ascii_case(address))
                        })
                        .map(|(_, address)| address)
                        .collect();
                    if !unverified.is_empty() {
                        return Some(Refusal::new(
                            "MessageRejected",
                            format!("Email address is not verified. The following identities failed the check in region EU-WEST-1: {}", unverified.join(", ")),
                        ));
                    }
                }
                if self.sent as f64 >= quotas.ses_max_24_hour_send {
                    return Some(Refusal::new("Throttling", "Daily message quota exceeded."));
                }
                if !admit(
                    self.recent.entry("SesSend").or_default(),
                    quotas.ses_max_send_rate.floor().max(1.0) as usize,
                    now,
                ) {
                    return Some(Refusal::new("Throttling", "Maximum sending rate exceeded."));
                }
                self.sent += 1;
                None
            }
            "cognito-idp" => {
                let (category, _, rate) = quotas
                    .cognito
                    .iter()
                    .find(|(_, operations, _)| operations.contains(&operation))?;
                (!admit(self.recent.entry(category).or_default(), *rate, now)).then(|| {
                    Refusal::new(
                        "TooManyRequestsException",
                        format!("Rate exceeded for the {category} category"),
                    )
                })
            }
            "ssm" if operation == "PutParameter" => {
                let name = serde_json::from_str::<Value>(body).ok()?["Name"].as_str()?.to_owned();
                let recent = self
                    .last_parameter_write
                    .get(&name)
                    .is_some_and(|at| now.duration_since(*at) < quotas.ssm_update_interval);
                if recent {
                    return Some(Refusal::new(
                        "TooManyUpdates",
                        "There are concurrent updates for a resource that supports one update at a time.",
                    ));
                }
                self.last_parameter_write.insert(name, now);
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_limits_count_the_body_and_the_attributes() {
        let body = "x".repeat(SQS_MAX_MESSAGE_BYTES - 20);
        let fits = serde_json::json!({"MessageBody": body, "MessageAttributes": {"E": {"DataType": "String", "StringValue": "short"}}});
        assert_eq!(limits("sqs", "SendMessage", &fits.to_string()), None);
        let over = serde_json::json!({"MessageBody": body, "MessageAttributes": {"ErrorMessage": {"DataType": "String", "StringValue": "a reason"}}});
        assert!(limits("sqs", "SendMessage", &over.to_string())
            .unwrap()
            .message
            .contains("shorter than 262144"));
        let eleven: Vec<Value> = (0..11)
            .map(|i| serde_json::json!({"Id": i.to_string(), "MessageBody": "b"}))
            .collect();
        let refused = limits(
            "sqs",
            "SendMessageBatch",
            &serde_json::json!({"Entries": eleven}).to_string(),
        )
        .unwrap();
        assert_eq!(
            refused.query_code.as_deref(),
            Some("AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
        );
        let late = serde_json::json!({"MessageBody": "b", "DelaySeconds": 901});
        assert!(limits("sqs", "SendMessage", &late.to_string())
            .unwrap()
            .message
            .contains("DelaySeconds"));
    }

    #[test]
    fn ses_refuses_addresses_that_are_not_7_bit_and_the_sandbox_unverified_recipients() {
        let send = |source: &str, to: &str| {
            format!("Action=SendRawEmail&Source={source}&Destinations.member.1={to}&RawMessage.Data=eA%3D%3D")
        };
        assert_eq!(
            limits(
                "ses",
                "SendRawEmail",
                &send("no-reply%40navlab.online", "ada%40example.com")
            ),
            None
        );
        let named = send("N%C3%A4vlab+%3Cno-reply%40navlab.online%3E", "ada%40example.com");
        assert_eq!(
            limits("ses", "SendRawEmail", &named).unwrap().code,
            "InvalidParameterValue"
        );
        let mut state = QuotaState::default();
        state.enforce(Some(Quotas {
            ses_sandbox_recipients: Some(vec!["ada@example.com".into()]),
            ..Quotas::aws()
        }));
        assert!(state
            .admit(
                "f",
                "ses",
                "SendRawEmail",
                &send("no-reply%40navlab.online", "ADA%40example.com")
            )
            .is_none());
        let refused = state
            .admit(
                "f",
                "ses",
                "SendRawEmail",
                &send("no-reply%40navlab.online", "grace%40example.com"),
            )
            .unwrap();
        assert_eq!(refused.code, "MessageRejected");
        assert!(refused.message.contains("not verified") && refused.message.contains("grace@example.com"));
    }

    #[test]
    fn rates_refuse_beyond_the_quota_within_a_second_and_only_when_on() {
        let mut state = QuotaState::default();
        let list = r#"{"UserPoolId":"p"}"#;
        assert!(
            (0..100).all(|_| state.admit("f", "cognito-idp", "ListUsers", list).is_none()),
            "off unless switched on"
        );
        state.enforce(Some(Quotas::aws()));
        let admitted = (0..40)
            .filter(|_| state.admit("f", "cognito-idp", "ListUsers", list).is_none())
            .count();
        assert_eq!(admitted, 30);
        assert_eq!(state.refusals.last().unwrap().1.code, "TooManyRequestsException");
        assert!(
            state.admit("f", "cognito-idp", "AdminGetUser", list).is_none(),
            "another category"
        );

        let sends = (0..20)
            .filter(|_| state.admit("f", "ses", "SendRawEmail", "").is_none())
            .count();
        assert_eq!(sends, 14);
        assert_eq!(
            state.refusals.last().unwrap().1.message,
            "Maximum sending rate exceeded."
        );
        assert!(state
            .send_quota()
            .unwrap()
            .contains("<SentLast24Hours>14</SentLast24Hours>"));

        let put = r#"{"Name":"/restriction","Value":"{}"}"#;
        assert!(state.admit("f", "ssm", "PutParameter", put).is_none());
        assert_eq!(
            state.admit("g", "ssm", "PutParameter", put).unwrap().code,
            "TooManyUpdates"
        );
    }

    #[test]
    fn the_daily_quota_says_so() {
        let mut state = QuotaState::default();
        state.enforce(Some(Quotas {
            ses_max_24_hour_send: 2.0,
            ..Quotas::aws()
        }));
        assert!(
            state.admit("f", "ses", "SendRawEmail", "").is_none()
                && state.admit("f", "ses", "SendRawEmail", "").is_none()
        );
        assert_eq!(
            state.admit("f", "ses", "SendRawEmail", "").unwrap().message,
            "Daily message quota exceeded."
        );
        state.start_new_day();
        assert!(
            state.admit("f", "ses", "SendRawEmail", "").is_none(),
            "a new day, a new quota"
        );
    }

    #[test]
    fn item_sizes_count_names_and_values() {
        let item = serde_json::json!({"id": {"S": "abc"}, "n": {"N": "12345"}, "m": {"M": {"k": {"S": "v"}}}});
        assert_eq!(dynamodb_item_bytes(&item), 2 + 3 + 1 + 4 + 1 + (3 + 1 + 1 + 1));
        let big = serde_json::json!({"Item": {"blob": {"S": "x".repeat(DYNAMODB_MAX_ITEM_BYTES)}}});
        assert!(limits("dynamodb", "PutItem", &big.to_string()).is_some());
        let put = |n: usize| serde_json::json!({"PutRequest": {"Item": {"id": {"S": format!("k{n}")}}}});
        let batch =
            |n: usize| serde_json::json!({"RequestItems": {"t": (0..n).map(put).collect::<Vec<_>>()}}).to_string();
        assert!(limits("dynamodb", "BatchWriteItem", &batch(DYNAMODB_MAX_BATCH_WRITES)).is_none());
        assert!(
            limits("dynamodb", "BatchWriteItem", &batch(DYNAMODB_MAX_BATCH_WRITES + 1))
                .unwrap()
                .message
                .contains("Too many items")
        );
        let parameter = serde_json::json!({"Name": "p", "Value": "x".repeat(4097)});
        assert!(limits("ssm", "PutParameter", &parameter.to_string())
            .unwrap()
            .message
            .contains("4096"));
    }
}
