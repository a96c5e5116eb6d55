//! The SDK adapters of the ports: the user directory on Cognito (shared with the reconciliation).

use async_trait::async_trait;
pub use shared::directory::CognitoDirectory;

use crate::ports::{DirectoryError, DirectoryUser, UserDirectory};

#[async_trait]
impl UserDirectory for CognitoDirectory {
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        CognitoDirectory::get_user(self, username).await
    }
    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError> {
        CognitoDirectory::update_attributes(self, username, attributes).await
    }
    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
        CognitoDirectory::delete_attributes(self, username, names).await
    }
    async fn disable_user(&self, username: &str) -> Result<(), DirectoryError> {
        CognitoDirectory::disable_user(self, username).await
    }
    async fn enable_user(&self, username: &str) -> Result<(), DirectoryError> {
        CognitoDirectory::enable_user(self, username).await
    }
    async fn delete_user(&self, username: &str) -> Result<(), DirectoryError> {
        CognitoDirectory::delete_user(self, username).await
    }
}
