//! One invocation: read the parameter once, decide for each trigger, look at the group only when the decision
//! needs it, and write once at the end, only if the value changed. When another instance is writing the
//! parameter at that moment (SSM's `TooManyUpdates`), read, decide and write again after a short pause.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::metrics::Metrics;
use shared::startup::FunctionError;

use crate::config::Config;
use crate::ports::{GroupStatus, RestrictionStore, WriteError};
use crate::restriction::{intent, is_change, next_value, read_value, GroupState, Intent, Restriction};
use crate::trigger::{parse, Trigger};

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub trigger: String,
    pub why: String,
}

/// What the function returns: the state before and after, and why.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub before: Option<Restriction>,
    pub after: Option<Restriction>,
    pub written: bool,
    pub steps: Vec<Step>,
}

pub struct Updater<P, G> {
    parameter: P,
    groups: G,
    config: Config,
    metrics: Arc<Metrics>,
}

impl<P: RestrictionStore, G: GroupStatus> Updater<P, G> {
    pub fn new(parameter: P, groups: G, config: Config, metrics: Arc<Metrics>) -> Self {
        Self { parameter, groups, config, metrics }
    }

    /// An error fails the invocation, so SNS / EventBridge / the alarm's asynchronous invocation retries it and,
    /// after the retries, hands it to the function's failure destination: nothing is lost.
    pub async fn handle(&self, payload: &Value, now: DateTime<Utc>) -> Result<Summary, FunctionError> {
        let triggers = parse(payload).map_err(|e| FunctionError::new("MalformedEvent", e))?;
        let mut attempt = 1;
        loop {
            match self.decide_and_write(&triggers, now).await {
                Err(Failure::Contended(error)) if attempt < CONTENDED_ATTEMPTS => {
                    tracing::info!(attempt, error = %error, "another writer is updating the parameter; deciding again");
                    tokio::time::sleep(contended_pause(attempt)).await;
                    attempt += 1;
                }
                Err(Failure::Contended(error)) => return Err(unavailable(error)),
                Err(Failure::Other(error)) => return Err(error),
                Ok(summary) => return Ok(summary),
            }
        }
    }

    async fn decide_and_write(&self, triggers: &[Trigger], now: DateTime<Utc>) -> Result<Summary, Failure> {
        let raw = self.parameter.read().await.map_err(unavailable)?;
        let (before, warning) = read_value(raw.as_deref());
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let mut state = before.clone();
        let mut group: Option<Option<GroupState>> = None;
        let mut steps = Vec::new();
        for trigger in triggers {
            let wanted = intent(state.as_ref(), trigger, now, &self.config);
            // The group is described at most once, and only for a decision that needs it.
            if !matches!(wanted, Intent::Nothing { .. }) && group.is_none() {
                group = Some(self.groups.describe(&self.config.autoscaling_group_name).await.map_err(unavailable)?);
            }
            let (next, why) = next_value(state.as_ref(), &wanted, group.flatten().as_ref(), now, &self.config);
            tracing::info!(trigger = %trigger.describe(), why = %why, "decision");
            self.count(trigger);
            steps.push(Step { trigger: trigger.describe(), why });
            if let Some(next) = next {
                if is_change(state.as_ref(), &next) {
                    state = Some(next);
                }
            }
        }
        let written = state != before && state.as_ref().is_some_and(|next| is_change(before.as_ref(), next));
        if written {
            let value = state.as_ref().expect("a change has a value");
            self.parameter.write(&value.to_json()).await.map_err(|e| match e {
                WriteError::Contended(message) => Failure::Contended(message),
                WriteError::Failed(message) => Failure::Other(unavailable(message)),
            })?;
            self.metrics.count(if value.restricted { "RestrictionsWritten" } else { "RestrictionsLifted" }, 1);
            tracing::info!(restricted = value.restricted, expires_at = ?value.expires_at, "restriction parameter written");
        }
        let after = if written { state } else { before.clone() };
        Ok(Summary { before, after, written, steps })
    }

    fn count(&self, trigger: &Trigger) {
        self.metrics.count(
            match trigger {
                Trigger::Alarm { .. } => "AlarmNotifications",
                Trigger::Launch { .. } => "LaunchEvents",
                Trigger::Ignored(_) => "EventsIgnored",
            },
            1,
        );
    }
}

/// Tries of one invocation against a parameter another instance keeps writing; then Lambda's retry takes over.
const CONTENDED_ATTEMPTS: u32 = 5;

enum Failure {
    Contended(String),
    Other(FunctionError),
}

impl From<FunctionError> for Failure {
    fn from(error: FunctionError) -> Self {
        Failure::Other(error)
    }
}

/// 200 ms, 400 ms, ... jittered, so two contending instances do not meet again.
fn contended_pause(attempt: u32) -> Duration {
    shared::backoff::jittered(Duration::from_millis(400), attempt, Duration::from_secs(2))
}

fn unavailable(error: String) -> FunctionError {
    FunctionError::new("DependencyUnavailable", error)
}
