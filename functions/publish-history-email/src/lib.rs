//! publish-history-email: emails the subscribed users of a tenant (SES) when a publish history is created.
//!
//! `handler` is plain async logic over the ports of [`ports`] (who is in the pool, sending, the once-only records);
//! [`aws`] holds their SDK adapters (Cognito, SES, DynamoDB) and `main.rs` only reads the configuration, builds the
//! clients and runs.

pub mod aws;
pub mod config;
pub mod handler;
pub mod idempotency;
pub mod mime;
pub mod notification;
pub mod ports;
pub mod retry;
pub mod subscribers;
