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
use crate::restriction::{
    intent, is_change, next_value, read_value, record_transition, GroupState, Intent, Restriction,
};
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
        Self {
            parameter,
            groups,
            config,
            metrics,
        }
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
                    tracing::info!(
                        attempt,
                        version,
                        "another writer wrote after our read; deciding again from its version"
                    );
                    self.metrics.count("WritesOvertaken", 1);
                    let theirs = self.parameter.read_version(version - 1).await.map_err(unavailable)?;
                    basis = Some(Basis {
                        decide_from: theirs,
                        latest: Some(ours),
                        latest_version: version,
                    });
                }
                Ok(Decided::Overtaken { summary, .. } | Decided::Done(summary)) => {
                    return Ok(Summary { before, ..summary })
                }
            }
            attempt += 1;
        }
    }

    async fn read_basis(&self) -> Result<Basis, FunctionError> {
        let stored = self.parameter.read().await.map_err(unavailable)?;
        Ok(match stored {
            Some(stored) => Basis {
                decide_from: Some(stored.value.clone()),
                latest: Some(stored.value),
                latest_version: stored.version,
            },
            None => Basis {
                decide_from: None,
                latest: None,
                latest_version: 0,
            },
        })
    }

    async fn decide_and_write(
        &self,
        triggers: &[Trigger],
        now: DateTime<Utc>,
        basis: &Basis,
    ) -> Result<Decided, Failure> {
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
                group = Some(
                    self.groups
                        .describe(&self.config.autoscaling_group_name)
                        .await
                        .map_err(unavailable)?,
                );
            }
            let (next, why) = next_value(state.as_ref(), &wanted, group.flatten().as_ref(), now, &self.config);
            let next = record_transition(state.as_ref(), next, trigger, &self.config);
            tracing::info!(trigger = %trigger.describe(), why = %why, "decision");
            steps.push(Step {
                trigger: trigger.describe(),
                why,
            });
            if let Some(next) = next {
                if is_change(state.as_ref(), &next) {
                    state = Some(next);
                }
            }
        }
        // Compared with the latest version, which after an overtaken write is our own.
        let written = state != latest && state.as_ref().is_some_and(|next| is_change(latest.as_ref(), next));
        if !written {
            return Ok(Decided::Done(Summary {
                after: latest.clone(),
                before: latest,
                written,
                steps,
            }));
        }
        let value = state.as_ref().expect("a change has a value");
        let json = value.to_json();
        let version = self.parameter.write(&json).await.map_err(|e| match e {
            WriteError::Contended(message) => Failure::Contended(message),
            WriteError::Failed(message) => Failure::Other(unavailable(message)),
        })?;
        self.metrics.count(
            if value.restricted {
                "RestrictionsWritten"
            } else {
                "RestrictionsLifted"
            },
            1,
        );
        tracing::info!(restricted = value.restricted, expires_at = ?value.expires_at, version, "restriction parameter written");
        let summary = Summary {
            before: latest,
            after: state.clone(),
            written,
            steps,
        };
        if version > basis.latest_version + 1 {
            return Ok(Decided::Overtaken {
                summary,
                ours: json,
                version,
            });
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

fn unavailable(error: impl std::fmt::Display) -> FunctionError {
    FunctionError::new("DependencyUnavailable", error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryGroups, MemoryParameter};
    use crate::restriction::read_value;
    use chrono::TimeZone;

    const ALARM: &str = include_str!("../../../events/alarm-instance-updater/sns-alarm-cpu-high.json");
    const OK: &str = include_str!("../../../events/alarm-instance-updater/sns-ok-cpu-high.json");
    const DISK_FULL: &str = include_str!("../../../events/alarm-instance-updater/sns-alarm-disk-full.json");
    const LAUNCHED: &str = include_str!("../../../events/alarm-instance-updater/eventbridge-launch-successful.json");

    fn event(text: &str) -> Value {
        serde_json::from_str(text).expect("a sample event")
    }

    /// A minute after the sample alarm's state change (10:01:30).
    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, minute, 0).unwrap()
    }

    type TestUpdater = Updater<Arc<MemoryParameter>, Arc<MemoryGroups>>;

    fn updater() -> (TestUpdater, Arc<MemoryParameter>, Arc<MemoryGroups>) {
        let (parameter, groups) = (Arc::new(MemoryParameter::default()), Arc::new(MemoryGroups::default()));
        let config = Config {
            restriction_parameter: "/bg-removal/restriction".into(),
            autoscaling_group_name: "workers".into(),
            restrict_on_alarms: Some(vec!["cpu_high".into()]),
            restriction_max: Duration::from_secs(900),
        };
        let updater = Updater::new(
            parameter.clone(),
            groups.clone(),
            config,
            Arc::new(Metrics::new("Test", "alarm-instance-updater")),
        );
        (updater, parameter, groups)
    }

    fn restricted(parameter: &MemoryParameter) -> bool {
        read_value(parameter.latest().as_deref())
            .0
            .is_some_and(|r| r.restricted)
    }

    #[tokio::test]
    async fn the_alarm_restricts_and_its_ok_lifts_only_once_the_group_has_settled() {
        let (updater, parameter, groups) = updater();
        *groups.state.lock().unwrap() = Some(GroupState {
            desired: 3,
            in_service: 2,
            pending: 1,
        });
        let summary = updater.handle(&event(ALARM), at(2)).await.unwrap();
        assert!(summary.written && restricted(&parameter), "{summary:?}");

        let summary = updater.handle(&event(OK), at(9)).await.unwrap();
        assert!(
            restricted(&parameter),
            "lifted while an instance is still launching: {summary:?}"
        );
        let again = updater.handle(&event(OK), at(10)).await.unwrap();
        assert!(
            !again.written && restricted(&parameter),
            "a repeated OK decides nothing: {again:?}"
        );

        // The last launch finishes: the group has settled and the alarm is OK.
        *groups.state.lock().unwrap() = Some(GroupState {
            desired: 3,
            in_service: 3,
            pending: 0,
        });
        let summary = updater.handle(&event(LAUNCHED), at(11)).await.unwrap();
        assert!(summary.written && !restricted(&parameter), "{summary:?}");
    }

    #[tokio::test]
    async fn an_alarm_not_named_to_restrict_reads_once_describes_nothing_and_writes_nothing() {
        let (updater, parameter, groups) = updater();
        let summary = updater.handle(&event(DISK_FULL), at(2)).await.unwrap();
        assert!(!summary.written, "{summary:?}");
        assert_eq!((parameter.version_count(), *groups.described.lock().unwrap()), (0, 0));
    }

    #[tokio::test]
    async fn a_replayed_alarm_writes_nothing_new() {
        let (updater, parameter, groups) = updater();
        *groups.state.lock().unwrap() = Some(GroupState {
            desired: 3,
            in_service: 2,
            pending: 1,
        });
        updater.handle(&event(ALARM), at(2)).await.unwrap();
        let versions = parameter.version_count();
        let summary = updater.handle(&event(ALARM), at(2)).await.unwrap();
        assert!(!summary.written, "{summary:?}");
        assert_eq!(parameter.version_count(), versions);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_refused_while_another_instance_writes_is_decided_again_and_lands() {
        let (updater, parameter, groups) = updater();
        *groups.state.lock().unwrap() = Some(GroupState {
            desired: 3,
            in_service: 2,
            pending: 1,
        });
        *parameter.contended.lock().unwrap() = 2;
        let summary = updater.handle(&event(ALARM), at(2)).await.unwrap();
        assert!(summary.written && restricted(&parameter));
        assert_eq!(*parameter.contended.lock().unwrap(), 0, "both refusals met");
    }

    #[tokio::test(start_paused = true)]
    async fn a_parameter_refused_every_time_fails_the_invocation_for_lambdas_retry() {
        let (updater, parameter, groups) = updater();
        *groups.state.lock().unwrap() = Some(GroupState {
            desired: 3,
            in_service: 2,
            pending: 1,
        });
        *parameter.contended.lock().unwrap() = u32::MAX;
        let error = updater.handle(&event(ALARM), at(2)).await.unwrap_err();
        assert!(format!("{error:?}").contains("DependencyUnavailable"), "{error:?}");
        assert_eq!(parameter.version_count(), 0);
    }

    /// Another instance lifted the restriction between our read and our write of a fresh one: ours landed on top
    /// of theirs, the decision made again from theirs still restricts, and nothing more is written.
    #[tokio::test]
    async fn a_write_landing_on_another_instances_lift_keeps_the_alarms_restriction() {
        let (updater, parameter, groups) = updater();
        *groups.state.lock().unwrap() = Some(GroupState {
            desired: 3,
            in_service: 2,
            pending: 1,
        });
        let lifted = r#"{"restricted":false,"reason":"lifted by another instance"}"#;
        *parameter.written_meanwhile.lock().unwrap() = Some(lifted.into());
        updater.handle(&event(ALARM), at(2)).await.unwrap();
        assert_eq!(
            parameter.version_count(),
            2,
            "theirs, then ours: {:?}",
            parameter.versions.lock().unwrap()
        );
        assert_eq!(
            parameter.versions.lock().unwrap()[0],
            lifted,
            "the other instance's write came first"
        );
        assert!(
            restricted(&parameter),
            "the alarm's restriction was lost: {:?}",
            parameter.latest()
        );
    }
}
