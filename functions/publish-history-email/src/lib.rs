//! publish-history-email: emails the subscribed users of a tenant (SES) when a publish history is created.
//!
//! `handler` takes a batch from either queue and decides: email a small row at once, fan a large one out, go on with
//! a handed-on task. Its parts: [`recipients`] (who, and the listing's cache), [`fanout`] (chunks and continuations
//! on the function's own queue), [`delivery`] (once-only claims and the send), [`send_rate`] (the account's rate
//! shared by the instances), [`idempotency`] (the once-only records), [`deadline`] (the invocation's time).
//! [`ports`] are the traits the handler works over; one SDK adapter per file: [`cognito`], [`ses`], [`sqs`],
//! `idempotency::dynamodb` and `send_rate::dynamodb`. `main.rs` only reads the configuration, builds the clients
//! and runs.

pub mod cognito;
pub mod config;
pub mod deadline;
pub mod delivery;
pub mod error;
pub mod fanout;
pub mod handler;
pub mod idempotency;
pub mod mime;
pub mod notification;
pub mod ports;
pub mod recipients;
pub mod send_rate;
pub mod ses;
pub mod sqs;
