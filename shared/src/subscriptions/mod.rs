//! The publish-history subscription of a pool user, as the functions that switch it use it: ses-feedback finds the
//! user by address and unsubscribes, unsubscribe finds the user by `sub` and unsubscribes or subscribes again.
//!
//! Adapters: [`cognito`] (the flag `custom:subPublishHistory` through [`crate::directory`]) and, for the tests,
//! `memory`.

pub mod cognito;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;

use async_trait::async_trait;

pub use crate::directory::DirectoryError;

/// The pool user a subscription belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub username: String,
    pub subscribed: bool,
}

/// How a subscriber is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberKey<'a> {
    /// By the `email` attribute (the address a notification names).
    Email(&'a str),
    /// By the immutable `sub` (what a signed unsubscribe link carries).
    Sub(&'a str),
}

#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// The one pool user `key` names; `None` when the pool has none.
    async fn find(&self, key: SubscriberKey<'_>) -> Result<Option<Subscriber>, DirectoryError>;
    /// Sets the flag to `false`.
    async fn unsubscribe(&self, username: &str) -> Result<(), DirectoryError>;
    /// Sets the flag to `true`.
    async fn resubscribe(&self, username: &str) -> Result<(), DirectoryError>;
}

#[async_trait]
impl<T: Subscriptions> Subscriptions for std::sync::Arc<T> {
    async fn find(&self, key: SubscriberKey<'_>) -> Result<Option<Subscriber>, DirectoryError> {
        (**self).find(key).await
    }
    async fn unsubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        (**self).unsubscribe(username).await
    }
    async fn resubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        (**self).resubscribe(username).await
    }
}
