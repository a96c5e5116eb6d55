//! alarm-instance-updater: while the worker fleet scales out, restricts the resource-heavy feature (background
//! removal) through an SSM parameter the application reads, and lifts the restriction once the Auto Scaling group
//! has settled.
//!
//! `trigger` turns the three kinds of input into one [`trigger::Trigger`]; `restriction` is the parameter's value and
//! the pure decision of what it becomes; `handler` runs that decision over two ports (the parameter and the group),
//! declared in `ports`, whose SDK adapters are [`ssm`] and [`autoscaling`].

pub mod autoscaling;
pub mod config;
pub mod error;
pub mod handler;
#[cfg(test)]
pub(crate) mod memory;
pub mod ports;
pub mod restriction;
pub mod ssm;
pub mod trigger;
