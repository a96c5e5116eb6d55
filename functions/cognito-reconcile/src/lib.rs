//! cognito-reconcile: backfills and repairs drift of Cognito's `given_name`, `family_name` and `custom:_tenant`
//! from the users table in Postgres, the source of truth, through the same mapping and ordering guard as
//! cognito-attribute-sync.
//!
//! `handler` runs one invocation of a run over the ports of [`ports`]; [`database`] is the Postgres adapter,
//! [`cognito`]
//! the Cognito and SSM ones; [`run`] is the request, the continuation and the summary.

pub mod cognito;
pub mod config;
pub mod database;
pub mod error;
pub mod handler;
#[cfg(test)]
pub(crate) mod memory;
pub mod ports;
pub mod run;
