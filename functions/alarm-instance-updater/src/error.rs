//! How the function's calls fail, each variant saying whether trying again helps: [`DependencyError`] (shared by
//! all the functions) for reading the parameter and describing the group, and [`WriteError`] for writing the
//! parameter, where another writer's update in progress means reading and deciding again.

pub use shared::dependency::DependencyError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Another writer is updating the parameter right now (SSM's `TooManyUpdates`): what it wrote may change the
    /// decision, so read again and decide again.
    #[error("{0}")]
    Contended(String),
    #[error("{0}")]
    Failed(DependencyError),
}
