//! The SDK adapter of the port: the shared Cognito directory.

use async_trait::async_trait;
pub use shared::directory::CognitoDirectory;
use shared::directory::{is_subscribed, DirectoryError};

use crate::ports::{Recipient, Recipients};

#[async_trait]
impl Recipients for CognitoDirectory {
    async fn find(&self, address: &str) -> Result<Option<Recipient>, DirectoryError> {
        let user = self.find_one("email", address).await?;
        Ok(user.map(|user| Recipient { subscribed: is_subscribed(&user.attributes), username: user.username }))
    }

    async fn unsubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        CognitoDirectory::unsubscribe(self, username).await
    }
}
