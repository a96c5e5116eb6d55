//! The two ports of the handler: the restriction parameter and the group's state.

use async_trait::async_trait;

pub use crate::error::{DependencyError, WriteError};
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
    async fn read(&self) -> Result<Option<Stored>, DependencyError>;
    /// The value of one version (`name:version`); `None` when SSM no longer keeps it (it keeps 100).
    async fn read_version(&self, version: i64) -> Result<Option<String>, DependencyError>;
    /// Writes a new version and returns its number.
    async fn write(&self, value: &str) -> Result<i64, WriteError>;
}

#[async_trait]
pub trait GroupStatus: Send + Sync {
    /// `None` when the group does not exist.
    async fn describe(&self, group: &str) -> Result<Option<GroupState>, DependencyError>;
}
