//! How the function's one dependency fails: the pool, through `shared::subscriptions`, with [`DirectoryError`]. An
//! unavailable pool brings the record back for a later try; a user deleted between finding and writing is nobody
//! left to email, so the record succeeds; a malformed notification is poison (`shared::batch::RecordError`).

pub use shared::directory::DirectoryError;
