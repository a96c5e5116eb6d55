//! How the function's one dependency fails: the pool, through `shared::subscriptions`, with [`DirectoryError`]. Any
//! failure answers 503, which a mailbox provider's one-click POST retries; a link the pool no longer knows answers
//! 200, as there is nobody left to email.

pub use shared::directory::DirectoryError;
