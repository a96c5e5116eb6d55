//! The ports of the handler: the user directory (Cognito).

use std::collections::HashMap;

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub enabled: bool,
    pub attributes: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("user does not exist in the user pool")]
    UserNotFound,
    /// The directory refused the request as such (an attribute the pool does not define, a value it rejects):
    /// sending it again cannot help.
    #[error("rejected by the user pool: {0}")]
    Rejected(String),
    /// Throttling that outlasted the SDK's retries, 5xx, timeouts: may succeed later.
    #[error("user pool unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait UserDirectory: Send + Sync {
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError>;
    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError>;
    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError>;
    async fn disable_user(&self, username: &str) -> Result<(), DirectoryError>;
    async fn delete_user(&self, username: &str) -> Result<(), DirectoryError>;
}
