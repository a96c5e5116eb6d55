//! publish-history-email: emails the subscribed users of a tenant (SES) when a publish history is created.
//!
//! `handler` is plain async logic over three ports: [`subscribers::UserSource`] (who is in the pool),
//! [`mailer::Mailer`] (SES) and [`idempotency::IdempotencyStore`] (DynamoDB); their SDK adapters live beside them and
//! `main.rs` only reads the configuration, builds the clients and runs.

pub mod config;
pub mod handler;
pub mod idempotency;
pub mod mailer;
pub mod notification;
pub mod subscribers;
