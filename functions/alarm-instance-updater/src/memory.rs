//! The ports in memory, for the handler tests: the parameter as SSM keeps it (every write a new version, old versions
//! readable, `TooManyUpdates` and another writer's write between our read and ours on demand), and the group's
//! state, each description counted.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::{DependencyError, GroupStatus, RestrictionStore, Stored, WriteError};
use crate::restriction::GroupState;

#[derive(Default)]
pub struct MemoryParameter {
    /// Every version's value: version `n` is `versions[n - 1]`.
    pub versions: Mutex<Vec<String>>,
    /// The next this many writes are refused as SSM refuses a write during another's (`TooManyUpdates`).
    pub contended: Mutex<u32>,
    /// Written by "another instance" just before our next write lands, once.
    pub written_meanwhile: Mutex<Option<String>>,
}

impl MemoryParameter {
    pub fn latest(&self) -> Option<String> {
        self.versions.lock().unwrap().last().cloned()
    }

    pub fn version_count(&self) -> usize {
        self.versions.lock().unwrap().len()
    }
}

#[async_trait]
impl RestrictionStore for MemoryParameter {
    async fn read(&self) -> Result<Option<Stored>, DependencyError> {
        let versions = self.versions.lock().unwrap();
        Ok(versions.last().map(|value| Stored {
            value: value.clone(),
            version: versions.len() as i64,
        }))
    }

    async fn read_version(&self, version: i64) -> Result<Option<String>, DependencyError> {
        Ok(usize::try_from(version - 1)
            .ok()
            .and_then(|i| self.versions.lock().unwrap().get(i).cloned()))
    }

    async fn write(&self, value: &str) -> Result<i64, WriteError> {
        let mut contended = self.contended.lock().unwrap();
        if *contended > 0 {
            *contended -= 1;
            return Err(WriteError::Contended("TooManyUpdates: concurrent updates".into()));
        }
        let mut versions = self.versions.lock().unwrap();
        if let Some(theirs) = self.written_meanwhile.lock().unwrap().take() {
            versions.push(theirs);
        }
        versions.push(value.to_owned());
        Ok(versions.len() as i64)
    }
}

#[derive(Default)]
pub struct MemoryGroups {
    pub state: Mutex<Option<GroupState>>,
    pub described: Mutex<usize>,
}

#[async_trait]
impl GroupStatus for MemoryGroups {
    async fn describe(&self, _group: &str) -> Result<Option<GroupState>, DependencyError> {
        *self.described.lock().unwrap() += 1;
        Ok(*self.state.lock().unwrap())
    }
}

#[async_trait]
impl<T: RestrictionStore> RestrictionStore for std::sync::Arc<T> {
    async fn read(&self) -> Result<Option<Stored>, DependencyError> {
        (**self).read().await
    }
    async fn read_version(&self, version: i64) -> Result<Option<String>, DependencyError> {
        (**self).read_version(version).await
    }
    async fn write(&self, value: &str) -> Result<i64, WriteError> {
        (**self).write(value).await
    }
}

#[async_trait]
impl<T: GroupStatus> GroupStatus for std::sync::Arc<T> {
    async fn describe(&self, group: &str) -> Result<Option<GroupState>, DependencyError> {
        (**self).describe(group).await
    }
}
