//! The two formats SES publishes feedback in, read into one [`Notification`]:
//!
//! - configuration-set event publishing (`"eventType": "Bounce" | "Complaint" | "Delivery" | "Send" | ...`), with the
//!   message's tags under `mail.tags`;
//! - identity notifications (`"notificationType": "Bounce" | "Complaint" | "Delivery"`).
//!
//! Both carry `bounce.bounceType` / `bouncedRecipients` and `complaint.complaintFeedbackType` /
//! `complainedRecipients` the same way. Only the fields used are read.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// What SES says happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// A recipient marked it as spam (or otherwise complained): `feedback_type` is the ARF type, when the mailbox
    /// provider gave one.
    Complaint {
        feedback_type: Option<String>,
        recipients: Vec<String>,
    },
    /// `Permanent`, `Transient` or `Undetermined`.
    Bounce {
        bounce_type: String,
        sub_type: Option<String>,
        recipients: Vec<String>,
    },
    /// A delivery, a send, an open, ...: nothing to act on.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub feedback: Feedback,
    /// SES's message id of the email the feedback is about.
    pub message_id: Option<String>,
    /// The email's message tags (event publishing only): tenant and row, never an address.
    pub tags: HashMap<String, String>,
}

impl Feedback {
    /// The recipients to unsubscribe: of a complaint of any type but `not-spam`, of a permanent bounce of any
    /// subtype. Nobody for anything else.
    pub fn to_unsubscribe(&self) -> &[String] {
        match self {
            Feedback::Complaint {
                feedback_type,
                recipients,
            } if feedback_type.as_deref() != Some("not-spam") => recipients,
            Feedback::Bounce {
                bounce_type,
                recipients,
                ..
            } if bounce_type == "Permanent" => recipients,
            _ => &[],
        }
    }

    /// The metric this feedback counts in.
    pub fn metric(&self) -> &'static str {
        match self {
            Feedback::Complaint { feedback_type, .. } if feedback_type.as_deref() == Some("not-spam") => {
                "NotSpamReports"
            }
            Feedback::Complaint { .. } => "Complaints",
            Feedback::Bounce { bounce_type, .. } if bounce_type == "Permanent" => "PermanentBounces",
            Feedback::Bounce { bounce_type, .. } if bounce_type == "Transient" => "TransientBounces",
            Feedback::Bounce { .. } => "UndeterminedBounces",
            Feedback::Other(_) => "OtherFeedback",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Feedback::Complaint { feedback_type, .. } => {
                format!("complaint ({})", feedback_type.as_deref().unwrap_or("no feedback type"))
            }
            Feedback::Bounce {
                bounce_type, sub_type, ..
            } => format!("{bounce_type} bounce ({})", sub_type.as_deref().unwrap_or("no subtype")),
            Feedback::Other(kind) => kind.to_lowercase(),
        }
    }
}

#[derive(Deserialize)]
struct Recipient {
    #[serde(rename = "emailAddress")]
    email_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    #[serde(default)]
    bounce_sub_type: Option<String>,
    bounced_recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complaint_feedback_type: Option<String>,
    complained_recipients: Vec<Recipient>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Mail {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    tags: HashMap<String, Vec<String>>,
}

/// The bare address of `Name <address>` or of a bare address.
fn address(recipient: Recipient) -> String {
    let text = recipient.email_address.trim();
    match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].trim().to_owned(),
        _ => text.to_owned(),
    }
}

fn field<T: serde::de::DeserializeOwned>(value: &Value, name: &str, kind: &str) -> Result<T, String> {
    let part = value
        .get(name)
        .ok_or_else(|| format!("a {kind} notification without `{name}`"))?;
    serde_json::from_value(part.clone()).map_err(|e| format!("`{name}` of a {kind} notification: {e}"))
}

/// Reads one SES notification (the SNS message).
pub fn parse(message: &str) -> Result<Notification, String> {
    let value: Value = serde_json::from_str(message).map_err(|e| format!("not JSON: {e}"))?;
    let kind = value
        .get("eventType")
        .or_else(|| value.get("notificationType"))
        .and_then(Value::as_str)
        .ok_or(
            "neither `eventType` (event publishing) nor `notificationType` (identity notification): not SES feedback",
        )?;
    let feedback = match kind {
        "Bounce" => {
            let bounce: Bounce = field(&value, "bounce", "bounce")?;
            Feedback::Bounce {
                bounce_type: bounce.bounce_type,
                sub_type: bounce.bounce_sub_type,
                recipients: bounce.bounced_recipients.into_iter().map(address).collect(),
            }
        }
        "Complaint" => {
            let complaint: Complaint = field(&value, "complaint", "complaint")?;
            Feedback::Complaint {
                feedback_type: complaint.complaint_feedback_type,
                recipients: complaint.complained_recipients.into_iter().map(address).collect(),
            }
        }
        other => Feedback::Other(other.to_owned()),
    };
    let mail: Mail = value
        .get("mail")
        .map(|m| serde_json::from_value(m.clone()).unwrap_or_default())
        .unwrap_or_default();
    let tags = mail
        .tags
        .into_iter()
        .filter_map(|(name, values)| values.into_iter().next().map(|v| (name, v)))
        .collect();
    Ok(Notification {
        feedback,
        message_id: mail.message_id,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_publishing_complaint_names_its_recipients_and_tags() {
        let message = json!({"eventType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "ada@example.com"}], "complaintFeedbackType": "abuse", "timestamp": "2026-12-01T10:00:00.000Z"},
                             "mail": {"messageId": "0100-abc", "tags": {"tenant": ["acme"], "row": ["ph-1001"], "ses:configuration-set": ["dev-event-workers"]}}});
        let n = parse(&message.to_string()).unwrap();
        assert_eq!(n.feedback.to_unsubscribe(), ["ada@example.com"]);
        assert_eq!((n.tags["tenant"].as_str(), n.tags["row"].as_str()), ("acme", "ph-1001"));
        assert_eq!(n.message_id.as_deref(), Some("0100-abc"));
        assert_eq!(n.feedback.metric(), "Complaints");
    }

    #[test]
    fn an_identity_notification_bounce_reads_alike() {
        let message = json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                             "bouncedRecipients": [{"emailAddress": "\"Grace\" <grace@example.com>", "status": "5.1.1"}]}, "mail": {"messageId": "m"}});
        let n = parse(&message.to_string()).unwrap();
        assert_eq!(n.feedback.to_unsubscribe(), ["grace@example.com"]);
        assert!(n.tags.is_empty());
    }

    #[test]
    fn transient_and_undetermined_bounces_not_spam_and_deliveries_unsubscribe_nobody() {
        for (message, metric) in [
            (
                json!({"eventType": "Bounce", "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "a@b.co"}]}}),
                "TransientBounces",
            ),
            (
                json!({"notificationType": "Bounce", "bounce": {"bounceType": "Undetermined", "bouncedRecipients": [{"emailAddress": "a@b.co"}]}}),
                "UndeterminedBounces",
            ),
            (
                json!({"eventType": "Complaint", "complaint": {"complaintFeedbackType": "not-spam", "complainedRecipients": [{"emailAddress": "a@b.co"}]}}),
                "NotSpamReports",
            ),
            (
                json!({"notificationType": "Delivery", "delivery": {"recipients": ["a@b.co"]}}),
                "OtherFeedback",
            ),
        ] {
            let n = parse(&message.to_string()).unwrap();
            assert!(n.feedback.to_unsubscribe().is_empty(), "{message}");
            assert_eq!(n.feedback.metric(), metric);
        }
        let no_type =
            json!({"eventType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "a@b.co"}]}});
        assert_eq!(
            parse(&no_type.to_string()).unwrap().feedback.to_unsubscribe(),
            ["a@b.co"],
            "a complaint without a feedback type is a complaint"
        );
    }

    #[test]
    fn what_is_not_ses_feedback_is_an_error_that_says_why() {
        assert!(parse("{oops").unwrap_err().contains("not JSON"));
        assert!(parse(r#"{"event": "records_created"}"#)
            .unwrap_err()
            .contains("eventType"));
        assert!(parse(r#"{"eventType": "Bounce"}"#)
            .unwrap_err()
            .contains("without `bounce`"));
        assert!(
            parse(r#"{"notificationType": "Complaint", "complaint": {"complainedRecipients": "x"}}"#)
                .unwrap_err()
                .contains("complaint")
        );
    }
}
