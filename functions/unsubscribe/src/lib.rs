//! unsubscribe: the one-click unsubscribe endpoint (RFC 8058) of the publish-history email, behind a Lambda
//! Function URL. `handler` is the behaviour over the subscription port it shares with ses-feedback
//! (`shared::subscriptions`, whose Cognito adapter it runs with).

pub mod config;
pub mod error;
pub mod handler;
