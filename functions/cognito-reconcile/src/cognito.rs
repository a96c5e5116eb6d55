//! The SDK adapter of the pool: Cognito (shared with cognito-attribute-sync), paced under ListUsers' quota.

use async_trait::async_trait;
use shared::directory::CognitoDirectory;
use shared::pacer::Pacer;
use tokio::time::Instant;

use crate::ports::{DirectoryError, DirectoryUser, ListedUser, PoolDirectory};

/// ListUsers allows 30 calls per second per account; this keeps a margin for the other functions' listings.
pub const LIST_USERS_PER_SECOND: f64 = 25.0;

pub struct PacedDirectory {
    directory: CognitoDirectory,
    list_pacer: Pacer,
}

impl PacedDirectory {
    pub fn new(directory: CognitoDirectory) -> Self {
        Self {
            directory,
            list_pacer: Pacer::new(LIST_USERS_PER_SECOND),
        }
    }
}

#[async_trait]
impl PoolDirectory for PacedDirectory {
    async fn list_users(&self) -> Result<Vec<ListedUser>, DirectoryError> {
        // No deadline on the pacing itself: the listing is bounded by the pool's size.
        let far = Instant::now() + std::time::Duration::from_secs(24 * 3600);
        self.directory
            .list_users(|| async {
                let _ = self.list_pacer.acquire(far).await;
            })
            .await
    }
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        self.directory.get_user(username).await
    }
    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError> {
        self.directory.update_attributes(username, attributes).await
    }
    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
        self.directory.delete_attributes(username, names).await
    }
}
