//! How the function's calls fail: [`DependencyError`] (shared by all the functions), whose variants say whether
//! trying again helps. A health check that fails for such a reason says nothing about the instance, so no verdict
//! rests on it; the invocation fails and EventBridge's retry brings the action back.

pub use shared::dependency::DependencyError;
