//! publish-history-email: emails the subscribed users of a tenant (SES) when a publish history is created.
//!
//! `handler` takes a batch from either queue and decides: email a small row at once, fan a large one out, go on with
//! a handed-on task. Its parts: [`recipients`] (who, and the listing's cache), [`fanout`] (chunks and continuations
//! on the function's own queue), [`delivery`] (the shared send rate, once-only claims, the send). [`ports`] are the
//! traits they work over; [`aws`] holds their SDK adapters, and `main.rs` only reads the configuration, builds the
//! clients and runs.

pub mod aws;
pub mod config;
pub mod delivery;
pub mod fanout;
pub mod handler;
pub mod idempotency;
pub mod mime;
pub mod notification;
pub mod ports;
pub mod recipients;
