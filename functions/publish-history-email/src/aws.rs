//! The SDK adapters of the ports: the user pool on Cognito, sending on SES, the once-only records on DynamoDB.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_cognitoidentityprovider::types::UserStatusType;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_ses::error::ProvideErrorMetadata;
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::{MessageTag, RawMessage};

use shared::dynamodb::{consistent_attribute, epoch_millis, epoch_seconds, error_text, number};

use crate::idempotency::{STATUS_COMPLETED, STATUS_IN_PROGRESS};
use crate::ports::{Claim, FanoutQueue, IdempotencyStore, Mailer, OutgoingEmail, PoolUser, SendError, SenderRegistry, Unwritten, UserPage, UserSource};
use crate::recipients::is_true_flag;

/// The Cognito adapter.
pub struct CognitoUserSource {
    client: aws_sdk_cognitoidentityprovider::Client,
    user_pool_id: String,
}

impl CognitoUserSource {
    pub fn new(client: aws_sdk_cognitoidentityprovider::Client, user_pool_id: impl Into<String>) -> Self {
        Self { client, user_pool_id: user_pool_id.into() }
    }
}

/// ListUsers' page size limit.
const PAGE_SIZE: i32 = 60;
/// The attributes the function reads; `UserStatus` and `Enabled` come with every user.
const ATTRIBUTES: [&str; 6] = ["sub", "email", "email_verified", "given_name", "custom:_tenant", "custom:subPublishHistory"];

#[async_trait]
impl UserSource for CognitoUserSource {
    async fn list_page(&self, from: Option<&str>) -> Result<UserPage, String> {
        let mut request = self.client.list_users().user_pool_id(&self.user_pool_id).limit(PAGE_SIZE).set_pagination_token(from.map(str::to_owned));
        for attribute in ATTRIBUTES {
            request = request.attributes_to_get(attribute);
        }
        let page =
            request.send().await.map_err(|e| format!("listing the user pool failed: {}", aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e)))?;
        let users = page
            .users()
            .iter()
            .map(|user| {
                let attribute = |name: &str| user.attributes().iter().find(|a| a.name() == name).and_then(|a| a.value()).map(str::to_owned);
                PoolUser {
                    sub: attribute("sub"),
                    email: attribute("email"),
                    given_name: attribute("given_name"),
                    tenant: attribute("custom:_tenant"),
                    subscribed: attribute("custom:subPublishHistory").is_some_and(|v| is_true_flag(&v)),
                    enabled: user.enabled(),
                    // A federated (social or SAML) sign-in is as confirmed as a password one.
                    confirmed: matches!(user.user_status(), Some(UserStatusType::Confirmed | UserStatusType::ExternalProvider)),
                    email_verified: attribute("email_verified").is_some_and(|v| v.eq_ignore_ascii_case("true")),
                }
            })
            .collect();
        Ok(UserPage { users, next: page.pagination_token().filter(|t| !t.is_empty()).map(str::to_owned) })
    }
}

/// The SES (v1 `SendRawEmail`) adapter.
pub struct SesMailer {
    client: aws_sdk_ses::Client,
    sender: String,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_ses::Client, sender: impl Into<String>, configuration_set: Option<String>) -> Self {
        Self { client, sender: sender.into(), configuration_set }
    }

    fn sender_address(&self) -> &str {
        crate::config::sender_address(&self.sender).unwrap_or(&self.sender)
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn max_send_rate(&self) -> Result<f64, String> {
        let quota = self.client.get_send_quota().send().await.map_err(|e| aws_sdk_ses::error::DisplayErrorContext(e).to_string())?;
        Ok(quota.max_send_rate())
    }

    async fn send(&self, email: &OutgoingEmail, timeout: Duration) -> Result<String, SendError> {
        // Raw MIME, so the message can carry List-Unsubscribe; the one destination is given explicitly, so nothing in
        // the message's headers can add a recipient.
        // SES takes 7-bit ASCII addresses only (no SMTPUTF8): one it cannot take is the recipient's, for good.
        if !deliverable_address(&email.to) {
            return Err(SendError::Rejected("the address is not a 7-bit ASCII mailbox SES can send to".into()));
        }
        let raw = crate::mime::build(&self.sender, email).map_err(SendError::Retryable)?;
        let result =
            self.client
                .send_raw_email()
                // The bare address: the From header of the raw message carries the display name, RFC 2047 encoded; SES
                // refuses a Source whose name is not.
                .source(self.sender_address())
                .destinations(&email.to)
                .raw_message(RawMessage::builder().data(Blob::new(raw)).build().map_err(|e| SendError::Retryable(e.to_string()))?)
                .set_configuration_set_name(self.configuration_set.clone())
                .set_tags(Some(
                    email
                        .tags
                        .iter()
                        .map(|(name, value)| MessageTag::builder().name(*name).value(tag_value(value)).build())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| SendError::Retryable(e.to_string()))?,
                ))
                .customize()
                // This call's own timeout, within the invocation's time left (the client makes one attempt per call).
                .config_override(aws_sdk_ses::config::Builder::new().timeout_config(
                    aws_sdk_ses::config::timeout::TimeoutConfig::builder().operation_timeout(timeout).operation_attempt_timeout(timeout).build(),
                ))
                .send()
                .await;
        match result {
            Ok(output) => Ok(output.message_id().to_owned()),
            Err(error) => {
                let message = error.message().unwrap_or_default().to_owned();
                Err(match error.code() {
                    Some(code) => classify_refusal(code, &message, &email.to, self.sender_address())
                        .unwrap_or_else(|| SendError::Retryable(aws_sdk_ses::error::DisplayErrorContext(error).to_string())),
                    None => SendError::Retryable(aws_sdk_ses::error::DisplayErrorContext(error).to_string()),
                })
            }
        }
    }
}

/// An SES message tag value: ASCII letters, digits, `_` and `-`, at most 256 characters; anything else becomes `_`.
fn tag_value(text: &str) -> String {
    let value: String = text.chars().take(256).map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if value.is_empty() {
        "_".to_owned()
    } else {
        value
    }
}

/// A mailbox SES can send to: 7-bit ASCII, one `@` between a local part and a dotted domain, no space or control.
fn deliverable_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else { return false };
    address.is_ascii() && !address.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) && !local.is_empty() && domain.contains('.')
}

/// What an SES error code means for one recipient's email; `None`: may succeed on a retry.
///
/// Only a rejection of the recipient (an address on the suppression list, or refused by name) is final and recorded
/// for 14 days. Everything our own set-up causes (AccessDenied, the sender or, in the sandbox, the recipient not a
/// verified identity, a paused account or configuration set, a request SES cannot parse such as an unencoded
/// display name, the daily quota) refuses every recipient alike: the row waits for redelivery and an operator.
fn classify_refusal(code: &str, message: &str, recipient: &str, sender: &str) -> Option<SendError> {
    let refused = |why: &str| Some(SendError::Refused(format!("{why}: {code}: {message}")));
    match code {
        _ if code.starts_with("AccessDenied") => refused("the role may not send"),
        "Throttling" if message.contains("Daily message quota exceeded") => Some(SendError::QuotaSpent(format!("{code}: {message}"))),
        "MessageRejected" if message.contains("not verified") && message.contains(sender) => refused("the sender identity is not verified"),
        "MessageRejected" if message.contains("not verified") => refused("the account is in the SES sandbox and the recipient is not a verified identity"),
        "MessageRejected" if message.contains("blacklisted") || message.contains("suppression list") || message.contains(recipient) => {
            Some(SendError::Rejected(message.to_owned()))
        }
        "MessageRejected" => refused("SES refused the message itself"),
        "InvalidParameterValue" => refused("SES cannot take the request as built (sender, headers or encoding)"),
        "MailFromDomainNotVerified" | "ConfigurationSetDoesNotExist" | "ConfigurationSetSendingPausedException" | "AccountSendingPausedException" => {
            refused("the sending configuration is not usable")
        }
        _ => None,
    }
}

/// Writes of the records a completion's `BatchWriteItem` left unprocessed, and the wait before the first of them
/// (doubling, jittered, as AWS advises for unprocessed items).
const UNPROCESSED_ATTEMPTS: u32 = 4;
const UNPROCESSED_BACKOFF: Duration = Duration::from_millis(50);

fn keys_of(requests: &[WriteRequest]) -> Vec<String> {
    requests.iter().filter_map(|r| r.put_request()?.item().get("id")?.as_s().ok().cloned()).collect()
}

pub struct DynamoIdempotency {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// How long a completed record prevents a second send (`IDEMPOTENCY_TTL_SECONDS`).
    ttl: Duration,
}

impl DynamoIdempotency {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, ttl: Duration) -> Self {
        Self { client, table: table.into(), ttl }
    }

    async fn status(&self, key: &str) -> Result<Option<String>, String> {
        let status = consistent_attribute(&self.client, &self.table, key, "status").await?;
        Ok(status.as_ref().and_then(|s| s.as_s().ok()).cloned())
    }
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotency {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, String> {
        let now = SystemTime::now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(key.to_owned()))
            .item("status", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .item("expiration", number(epoch_seconds(now + self.ttl)))
            .item("in_progress_expiration", number(epoch_millis(in_progress_until)))
            // New, or expired but not yet swept by TTL, or an in-progress claim whose invocation has ended.
            .condition_expression("attribute_not_exists(id) OR expiration < :now OR (#status = :in_progress AND in_progress_expiration < :now_ms)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", number(epoch_seconds(now)))
            .expression_attribute_values(":now_ms", number(epoch_millis(now)))
            .expression_attribute_values(":in_progress", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Acquired),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => match self.status(key).await?.as_deref() {
                Some(STATUS_COMPLETED) => Ok(Claim::AlreadyCompleted),
                _ => Ok(Claim::InProgress),
            },
            Err(error) => Err(error_text(error)),
        }
    }

    /// One `BatchWriteItem` of whole COMPLETED records (what the UpdateItem of one record left: no
    /// `in_progress_expiration`); the items DynamoDB leaves unprocessed (throttling) are written again after a backoff.
    async fn complete(&self, completed: &[(String, String)]) -> Result<(), Unwritten> {
        let expiration = number(epoch_seconds(SystemTime::now() + self.ttl));
        let mut requests: Vec<WriteRequest> = Vec::with_capacity(completed.len());
        for (key, outcome) in completed {
            let item = PutRequest::builder()
                .item("id", AttributeValue::S(key.clone()))
                .item("status", AttributeValue::S(STATUS_COMPLETED.into()))
                .item("expiration", expiration.clone())
                .item("outcome", AttributeValue::S(outcome.clone()))
                .build()
                .map_err(|e| Unwritten { keys: vec![key.clone()], error: e.to_string() })?;
            requests.push(WriteRequest::builder().put_request(item).build());
        }
        let mut attempt = 1;
        loop {
            let output = match self.client.batch_write_item().request_items(&self.table, requests.clone()).send().await {
                Ok(output) => output,
                Err(error) => return Err(Unwritten { keys: keys_of(&requests), error: error_text(error) }),
            };
            requests = output.unprocessed_items.and_then(|mut left| left.remove(&self.table)).unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            if attempt == UNPROCESSED_ATTEMPTS {
                return Err(Unwritten { keys: keys_of(&requests), error: format!("DynamoDB left {} records unprocessed {attempt} times", requests.len()) });
            }
            tokio::time::sleep(shared::backoff::jittered(UNPROCESSED_BACKOFF, attempt, UNPROCESSED_BACKOFF * 4)).await;
            attempt += 1;
        }
    }

    async fn release(&self, key: &str) -> Result<(), String> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .condition_expression("#status = :in_progress")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(error) => Err(error_text(error)),
        }
    }
}

/// The fan-out queue (`FANOUT_QUEUE_URL`) on SQS.
pub struct SqsFanoutQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsFanoutQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }
}

#[async_trait]
impl FanoutQueue for SqsFanoutQueue {
    async fn hand_on(&self, body: String, delay: Duration) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay.as_secs().min(900) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }
}

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
        Self { client, table: table.into() }
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
        let mut request = self.client.update_item().table_name(&self.table).key("id", AttributeValue::S(SENDERS_KEY.into()));
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
            .expression_attribute_values(":expiration", number(epoch_seconds(SystemTime::now() + Duration::from_secs(24 * 3600))))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
    }
}

#[async_trait]
impl SenderRegistry for DynamoSenderRegistry {
    async fn renew(&self, instance: &str, until: SystemTime, lapsed: &[String]) -> Result<Vec<(String, SystemTime)>, String> {
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
                    .map_err(error_text)?;
                self.set_entry(instance, until, &[]).await.map_err(error_text)?
            }
            Err(error) => return Err(error_text(error)),
        };
        let senders = output.attributes().and_then(|a| a.get("senders")).and_then(|m| m.as_m().ok());
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

#[cfg(test)]
mod ses_tests {
    use super::*;
    use aws_sdk_ses::error::ErrorMetadata;
    use aws_sdk_ses::operation::send_raw_email::{SendRawEmailError, SendRawEmailOutput};
    use aws_sdk_ses::types::error::MessageRejected;
    use aws_smithy_mocks::{mock, mock_client};

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: "ada@example.com".into(),
            subject: "S".into(),
            text: "T".into(),
            html: "<p>H</p>".into(),
            list_unsubscribe: None,
            tags: vec![("tenant", "acme".into()), ("row", "ph-1".into())],
        }
    }

    fn rejected(message: &'static str) -> SendRawEmailError {
        SendRawEmailError::MessageRejected(
            MessageRejected::builder().message(message).meta(ErrorMetadata::builder().code("MessageRejected").message(message).build()).build(),
        )
    }

    #[tokio::test]
    async fn ses_request_carries_sender_the_one_destination_the_raw_message_and_configuration_set() {
        let rule = mock!(aws_sdk_ses::Client::send_raw_email)
            .match_requests(|r| {
                let raw = r.raw_message().unwrap().data().as_ref();
                let message = mail_parser::MessageParser::default().parse(raw).unwrap();
                r.source() == Some("no-reply@navlab.online")
                    && message.from().and_then(|f| f.first()).and_then(|a| a.name()) == Some("Navlab")
                    && r.destinations() == ["ada@example.com"]
                    && message.subject() == Some("S")
                    && message.body_html(0).as_deref() == Some("<p>H</p>")
                    && message.body_text(0).as_deref() == Some("T")
                    && r.configuration_set_name() == Some("notifications")
                    && r.tags().iter().map(|t| (t.name(), t.value())).collect::<Vec<_>>() == [("tenant", "acme"), ("row", "ph-1")]
            })
            .then_output(|| SendRawEmailOutput::builder().message_id("ses-1").build().unwrap());
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&rule]), "Navlab <no-reply@navlab.online>", Some("notifications".into()));
        assert_eq!(mailer.send(&email(), Duration::from_secs(5)).await.unwrap(), "ses-1");
    }

    #[tokio::test]
    async fn recipient_rejection_is_permanent_but_an_unverified_sender_is_not() {
        let recipient = mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| rejected("Email address is blacklisted."));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&recipient]), "no-reply@navlab.online", None);
        assert!(matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::Rejected(_))));

        let sender = mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| rejected("Email address not verified no-reply@navlab.online"));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&sender]), "Navlab <no-reply@navlab.online>", None);
        assert!(matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::Refused(_))));

        let unauthorized = mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| {
            SendRawEmailError::generic(ErrorMetadata::builder().code("AccessDenied").message("not authorized to perform: ses:SendRawEmail").build())
        });
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&unauthorized]), "no-reply@navlab.online", None);
        assert!(matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::Refused(m)) if m.contains("ses:SendRawEmail")));

        let daily = mock!(aws_sdk_ses::Client::send_raw_email)
            .then_error(|| SendRawEmailError::generic(ErrorMetadata::builder().code("Throttling").message("Daily message quota exceeded.").build()));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&daily]), "no-reply@navlab.online", None);
        assert!(matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::QuotaSpent(m)) if m.contains("Daily message quota")));
        let rate = mock!(aws_sdk_ses::Client::send_raw_email)
            .then_error(|| SendRawEmailError::generic(ErrorMetadata::builder().code("Throttling").message("Maximum sending rate exceeded.").build()));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&rate]), "no-reply@navlab.online", None);
        assert!(matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::Retryable(_))), "a rate throttle is retried");
    }

    #[test]
    fn tag_values_keep_what_ses_takes_and_replace_the_rest() {
        assert_eq!(tag_value("ph-1001_b"), "ph-1001_b");
        assert_eq!(tag_value("acme corp/ü"), "acme_corp__");
        assert_eq!(tag_value(""), "_");
        assert_eq!(tag_value(&"x".repeat(300)).len(), 256);
    }

    #[test]
    fn only_a_rejection_of_the_recipient_is_final() {
        let (to, from) = ("ada@example.com", "no-reply@navlab.online");
        let final_ = |code, message| matches!(classify_refusal(code, message, to, from), Some(SendError::Rejected(_)));
        let refused = |code, message| matches!(classify_refusal(code, message, to, from), Some(SendError::Refused(_)));
        assert!(final_("MessageRejected", "Address blacklisted."));
        assert!(final_("MessageRejected", "The address ada@example.com is on the account-level suppression list"));
        assert!(refused("MessageRejected", "Email address is not verified. The following identities failed the check in region EU-WEST-1: ada@example.com"));
        assert!(refused(
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in region EU-WEST-1: no-reply@navlab.online"
        ));
        assert!(refused("InvalidParameterValue", "Local address contains control or whitespace"));
        assert!(refused("InvalidParameterValue", "Missing '\"'"));
        assert!(refused("ConfigurationSetDoesNotExist", "Configuration set <x> does not exist."));
        assert!(refused("AccountSendingPausedException", "Sending paused for this account."));
        assert!(refused("MessageRejected", "Transaction failed: illegal header"));
        assert!(classify_refusal("ServiceUnavailable", "try later", to, from).is_none());
    }

    #[tokio::test]
    async fn an_address_ses_cannot_take_is_the_recipients_and_costs_no_call() {
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, []), "no-reply@navlab.online", None);
        for to in ["jürgen@example.com", "no-at-sign.example.com", "a b@example.com", "ada@localhost"] {
            let email = OutgoingEmail { to: to.into(), ..email() };
            assert!(matches!(mailer.send(&email, Duration::from_secs(5)).await, Err(SendError::Rejected(_))), "{to}");
        }
    }
}

// The once-only record's conditions, as the adapter sends them to DynamoDB (moto evaluates them in the e2e tests).
#[cfg(test)]
mod idempotency_tests {
    use super::*;
    use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemOutput};
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn refused() -> ConditionalCheckFailedException {
        ConditionalCheckFailedException::builder()
            .message("The conditional request failed")
            .meta(aws_sdk_dynamodb::error::ErrorMetadata::builder().code("ConditionalCheckFailedException").build())
            .build()
    }

    fn stored(status: &str) -> GetItemOutput {
        GetItemOutput::builder().item("id", AttributeValue::S("k".into())).item("status", AttributeValue::S(status.into())).build()
    }

    fn number_of(values: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u128 {
        values[name].as_n().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn a_claim_may_take_over_only_an_in_progress_record_whose_invocation_has_ended() {
        let until = SystemTime::now() + Duration::from_secs(30);
        let claim = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |r| {
                let condition = r.condition_expression().unwrap();
                let values = r.expression_attribute_values().unwrap();
                let item = r.item().unwrap();
                let now_ms = epoch_millis(SystemTime::now());
                // New, expired, or INPROGRESS with a lapsed invocation deadline: a COMPLETED record matches none.
                condition == "attribute_not_exists(id) OR expiration < :now OR (#status = :in_progress AND in_progress_expiration < :now_ms)"
                    && values[":in_progress"].as_s().unwrap() == STATUS_IN_PROGRESS
                    && number_of(values, ":now_ms").abs_diff(now_ms) < 5_000
                    && item["status"].as_s().unwrap() == STATUS_IN_PROGRESS
                    && number_of(item, "in_progress_expiration") == epoch_millis(until)
                    && number_of(item, "expiration") >= epoch_seconds(SystemTime::now() + 14 * DAY) as u128
            })
            .then_output(|| PutItemOutput::builder().build());
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, [&claim]), "t", 15 * DAY);
        assert_eq!(store.claim("k", until).await, Ok(Claim::Acquired));
    }

    #[tokio::test]
    async fn a_refused_claim_is_already_completed_or_in_progress_as_the_record_says() {
        for (status, expected) in [(STATUS_COMPLETED, Claim::AlreadyCompleted), (STATUS_IN_PROGRESS, Claim::InProgress)] {
            let put = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| PutItemError::ConditionalCheckFailedException(refused()));
            let get = mock!(aws_sdk_dynamodb::Client::get_item).match_requests(|r| r.consistent_read() == Some(true)).then_output(move || stored(status));
            let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &get]), "t", 15 * DAY);
            assert_eq!(store.claim("k", SystemTime::now()).await, Ok(expected), "{status}");
        }
    }

    fn put_keys(r: &aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput) -> Vec<String> {
        r.request_items().unwrap()["t"].iter().map(|w| w.put_request().unwrap().item()["id"].as_s().unwrap().clone()).collect()
    }

    #[tokio::test]
    async fn completing_writes_whole_completed_records_and_writes_again_what_dynamodb_left_unprocessed() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        let first = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                let requests = &r.request_items().unwrap()["t"];
                put_keys(r) == ["a", "b"]
                    && requests.iter().all(|w| {
                        let item = w.put_request().unwrap().item();
                        // The whole record: what the claim's in-progress deadline was is gone with it.
                        item.len() == 4
                            && item["status"].as_s().unwrap() == STATUS_COMPLETED
                            && number_of(item, "expiration") >= epoch_seconds(SystemTime::now() + 14 * DAY) as u128
                    })
                    && requests[1].put_request().unwrap().item()["outcome"].as_s().unwrap() == "rejected"
            })
            .then_output(|| {
                let left = WriteRequest::builder().put_request(PutRequest::builder().item("id", AttributeValue::S("b".into())).build().unwrap()).build();
                BatchWriteItemOutput::builder().unprocessed_items("t", vec![left]).build()
            });
        let again =
            mock!(aws_sdk_dynamodb::Client::batch_write_item).match_requests(|r| put_keys(r) == ["b"]).then_output(|| BatchWriteItemOutput::builder().build());
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&first, &again]), "t", 15 * DAY);
        let completed = [("a".to_string(), "sent".to_string()), ("b".to_string(), "rejected".to_string())];
        assert_eq!(store.complete(&completed).await, Ok(()));
        assert_eq!((first.num_calls(), again.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn records_left_unprocessed_every_time_are_named_unwritten() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        let stuck = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .then_compute_output(|r| BatchWriteItemOutput::builder().unprocessed_items("t", r.request_items().unwrap()["t"].clone()).build());
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&stuck]), "t", 15 * DAY);
        let unwritten = store.complete(&[("a".to_string(), "sent".to_string())]).await.unwrap_err();
        assert_eq!(unwritten.keys, ["a"]);
        assert_eq!(stuck.num_calls(), UNPROCESSED_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn releasing_removes_only_an_in_progress_record() {
        let release = mock!(aws_sdk_dynamodb::Client::delete_item)
            .match_requests(|r| r.condition_expression() == Some("#status = :in_progress"))
            .then_output(|| DeleteItemOutput::builder().build());
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, [&release]), "t", 15 * DAY);
        store.release("k").await.unwrap();
        // A completed record refuses the release: that is no error, and the record stays.
        let kept = mock!(aws_sdk_dynamodb::Client::delete_item).then_error(|| DeleteItemError::ConditionalCheckFailedException(refused()));
        let store = DynamoIdempotency::new(mock_client!(aws_sdk_dynamodb, [&kept]), "t", 15 * DAY);
        assert_eq!(store.release("k").await, Ok(()));
    }
}
