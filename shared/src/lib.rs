//! The common crate of the event workers. It holds only what two or more functions use.

pub mod aws;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod db_event;
pub mod dead_letter;
pub mod deadline;
pub mod dependency;
#[cfg(feature = "cognito")]
pub mod directory;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod envelope;
pub mod logging;
pub mod metrics;
pub mod ordering;
pub mod pacer;
#[cfg(feature = "ssm")]
pub mod secrets;
pub mod startup;
#[cfg(feature = "cognito")]
pub mod subscriptions;
#[cfg(feature = "unsubscribe")]
pub mod unsubscribe;
pub mod user_attributes;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;
