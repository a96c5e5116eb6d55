//! The two ports of the handler.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::config::LifecycleResult;
pub use crate::error::DependencyError;
use crate::event::LifecycleAction;

/// The result of one health check of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Not healthy yet: the command failed or timed out, the application not answering.
    NotYet(String),
    /// The instance is not registered with SSM (yet): no command can reach it. Says nothing of the application;
    /// an instance that never registers points at the agent, the instance profile or the VPC endpoint.
    NotRegistered,
    /// The check was cut short by the deadline before its command gave a result: says nothing about the instance.
    NoResultInTime(String),
}

#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// Runs the health check on the instance; gives up waiting for the command's result at `deadline`. `Err` is a
    /// failure that says nothing about the instance (access denied, throttling after the SDK's retries, a missing
    /// document): no verdict may rest on it.
    async fn check(&self, instance_id: &str, deadline: Instant) -> Result<Health, DependencyError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Completed,
    /// "No active Lifecycle Action found": already completed, timed out, or this is a redelivered event.
    NoActiveAction,
}

/// What the function needs of the lifecycle hook's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub heartbeat_timeout: Option<Duration>,
    /// What Auto Scaling does when the hook lapses.
    pub default_result: Option<LifecycleResult>,
}

#[async_trait]
pub trait LifecycleActions: Send + Sync {
    /// The hook's definition (`None` when the hook cannot be found).
    async fn hook(&self, group: &str, hook: &str) -> Result<Option<Hook>, DependencyError>;
    async fn record_heartbeat(&self, action: &LifecycleAction) -> Result<Completion, DependencyError>;
    async fn complete(&self, action: &LifecycleAction, result: LifecycleResult) -> Result<Completion, DependencyError>;
}
