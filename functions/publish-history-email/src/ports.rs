//! The ports of the handler and the values they carry: who is in the pool, how an email is sent, where the once-only
//! records live, how work is handed on to the function's own fan-out queue, and how instances share the send rate.

use std::time::Duration;

use async_trait::async_trait;

pub use crate::error::{DependencyError, SendError};
use serde::{Deserialize, Serialize};

/// One user of the pool, with only the attributes the function asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolUser {
    /// Cognito's immutable id of the user: what the unsubscribe link names instead of the address.
    pub sub: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub tenant: Option<String>,
    pub subscribed: bool,
    pub enabled: bool,
    pub confirmed: bool,
    pub email_verified: bool,
}

/// Who gets one email; short field names, since chunks of them travel in SQS messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(rename = "e")]
    pub email: String,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
}

/// One ListUsers page and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPage {
    pub users: Vec<PoolUser>,
    /// `None` on the last page.
    pub next: Option<String>,
}

/// The port: the pool, page by page, so a listing can stop and resume in another invocation.
#[async_trait]
pub trait UserSource: Send + Sync {
    async fn list_page(&self, from: Option<&str>) -> Result<UserPage, DependencyError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The recipient's one-click unsubscribe (RFC 8058), when the function is configured for it.
    pub list_unsubscribe: Option<ListUnsubscribe>,
    /// Message tags (`tenant`, `row`): SES returns them with every bounce or complaint, so feedback is traced to its
    /// tenant and row. Never an address. The adapter fits the values to what SES takes.
    pub tags: Vec<(&'static str, String)>,
}

/// What the `List-Unsubscribe`, `List-Unsubscribe-Post` and `List-Id` headers say for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUnsubscribe {
    pub url: String,
    pub list_id: String,
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// The account's maximum send rate, emails per second (GetSendQuota). The 24-hour quota is learnt from SES's
    /// refusal, which says it is spent: the quota read an hour ago would not.
    async fn max_send_rate(&self) -> Result<f64, DependencyError>;
    /// Sends one email within `timeout`; returns the provider's message id. One attempt: retries are the caller's,
    /// through its pacer.
    async fn send(&self, email: &OutgoingEmail, timeout: Duration) -> Result<String, SendError>;
}

/// The function's own fan-out queue (`FANOUT_QUEUE_URL`).
#[async_trait]
pub trait FanoutQueue: Send + Sync {
    /// Queues one task message, visible after `delay` (at most 15 minutes).
    async fn hand_on(&self, body: String, delay: Duration) -> Result<(), DependencyError>;
}
