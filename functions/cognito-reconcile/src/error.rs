//! How the function's calls fail. [`DirectoryError`] (shared with cognito-attribute-sync) says of each Cognito
//! failure whether it can pass later: a throttled write is tried again within the run, a refused one is counted as
//! failed and left for the next run. [`DatabaseError`] ends the invocation with `DatabaseError`: a connection, a
//! query or the table's shape failed, and the run is started again (by the state machine's retry, or by hand).
//! The ordering guard's own errors are `shared::ordering::GuardError`.

pub use shared::directory::DirectoryError;

/// The users table could not be read: the invocation fails, and its run is started again from its continuation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DatabaseError(pub String);
