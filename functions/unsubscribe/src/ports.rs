//! The port of the handler: the subscription flag of a pool user.

use async_trait::async_trait;

/// A pool user, found by `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub username: String,
    pub subscribed: bool,
}

#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// The user whose `sub` this is; `None` when the pool has no such user (any more).
    async fn find(&self, sub: &str) -> Result<Option<Subscriber>, String>;
    /// Sets `custom:subPublishHistory` to `false`.
    async fn unsubscribe(&self, username: &str) -> Result<(), String>;
    /// Sets `custom:subPublishHistory` back to `true` (the confirmation page's "subscribe again").
    async fn resubscribe(&self, username: &str) -> Result<(), String>;
}
