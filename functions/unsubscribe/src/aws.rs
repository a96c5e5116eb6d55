//! The SDK adapter of the port: the subscription flag in the Cognito user pool.

use async_trait::async_trait;
use aws_sdk_cognitoidentityprovider::types::AttributeType;

use crate::ports::{Subscriber, Subscriptions};

/// The flag publish-history-email reads (`true`, `1` or `yes` subscribe).
pub const FLAG: &str = "custom:subPublishHistory";

pub struct CognitoSubscriptions {
    client: aws_sdk_cognitoidentityprovider::Client,
    user_pool_id: String,
}

impl CognitoSubscriptions {
    pub fn new(client: aws_sdk_cognitoidentityprovider::Client, user_pool_id: impl Into<String>) -> Self {
        Self { client, user_pool_id: user_pool_id.into() }
    }
}

fn error_text(error: impl std::error::Error + Send + Sync + 'static) -> String {
    aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(error).to_string()
}

#[async_trait]
impl Subscriptions for CognitoSubscriptions {
    async fn find(&self, sub: &str) -> Result<Option<Subscriber>, String> {
        // A sub is a UUID; anything that could break out of the filter's quotes is no user of ours.
        if sub.contains(['"', '\\']) {
            return Ok(None);
        }
        let output = self.client.list_users().user_pool_id(&self.user_pool_id).filter(format!("sub = \"{sub}\"")).limit(1).send().await.map_err(error_text)?;
        Ok(output.users().first().map(|user| Subscriber {
            username: user.username().unwrap_or_default().to_owned(),
            subscribed: user
                .attributes()
                .iter()
                .find(|a| a.name() == FLAG)
                .and_then(|a| a.value())
                .is_some_and(|v| ["true", "1", "yes"].iter().any(|t| t.eq_ignore_ascii_case(v.trim()))),
        }))
    }

    async fn unsubscribe(&self, username: &str) -> Result<(), String> {
        let flag = AttributeType::builder().name(FLAG).value("false").build().map_err(|e| e.to_string())?;
        self.client
            .admin_update_user_attributes()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .user_attributes(flag)
            .send()
            .await
            .map(|_| ())
            .map_err(error_text)
    }
}
