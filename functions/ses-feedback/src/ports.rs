//! The port of the handler: the recipients' subscription in the user pool.

use async_trait::async_trait;
pub use shared::directory::DirectoryError;

/// The pool user an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub username: String,
    pub subscribed: bool,
}

#[async_trait]
pub trait Recipients: Send + Sync {
    /// The pool user whose `email` is `address`; `None` when the pool has none.
    async fn find(&self, address: &str) -> Result<Option<Recipient>, DirectoryError>;
    /// Sets `custom:subPublishHistory` to `false`.
    async fn unsubscribe(&self, username: &str) -> Result<(), DirectoryError>;
}
