//! ses-feedback: unsubscribes from the publish-history email every recipient SES reports as complaining (any
//! feedback type but `not-spam`) or as bouncing permanently, fed by the configuration set's feedback topic through
//! an SQS queue.
//!
//! `feedback` reads both formats SES publishes; `handler` is plain async logic over the subscription port it shares
//! with unsubscribe (`shared::subscriptions`, whose Cognito adapter it runs with); `main.rs` only reads the
//! configuration, builds the clients and runs.

pub mod config;
pub mod error;
pub mod feedback;
pub mod handler;
