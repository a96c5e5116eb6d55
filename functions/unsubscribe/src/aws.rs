//! The SDK adapter of the port: the subscription flag in the Cognito user pool, through the shared directory.

use async_trait::async_trait;
pub use shared::directory::{CognitoDirectory, SUBSCRIPTION_FLAG as FLAG};

use crate::ports::{Subscriber, Subscriptions};

#[async_trait]
impl Subscriptions for CognitoDirectory {
    async fn find(&self, sub: &str) -> Result<Option<Subscriber>, String> {
        let user = self.find_one("sub", sub).await.map_err(|e| e.to_string())?;
        Ok(user.map(|user| Subscriber { subscribed: shared::directory::is_subscribed(&user.attributes), username: user.username }))
    }

    async fn unsubscribe(&self, username: &str) -> Result<(), String> {
        CognitoDirectory::unsubscribe(self, username).await.map_err(|e| e.to_string())
    }

    async fn resubscribe(&self, username: &str) -> Result<(), String> {
        self.update_attributes(username, &[(FLAG.to_owned(), "true".to_owned())]).await.map_err(|e| e.to_string())
    }
}
