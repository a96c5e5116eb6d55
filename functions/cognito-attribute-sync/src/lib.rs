//! cognito-attribute-sync: keeps Cognito `given_name`, `family_name` and `custom:_tenant` in sync with the user
//! rows in Postgres, fed by the database-event topic through an SQS queue.
//!
//! `handler` is plain async logic over the ports of [`ports`]; [`cognito`] and [`queue`] hold their SDK adapters;
//! `main.rs` only reads the configuration, builds the clients and runs.

pub mod cognito;
pub mod config;
pub mod error;
pub mod hand_on;
pub mod handler;
pub mod ports;
pub mod queue;
