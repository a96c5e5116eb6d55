//! The ports of the handler: the user directory (Cognito).

use async_trait::async_trait;
pub use shared::directory::{DirectoryError, DirectoryUser};

#[async_trait]
pub trait UserDirectory: Send + Sync {
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError>;
    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError>;
    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError>;
    async fn disable_user(&self, username: &str) -> Result<(), DirectoryError>;
    async fn enable_user(&self, username: &str) -> Result<(), DirectoryError>;
    async fn delete_user(&self, username: &str) -> Result<(), DirectoryError>;
}
