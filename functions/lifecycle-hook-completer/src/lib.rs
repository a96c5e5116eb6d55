//! lifecycle-hook-completer: completes the launch lifecycle action of a new worker instance from outside, as soon as
//! its application answers its health check (run on the instance through SSM Run Command), so a broken instance
//! never receives traffic.
//!
//! `event` reads the lifecycle action from EventBridge, SNS or SQS; `handler` is the check-and-complete loop over
//! two ports ([`ports::HealthProbe`], [`ports::LifecycleActions`]) whose SDK adapters are [`ssm`] and [`autoscaling`].

pub mod autoscaling;
pub mod config;
pub mod error;
pub mod event;
pub mod handler;
pub mod ports;
pub mod ssm;
