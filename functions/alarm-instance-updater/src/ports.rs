//! The two ports of the handler: the restriction parameter and the group's state.

use async_trait::async_trait;

use crate::restriction::GroupState;

/// One version of the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: String,
    /// SSM's version of the parameter: 1 for the first write, one more for each.
    pub version: i64,
}

#[async_trait]
pub trait RestrictionStore: Send + Sync {
    /// The latest version, `None` when the parameter does not exist.
    async fn read(&self) -> Result<Option<Stored>, String>;
    /// The value of one version (`name:version`); `None` when SSM no longer keeps it (it keeps 100).
    async fn read_version(&self, version: i64) -> Result<Option<String>, String>;
    /// Writes a new version and returns its number.
    async fn write(&self, value: &str) -> Result<i64, WriteError>;
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
