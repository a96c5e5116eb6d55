//! unsubscribe: the one-click unsubscribe endpoint (RFC 8058) of the publish-history email, behind a Lambda
//! Function URL. `handler` is the behaviour over the port of [`ports`]; [`aws`] is its Cognito adapter.

pub mod aws;
pub mod config;
pub mod handler;
pub mod ports;
