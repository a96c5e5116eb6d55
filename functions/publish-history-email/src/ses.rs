//! The mail port on SES (v1 `SendRawEmail`): raw MIME, so a message can carry `List-Unsubscribe`, and SES's errors
//! sorted into what is the recipient's for good and what refuses every recipient alike.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ses::error::ProvideErrorMetadata;
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::{MessageTag, RawMessage};

use crate::error::DependencyError;
use crate::ports::{Mailer, OutgoingEmail, SendError};

pub struct SesMailer {
    client: aws_sdk_ses::Client,
    sender: String,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_ses::Client, sender: impl Into<String>, configuration_set: Option<String>) -> Self {
        Self {
            client,
            sender: sender.into(),
            configuration_set,
        }
    }

    fn sender_address(&self) -> &str {
        crate::config::sender_address(&self.sender).unwrap_or(&self.sender)
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn max_send_rate(&self) -> Result<f64, DependencyError> {
        let quota = self
            .client
            .get_send_quota()
            .send()
            .await
            .map_err(DependencyError::from_sdk)?;
        Ok(quota.max_send_rate())
    }

    async fn send(&self, email: &OutgoingEmail, timeout: Duration) -> Result<String, SendError> {
        // Raw MIME, so the message can carry List-Unsubscribe; the one destination is given explicitly, so nothing in
        // the message's headers can add a recipient.
        // SES takes 7-bit ASCII addresses only (no SMTPUTF8): one it cannot take is the recipient's, for good.
        if !deliverable_address(&email.to) {
            return Err(SendError::Rejected(
                "the address is not a 7-bit ASCII mailbox SES can send to".into(),
            ));
        }
        let raw = crate::mime::build(&self.sender, email).map_err(SendError::Retryable)?;
        let result = self
            .client
            .send_raw_email()
            // The bare address: the From header of the raw message carries the display name, RFC 2047 encoded; SES
            // refuses a Source whose name is not.
            .source(self.sender_address())
            .destinations(&email.to)
            .raw_message(
                RawMessage::builder()
                    .data(Blob::new(raw))
                    .build()
                    .map_err(|e| SendError::Retryable(e.to_string()))?,
            )
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
            .config_override(
                aws_sdk_ses::config::Builder::new().timeout_config(
                    aws_sdk_ses::config::timeout::TimeoutConfig::builder()
                        .operation_timeout(timeout)
                        .operation_attempt_timeout(timeout)
                        .build(),
                ),
            )
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.message_id().to_owned()),
            Err(error) => {
                let message = error.message().unwrap_or_default().to_owned();
                Err(match error.code() {
                    Some(code) => {
                        classify_refusal(code, &message, &email.to, self.sender_address()).unwrap_or_else(|| {
                            SendError::Retryable(aws_sdk_ses::error::DisplayErrorContext(error).to_string())
                        })
                    }
                    None => SendError::Retryable(aws_sdk_ses::error::DisplayErrorContext(error).to_string()),
                })
            }
        }
    }
}

/// An SES message tag value: ASCII letters, digits, `_` and `-`, at most 256 characters; anything else becomes `_`.
fn tag_value(text: &str) -> String {
    let value: String = text
        .chars()
        .take(256)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if value.is_empty() {
        "_".to_owned()
    } else {
        value
    }
}

/// A mailbox SES can send to: 7-bit ASCII, one `@` between a local part and a dotted domain, no space or control.
fn deliverable_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    address.is_ascii()
        && !address.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        && !local.is_empty()
        && domain.contains('.')
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
        "Throttling" if message.contains("Daily message quota exceeded") => {
            Some(SendError::QuotaSpent(format!("{code}: {message}")))
        }
        "MessageRejected" if message.contains("not verified") && message.contains(sender) => {
            refused("the sender identity is not verified")
        }
        "MessageRejected" if message.contains("not verified") => {
            refused("the account is in the SES sandbox and the recipient is not a verified identity")
        }
        "MessageRejected"
            if message.contains("blacklisted")
                || message.contains("suppression list")
                || message.contains(recipient) =>
        {
            Some(SendError::Rejected(message.to_owned()))
        }
        "MessageRejected" => refused("SES refused the message itself"),
        "InvalidParameterValue" => refused("SES cannot take the request as built (sender, headers or encoding)"),
        "MailFromDomainNotVerified"
        | "ConfigurationSetDoesNotExist"
        | "ConfigurationSetSendingPausedException"
        | "AccountSendingPausedException" => refused("the sending configuration is not usable"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
            MessageRejected::builder()
                .message(message)
                .meta(
                    ErrorMetadata::builder()
                        .code("MessageRejected")
                        .message(message)
                        .build(),
                )
                .build(),
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
                    && r.tags().iter().map(|t| (t.name(), t.value())).collect::<Vec<_>>()
                        == [("tenant", "acme"), ("row", "ph-1")]
            })
            .then_output(|| SendRawEmailOutput::builder().message_id("ses-1").build().unwrap());
        let mailer = SesMailer::new(
            mock_client!(aws_sdk_ses, [&rule]),
            "Navlab <no-reply@navlab.online>",
            Some("notifications".into()),
        );
        assert_eq!(mailer.send(&email(), Duration::from_secs(5)).await.unwrap(), "ses-1");
    }

    #[tokio::test]
    async fn recipient_rejection_is_permanent_but_an_unverified_sender_is_not() {
        let recipient =
            mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| rejected("Email address is blacklisted."));
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&recipient]), "no-reply@navlab.online", None);
        assert!(matches!(
            mailer.send(&email(), Duration::from_secs(5)).await,
            Err(SendError::Rejected(_))
        ));

        let sender = mock!(aws_sdk_ses::Client::send_raw_email)
            .then_error(|| rejected("Email address not verified no-reply@navlab.online"));
        let mailer = SesMailer::new(
            mock_client!(aws_sdk_ses, [&sender]),
            "Navlab <no-reply@navlab.online>",
            None,
        );
        assert!(matches!(
            mailer.send(&email(), Duration::from_secs(5)).await,
            Err(SendError::Refused(_))
        ));

        let unauthorized = mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| {
            SendRawEmailError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform: ses:SendRawEmail")
                    .build(),
            )
        });
        let mailer = SesMailer::new(
            mock_client!(aws_sdk_ses, [&unauthorized]),
            "no-reply@navlab.online",
            None,
        );
        assert!(
            matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::Refused(m)) if m.contains("ses:SendRawEmail"))
        );

        let daily = mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| {
            SendRawEmailError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Daily message quota exceeded.")
                    .build(),
            )
        });
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&daily]), "no-reply@navlab.online", None);
        assert!(
            matches!(mailer.send(&email(), Duration::from_secs(5)).await, Err(SendError::QuotaSpent(m)) if m.contains("Daily message quota"))
        );
        let rate = mock!(aws_sdk_ses::Client::send_raw_email).then_error(|| {
            SendRawEmailError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Maximum sending rate exceeded.")
                    .build(),
            )
        });
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, [&rate]), "no-reply@navlab.online", None);
        assert!(
            matches!(
                mailer.send(&email(), Duration::from_secs(5)).await,
                Err(SendError::Retryable(_))
            ),
            "a rate throttle is retried"
        );
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
        assert!(final_(
            "MessageRejected",
            "The address ada@example.com is on the account-level suppression list"
        ));
        assert!(refused("MessageRejected", "Email address is not verified. The following identities failed the check in region EU-WEST-1: ada@example.com"));
        assert!(refused(
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in region EU-WEST-1: no-reply@navlab.online"
        ));
        assert!(refused(
            "InvalidParameterValue",
            "Local address contains control or whitespace"
        ));
        assert!(refused("InvalidParameterValue", "Missing '\"'"));
        assert!(refused(
            "ConfigurationSetDoesNotExist",
            "Configuration set <x> does not exist."
        ));
        assert!(refused(
            "AccountSendingPausedException",
            "Sending paused for this account."
        ));
        assert!(refused("MessageRejected", "Transaction failed: illegal header"));
        assert!(classify_refusal("ServiceUnavailable", "try later", to, from).is_none());
    }

    #[tokio::test]
    async fn an_address_ses_cannot_take_is_the_recipients_and_costs_no_call() {
        let mailer = SesMailer::new(mock_client!(aws_sdk_ses, []), "no-reply@navlab.online", None);
        for to in [
            "jürgen@example.com",
            "no-at-sign.example.com",
            "a b@example.com",
            "ada@localhost",
        ] {
            let email = OutgoingEmail {
                to: to.into(),
                ..email()
            };
            assert!(
                matches!(
                    mailer.send(&email, Duration::from_secs(5)).await,
                    Err(SendError::Rejected(_))
                ),
                "{to}"
            );
        }
    }
}
