//! How the function's calls fail, each saying whether trying again helps, and what becomes of the record:
//! [`DirectoryError`] for Cognito (a user not in the pool is retried for `USER_NOT_FOUND_RETRY_SECONDS`, a
//! rejected value makes the record poison, an unavailable pool brings it back), [`GuardError`] for the ordering
//! guard (a lost lease means the change is applied again), [`DependencyError`] for handing the rest of a record on.

pub use shared::dependency::DependencyError;
pub use shared::directory::DirectoryError;
pub use shared::ordering::GuardError;
