//! One invocation: read the parameter once, decide for each trigger, look at the group only when the decision
//! needs it, and write once at the end, only if the value changed. When another instance is writing the
//! parameter at that moment (SSM's `TooManyUpdates`), read, decide and write again after a short pause. SSM has no
//! conditional write, so the version our write got tells whether another writer wrote after our read; if one did,
//! we decide again from its version and write the result, so its change is not lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::metrics::Metrics;
use shared::startup::FunctionError;

use crate::config::Config;
use crate::ports::{GroupStatus, RestrictionStore, WriteError};
use crate::restriction::{intent, is_change, next_value, read_value, record_transition, GroupState, Intent, Restriction};
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
        // Counted once, however often the decision is made again.
        triggers.iter().for_each(|trigger| self.count(trigger));
        let mut attempt = 1;
        let mut basis: Option<Basis> = None;
        let mut first_read: Option<Option<Restriction>> = None;
        loop {
            let current = match basis.take() {
                Some(basis) => basis,
                None => self.read_basis().await?,
            };
            let outcome = self.decide_and_write(&triggers, now, &current).await;
            let before = first_read.get_or_insert_with(|| current.latest_value()).clone();
            let retry = |attempt: u32| attempt < CONTENDED_ATTEMPTS;
            match outcome {
                Err(Failure::Contended(error)) if retry(attempt) => {
                    tracing::info!(attempt, error = %error, "another writer is updating the parameter; deciding again");
                    tokio::time::sleep(contended_pause(attempt)).await;
                    // Refused while undoing an overtaken write: the latest is still ours unless someone wrote since,
                    // so decide again from theirs; otherwise from what is there now.
                    if current.decide_from != current.latest {
                        let latest = self.parameter.read().await.map_err(unavailable)?;
                        if latest.is_some_and(|l| l.version == current.latest_version) {
                            basis = Some(current);
                        }
                    }
                }
                Err(Failure::Contended(error)) => return Err(unavailable(error)),
                Err(Failure::Other(error)) => return Err(error),
                Ok(Decided::Overtaken { ours, version, .. }) if retry(attempt) => {
                    // Another instance wrote between our read and our write, and ours overwrote it: decide again
                    // from what it wrote, so its change is not lost (a stale lift over a fresh restriction).
                    tracing::info!(attempt, version, "another writer wrote after our read; deciding again from its version");
                    self.metrics.count("WritesOvertaken", 1);
                    let theirs = self.parameter.read_version(version - 1).await.map_err(unavailable)?;
                    basis = Some(Basis { decide_from: theirs, latest: Some(ours), latest_version: version });
                }
                Ok(Decided::Overtaken { summary, .. } | Decided::Done(summary)) => return Ok(Summary { before, ..summary }),
            }
            attempt += 1;
        }
    }

    async fn read_basis(&self) -> Result<Basis, FunctionError> {
        let stored = self.parameter.read().await.map_err(unavailable)?;
        Ok(match stored {
            Some(stored) => Basis { decide_from: Some(stored.value.clone()), latest: Some(stored.value), latest_version: stored.version },
            None => Basis { decide_from: None, latest: None, latest_version: 0 },
        })
    }

    async fn decide_and_write(&self, triggers: &[Trigger], now: DateTime<Utc>, basis: &Basis) -> Result<Decided, Failure> {
        let (from, warning) = read_value(basis.decide_from.as_deref());
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let latest = basis.latest_value();
        let mut state = from.clone();
        let mut group: Option<Option<GroupState>> = None;
        let mut steps = Vec::new();
        for trigger in triggers {
            let wanted = intent(state.as_ref(), trigger, now, &self.config);
            // The group is described at most once, and only for a decision that needs it.
            if !matches!(wanted, Intent::Nothing { .. }) && group.is_none() {
                group = Some(self.groups.describe(&self.config.autoscaling_group_name).await.map_err(unavailable)?);
            }
            let (next, why) = next_value(state.as_ref(), &wanted, group.flatten().as_ref(), now, &self.config);
            let next = record_transition(state.as_ref(), next, trigger, &self.config);
            tracing::info!(trigger = %trigger.describe(), why = %why, "decision");
            steps.push(Step { trigger: trigger.describe(), why });
            if let Some(next) = next {
                if is_change(state.as_ref(), &next) {
                    state = Some(next);
                }
            }
        }
        // Compared with the latest version, which after an overtaken write is our own.
        let written = state != latest && state.as_ref().is_some_and(|next| is_change(latest.as_ref(), next));
        if !written {
            return Ok(Decided::Done(Summary { after: latest.clone(), before: latest, written, steps }));
        }
        let value = state.as_ref().expect("a change has a value");
        let json = value.to_json();
        let version = self.parameter.write(&json).await.map_err(|e| match e {
            WriteError::Contended(message) => Failure::Contended(message),
            WriteError::Failed(message) => Failure::Other(unavailable(message)),
        })?;
        self.metrics.count(if value.restricted { "RestrictionsWritten" } else { "RestrictionsLifted" }, 1);
        tracing::info!(restricted = value.restricted, expires_at = ?value.expires_at, version, "restriction parameter written");
        let summary = Summary { before: latest, after: state.clone(), written, steps };
        if version > basis.latest_version + 1 {
            return Ok(Decided::Overtaken { summary, ours: json, version });
        }
        Ok(Decided::Done(summary))
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

/// What a decision starts from: the value to decide from, and the latest version (the same, unless our last write
/// overtook another writer's: then we decide from theirs, and the latest is ours).
#[derive(Clone)]
struct Basis {
    decide_from: Option<String>,
    latest: Option<String>,
    latest_version: i64,
}

impl Basis {
    fn latest_value(&self) -> Option<Restriction> {
        read_value(self.latest.as_deref()).0
    }
}

enum Decided {
    Done(Summary),
    /// Written, but another writer wrote between our read and our write (its version lies between).
    Overtaken {
        summary: Summary,
        ours: String,
        version: i64,
    },
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
