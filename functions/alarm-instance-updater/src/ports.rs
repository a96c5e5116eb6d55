//! The two ports of the handler: the restriction parameter and the group's state.

use async_trait::async_trait;

use crate::restriction::GroupState;

#[async_trait]
pub trait RestrictionStore: Send + Sync {
    /// The raw value, `None` when the parameter does not exist.
    async fn read(&self) -> Result<Option<String>, String>;
    async fn write(&self, value: &str) -> Result<(), WriteError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Another writer is updating the parameter right now (SSM's `TooManyUpdates`): what it wrote may change the
    /// decision, so read again and decide again.
    #[error("{0}")]
    Contended(String),
    #[error("{0}")]
    Failed(String),
}

#[async_trait]
pub trait GroupStatus: Send + Sync {
    /// `None` when the group does not exist.
    async fn describe(&self, group: &str) -> Result<Option<GroupState>, String>;
}
