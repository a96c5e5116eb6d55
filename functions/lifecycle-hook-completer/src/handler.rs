//! Check the instance until healthy, then complete its lifecycle action; at the deadline, complete it with
//! `ON_UNHEALTHY`. Heartbeats keep the hook from lapsing first when the deadline lies beyond its timeout, and the
//! invocation always ends with a verdict: it acts before its own deadline rather than be cut off.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::metrics::Metrics;
use shared::startup::FunctionError;
use tokio::time::Instant;

use crate::config::{Config, LifecycleResult, OnNotRegistered};
use crate::event::{parse, Delivery, LifecycleAction, LAUNCHING};
use crate::ports::{Completion, DependencyError, Health, HealthProbe, LifecycleActions};

/// A heartbeat is recorded when the hook would otherwise lapse within this margin (plus one check interval).
pub const HEARTBEAT_MARGIN: Duration = Duration::from_secs(30);
/// How long a check may wait for its command's result, even when the event arrives after its deadline (a late
/// redelivery or retry gets a real check, never a verdict without evidence), within the invocation's own deadline:
/// SSM's own timeout of the command, and a last poll.
pub const RESULT_WAIT: Duration = Duration::from_secs(crate::ssm::COMMAND_TIMEOUT_SECONDS as u64 + 5);
/// Kept back from the invocation's deadline to complete the action and answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// The warning for a function timeout too short for the health check deadline: the action would then be decided when
/// the invocation ends, before the application had all its time. `remaining` is the first invocation's time left.
pub fn timeout_warning(remaining: Duration, config: &Config) -> Option<String> {
    let needed = config.healthcheck_deadline + DEADLINE_MARGIN + RESULT_WAIT;
    (remaining + Duration::from_secs(1) < needed).then(|| {
        format!(
            "the function timeout ({} s) is shorter than HEALTHCHECK_DEADLINE_SECONDS ({} s) plus {} s: instances are judged when the invocation ends, not at the deadline",
            remaining.as_secs(),
            config.healthcheck_deadline.as_secs(),
            (DEADLINE_MARGIN + RESULT_WAIT).as_secs()
        )
    })
}

/// What the function answers: the outcome of its one action, or `{"results": [...]}` for several.
pub fn summary(mut outcomes: Vec<Outcome>) -> Value {
    match outcomes.len() {
        1 => serde_json::to_value(outcomes.remove(0)).unwrap_or_default(),
        _ => serde_json::json!({ "results": outcomes }),
    }
}

/// What the function returns for each lifecycle action.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub instance: Option<String>,
    pub group: Option<String>,
    /// `CONTINUE`, `ABANDON`, or `NONE` when nothing was completed.
    pub result: String,
    /// Whether this invocation completed the action (false when Auto Scaling had no active action any more).
    pub completed: bool,
    pub attempts: u32,
    pub heartbeats: u32,
    pub elapsed_seconds: f64,
    pub reason: String,
}

/// How checking ends.
enum Verdict {
    Complete(LifecycleResult, String),
    /// The action went away while we waited (a heartbeat found no active action): nothing left to complete.
    Gone(String),
}

pub struct Completer<P, L> {
    probe: P,
    lifecycle: L,
    config: Config,
    metrics: Arc<Metrics>,
}

fn to_instant(at: DateTime<Utc>, now: DateTime<Utc>) -> Instant {
    let ahead = (at - now).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + ahead
}

impl<P: HealthProbe, L: LifecycleActions> Completer<P, L> {
    pub fn new(probe: P, lifecycle: L, config: Config, metrics: Arc<Metrics>) -> Self {
        Self {
            probe,
            lifecycle,
            config,
            metrics,
        }
    }

    /// `now` is the wall clock at the start; `act_by` the invocation's deadline less a margin.
    /// An error fails the invocation, so EventBridge / SNS retry it and the failure destination keeps it: a
    /// completion that could not be sent, or a health check that could not be run (that says nothing of the instance).
    pub async fn handle(
        &self,
        payload: &Value,
        now: DateTime<Utc>,
        act_by: Instant,
    ) -> Result<Vec<Outcome>, FunctionError> {
        let deliveries = parse(payload, now).map_err(|e| FunctionError::new("MalformedEvent", e))?;
        let mut outcomes = Vec::new();
        for delivery in deliveries {
            let outcome = match delivery {
                Delivery::TestNotification => {
                    tracing::info!("test notification; acknowledged");
                    self.metrics.count("TestNotifications", 1);
                    Outcome {
                        instance: None,
                        group: None,
                        result: "NONE".into(),
                        completed: false,
                        attempts: 0,
                        heartbeats: 0,
                        elapsed_seconds: 0.0,
                        reason: "autoscaling:TEST_NOTIFICATION".into(),
                    }
                }
                Delivery::Action { action, time } => self.handle_action(&action, time, now, act_by).await?,
            };
            tracing::info!(outcome = %serde_json::to_string(&outcome).unwrap_or_default(), "lifecycle action handled");
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn handle_action(
        &self,
        action: &LifecycleAction,
        event_time: DateTime<Utc>,
        now: DateTime<Utc>,
        act_by: Instant,
    ) -> Result<Outcome, FunctionError> {
        let started = Instant::now();
        let mut outcome = Outcome {
            instance: Some(action.ec2_instance_id.clone()),
            group: Some(action.auto_scaling_group_name.clone()),
            result: "NONE".into(),
            completed: false,
            attempts: 0,
            heartbeats: 0,
            elapsed_seconds: 0.0,
            reason: String::new(),
        };
        if action.lifecycle_transition != LAUNCHING {
            outcome.reason = format!("transition {} is not a launch; left alone", action.lifecycle_transition);
            self.metrics.count("ActionsIgnored", 1);
            return Ok(outcome);
        }
        let verdict = if action.is_warm_pool() {
            Verdict::Complete(
                LifecycleResult::Continue,
                "launching into the warm pool: no application to check".to_owned(),
            )
        } else {
            self.check_until_verdict(action, event_time, now, act_by, &mut outcome)
                .await?
        };
        let (verdict, reason) = match verdict {
            Verdict::Complete(verdict, reason) => (verdict, reason),
            Verdict::Gone(reason) => {
                outcome.reason = reason;
                outcome.elapsed_seconds = started.elapsed().as_secs_f64();
                return Ok(outcome);
            }
        };
        outcome.result = verdict.as_str().into();
        outcome.completed = match self
            .lifecycle
            .complete(action, verdict)
            .await
            .map_err(lifecycle_failed)?
        {
            Completion::Completed => true,
            Completion::NoActiveAction => {
                tracing::info!(instance = %action.ec2_instance_id, "no active lifecycle action: already completed, timed out, or a redelivered event");
                false
            }
        };
        outcome.reason = if outcome.completed {
            reason
        } else {
            format!("{reason}; no active lifecycle action any more")
        };
        outcome.elapsed_seconds = started.elapsed().as_secs_f64();
        self.metrics.count(
            if verdict == LifecycleResult::Continue {
                "InstancesContinued"
            } else {
                "InstancesAbandoned"
            },
            1,
        );
        Ok(outcome)
    }

    async fn check_until_verdict(
        &self,
        action: &LifecycleAction,
        event_time: DateTime<Utc>,
        now: DateTime<Utc>,
        act_by: Instant,
        outcome: &mut Outcome,
    ) -> Result<Verdict, FunctionError> {
        let deadline_at = event_time + chrono::Duration::from_std(self.config.healthcheck_deadline).unwrap_or_default();
        let health_deadline = to_instant(deadline_at, now);
        let stop_at = health_deadline.min(act_by);
        let hook = match self
            .lifecycle
            .hook(&action.auto_scaling_group_name, &action.lifecycle_hook_name)
            .await
        {
            Ok(hook) => hook,
            Err(error) => {
                tracing::warn!(error = %error, "could not read the lifecycle hook; no heartbeats, and its default result unknown");
                None
            }
        };
        let heartbeat_timeout = hook.and_then(|h| h.heartbeat_timeout);
        // When the hook lapses (and Auto Scaling applies its default result) unless a heartbeat is recorded.
        let mut lapses_at = heartbeat_timeout.map(|timeout| {
            to_instant(
                event_time + chrono::Duration::from_std(timeout).unwrap_or_default(),
                now,
            )
        });
        let interval = self.config.healthcheck_interval;
        // The last thing a check said about the instance; a check cut short by the deadline says nothing.
        let mut last = String::new();
        let mut evidence = false;
        let mut unregistered = false;
        loop {
            outcome.attempts += 1;
            // A check waits for its command's result as long as SSM runs the command, within the invocation.
            let result_by = (Instant::now() + RESULT_WAIT).min(act_by);
            // The verdict may follow this check: the action must still be there to complete when it answers.
            if let Some(gone) = self
                .keep_alive(action, &mut lapses_at, heartbeat_timeout, result_by, outcome)
                .await?
            {
                return Ok(gone);
            }
            let health = self
                .probe
                .check(&action.ec2_instance_id, result_by)
                .await
                .map_err(|e| FunctionError::new("HealthCheckFailed", e))?;
            match health {
                Health::Healthy => {
                    return Ok(Verdict::Complete(
                        LifecycleResult::Continue,
                        format!("healthy after {} check(s)", outcome.attempts),
                    ))
                }
                Health::NotYet(why) => {
                    last = why;
                    evidence = true;
                }
                Health::NotRegistered => {
                    unregistered = true;
                    if !evidence {
                        last = "instance not registered with SSM".into();
                    }
                }
                Health::NoResultInTime(why) if last.is_empty() => last = why,
                Health::NoResultInTime(_) => {}
            }
            tracing::info!(instance = %action.ec2_instance_id, attempt = outcome.attempts, why = %last, "not healthy yet");
            if Instant::now() + interval >= stop_at {
                if !evidence && unregistered {
                    return self.never_registered(action, hook.and_then(|h| h.default_result));
                }
                if !evidence {
                    // No check said anything about the instance: no verdict. The retry (or the hook's own timeout
                    // and default result) decides.
                    return Err(FunctionError::new(
                        "HealthCheckInconclusive",
                        format!("no health check of {} gave a result: {last}", action.ec2_instance_id),
                    ));
                }
                let reason = if stop_at == health_deadline {
                    format!(
                        "not healthy by the deadline ({} s after the event): {last}",
                        self.config.healthcheck_deadline.as_secs()
                    )
                } else {
                    format!("the invocation ends before the deadline; acting now: {last}")
                };
                return Ok(Verdict::Complete(self.config.on_unhealthy, reason));
            }
            if let Some(gone) = self
                .keep_alive(
                    action,
                    &mut lapses_at,
                    heartbeat_timeout,
                    Instant::now() + interval,
                    outcome,
                )
                .await?
            {
                return Ok(gone);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Records a heartbeat when the hook would lapse before `by` plus [`HEARTBEAT_MARGIN`]; `Some` when the action is
    /// gone.
    async fn keep_alive(
        &self,
        action: &LifecycleAction,
        lapses_at: &mut Option<Instant>,
        timeout: Option<Duration>,
        by: Instant,
        outcome: &mut Outcome,
    ) -> Result<Option<Verdict>, FunctionError> {
        let (Some(lapse), Some(timeout)) = (*lapses_at, timeout) else {
            return Ok(None);
        };
        if by + HEARTBEAT_MARGIN < lapse {
            return Ok(None);
        }
        match self
            .lifecycle
            .record_heartbeat(action)
            .await
            .map_err(lifecycle_failed)?
        {
            Completion::Completed => {
                outcome.heartbeats += 1;
                *lapses_at = Some(Instant::now() + timeout);
                Ok(None)
            }
            Completion::NoActiveAction => Ok(Some(Verdict::Gone(
                "the lifecycle action is no longer active (completed elsewhere or timed out)".into(),
            ))),
        }
    }

    /// No check ever reached the instance: the SSM agent, the instance profile or the VPC endpoint is broken, which
    /// says nothing of the application and, when it is fleet-wide, would abandon every new instance. Completed with
    /// `ON_NOT_REGISTERED` (the hook's own default result unless set), counted, and alarmed on.
    fn never_registered(
        &self,
        action: &LifecycleAction,
        hook_default: Option<LifecycleResult>,
    ) -> Result<Verdict, FunctionError> {
        self.metrics.count("InstancesNotRegistered", 1);
        let (result, source) = match self.config.on_not_registered {
            OnNotRegistered::Fixed(result) => (Some(result), "ON_NOT_REGISTERED"),
            OnNotRegistered::HookDefault => (hook_default, "the hook's DefaultResult"),
        };
        let why = format!(
            "{} never registered with SSM within {} s: inconclusive",
            action.ec2_instance_id,
            self.config.healthcheck_deadline.as_secs()
        );
        tracing::warn!(instance = %action.ec2_instance_id, "{why}; check the SSM agent, the instance profile and the SSM VPC endpoints");
        match result {
            Some(result) => Ok(Verdict::Complete(
                result,
                format!("{why}; completed with {} ({source})", result.as_str()),
            )),
            None => Err(FunctionError::new(
                "HealthCheckInconclusive",
                format!("{why}; the hook's default result could not be read, so the hook's own timeout decides"),
            )),
        }
    }
}

fn lifecycle_failed(error: DependencyError) -> FunctionError {
    FunctionError::new("LifecycleActionFailed", error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Hook;
    use async_trait::async_trait;
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Health checks answer from a script, then keep giving the last answer. Like the SSM adapter, a check whose
    /// result would come after its deadline gives no result.
    struct FakeProbe {
        script: Mutex<VecDeque<Health>>,
        last: Mutex<Health>,
        checks: Mutex<Vec<Instant>>,
        /// How long the command takes to give its result.
        result_after: Duration,
        /// Every check fails this way (a failure that says nothing about the instance).
        failure: Option<DependencyError>,
    }

    impl FakeProbe {
        fn new(script: Vec<Health>) -> Self {
            let last = script.last().cloned().unwrap_or(Health::Healthy);
            Self {
                script: Mutex::new(script.into()),
                last: Mutex::new(last),
                checks: Mutex::new(Vec::new()),
                result_after: Duration::ZERO,
                failure: None,
            }
        }
    }

    #[async_trait]
    impl HealthProbe for FakeProbe {
        async fn check(&self, _: &str, deadline: Instant) -> Result<Health, DependencyError> {
            self.checks.lock().unwrap().push(Instant::now());
            if let Some(failure) = &self.failure {
                return Err(failure.clone());
            }
            if Instant::now() + self.result_after > deadline {
                tokio::time::sleep_until(deadline).await;
                return Ok(Health::NoResultInTime("command gave no result in time".into()));
            }
            tokio::time::sleep(self.result_after).await;
            Ok(self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| self.last.lock().unwrap().clone()))
        }
    }

    /// One pending lifecycle action, completed at most once, as Auto Scaling keeps it.
    struct FakeLifecycle {
        heartbeat_timeout: Option<Duration>,
        default_result: Option<LifecycleResult>,
        /// As Auto Scaling: the action lapses this long after the last heartbeat (or its start) and is then gone.
        lapses_at: Mutex<Instant>,
        active: Mutex<bool>,
        completions: Mutex<Vec<LifecycleResult>>,
        heartbeats: Mutex<Vec<Instant>>,
    }

    impl FakeLifecycle {
        fn new(heartbeat_timeout: u64) -> Self {
            Self {
                heartbeat_timeout: Some(Duration::from_secs(heartbeat_timeout)),
                default_result: Some(LifecycleResult::Abandon),
                lapses_at: Mutex::new(Instant::now() + Duration::from_secs(heartbeat_timeout)),
                active: Mutex::new(true),
                completions: Mutex::new(Vec::new()),
                heartbeats: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl LifecycleActions for FakeLifecycle {
        async fn hook(&self, _: &str, _: &str) -> Result<Option<Hook>, DependencyError> {
            Ok(Some(Hook {
                heartbeat_timeout: self.heartbeat_timeout,
                default_result: self.default_result,
            }))
        }
        async fn record_heartbeat(&self, _: &LifecycleAction) -> Result<Completion, DependencyError> {
            if !*self.active.lock().unwrap() || Instant::now() >= *self.lapses_at.lock().unwrap() {
                return Ok(Completion::NoActiveAction);
            }
            self.heartbeats.lock().unwrap().push(Instant::now());
            *self.lapses_at.lock().unwrap() = Instant::now() + self.heartbeat_timeout.unwrap_or(Duration::MAX / 4);
            Ok(Completion::Completed)
        }
        async fn complete(&self, _: &LifecycleAction, result: LifecycleResult) -> Result<Completion, DependencyError> {
            let mut active = self.active.lock().unwrap();
            if !*active || Instant::now() >= *self.lapses_at.lock().unwrap() {
                return Ok(Completion::NoActiveAction);
            }
            *active = false;
            self.completions.lock().unwrap().push(result);
            Ok(Completion::Completed)
        }
    }

    fn config(deadline: u64, on_unhealthy: LifecycleResult) -> Config {
        Config {
            healthcheck_url: "http://localhost:8000/healthcheck".into(),
            healthcheck_deadline: Duration::from_secs(deadline),
            healthcheck_interval: Duration::from_secs(10),
            on_unhealthy,
            on_not_registered: OnNotRegistered::HookDefault,
        }
    }

    fn completer(probe: Vec<Health>, lifecycle: FakeLifecycle, config: Config) -> Completer<FakeProbe, FakeLifecycle> {
        Completer::new(
            FakeProbe::new(probe),
            lifecycle,
            config,
            Arc::new(Metrics::new("Test", "lifecycle-hook-completer")),
        )
    }

    fn event(now: DateTime<Utc>, destination: &str) -> Value {
        json!({"version": "0", "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
               "time": now.to_rfc3339(),
               "detail": {"LifecycleActionToken": "token-1", "AutoScalingGroupName": "workers", "LifecycleHookName": "workers-launching",
                          "EC2InstanceId": "i-1", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING", "Origin": "EC2", "Destination": destination}})
    }

    fn not_yet(why: &str) -> Health {
        Health::NotYet(why.into())
    }

    async fn run(c: &Completer<FakeProbe, FakeLifecycle>, payload: &Value, now: DateTime<Utc>) -> Outcome {
        c.handle(payload, now, Instant::now() + Duration::from_secs(890))
            .await
            .unwrap()
            .remove(0)
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_on_the_first_check_continues() {
        let now = Utc::now();
        let c = completer(
            vec![Health::Healthy],
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
        );
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!(
            (outcome.result.as_str(), outcome.completed, outcome.attempts),
            ("CONTINUE", true, 1)
        );
        assert_eq!(
            *c.lifecycle.completions.lock().unwrap(),
            vec![LifecycleResult::Continue]
        );
        assert_eq!(outcome.instance.as_deref(), Some("i-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_after_not_registered_and_failed_checks() {
        let now = Utc::now();
        let script = vec![
            Health::NotRegistered,
            not_yet("health check command Failed: connection refused"),
            Health::Healthy,
        ];
        let c = completer(script, FakeLifecycle::new(450), config(420, LifecycleResult::Abandon));
        let started = Instant::now();
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!((outcome.result.as_str(), outcome.attempts), ("CONTINUE", 3));
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(20),
            "two intervals between three checks"
        );
        assert!(
            c.lifecycle.heartbeats.lock().unwrap().is_empty(),
            "the deadline is within the hook's timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_healthy_is_abandoned_at_the_deadline() {
        let now = Utc::now();
        let c = completer(
            vec![not_yet("connection refused")],
            FakeLifecycle::new(450),
            config(60, LifecycleResult::Abandon),
        );
        let started = Instant::now();
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!((outcome.result.as_str(), outcome.completed), ("ABANDON", true));
        assert!(
            outcome.reason.contains("not healthy by the deadline") && outcome.reason.contains("connection refused"),
            "{}",
            outcome.reason
        );
        assert!(started.elapsed() <= Duration::from_secs(60) && started.elapsed() >= Duration::from_secs(50));
        assert_eq!(outcome.attempts, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn on_unhealthy_continue_lets_the_instance_in_at_the_deadline() {
        let now = Utc::now();
        let c = completer(
            vec![not_yet("timed out")],
            FakeLifecycle::new(450),
            config(30, LifecycleResult::Continue),
        );
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!(outcome.result, "CONTINUE");
        assert_eq!(
            *c.lifecycle.completions.lock().unwrap(),
            vec![LifecycleResult::Continue]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn warm_pool_destination_continues_without_a_check() {
        let now = Utc::now();
        let c = completer(
            vec![not_yet("never asked")],
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
        );
        let outcome = run(&c, &event(now, "WarmPool"), now).await;
        assert_eq!((outcome.result.as_str(), outcome.attempts), ("CONTINUE", 0));
        assert!(c.probe.checks.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn test_notification_and_other_transitions_complete_nothing() {
        let now = Utc::now();
        let c = completer(
            vec![Health::Healthy],
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
        );
        let test = json!({"Records": [{"Sns": {"Message": json!({"Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION"}).to_string()}}]});
        let outcome = run(&c, &test, now).await;
        assert_eq!((outcome.result.as_str(), outcome.completed), ("NONE", false));
        let mut terminating = event(now, "AutoScalingGroup");
        terminating["detail"]["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_TERMINATING");
        let outcome = run(&c, &terminating, now).await;
        assert!(outcome.reason.contains("not a launch"));
        assert!(c.lifecycle.completions.lock().unwrap().is_empty());
        assert!(c.probe.checks.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_redelivered_event_after_completion_is_not_an_error() {
        let now = Utc::now();
        let c = completer(
            vec![Health::Healthy],
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
        );
        let first = run(&c, &event(now, "AutoScalingGroup"), now).await;
        let again = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert!(first.completed);
        assert_eq!((again.result.as_str(), again.completed), ("CONTINUE", false));
        assert!(again.reason.contains("no active lifecycle action"));
        assert_eq!(c.lifecycle.completions.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_the_hook_alive_when_the_deadline_exceeds_its_timeout() {
        let now = Utc::now();
        // The hook lapses after 60 s; the application needs 150 s; the deadline is 300 s.
        let mut script = vec![not_yet("connection refused"); 15];
        script.push(Health::Healthy);
        let c = completer(script, FakeLifecycle::new(60), config(300, LifecycleResult::Abandon));
        let started = Instant::now();
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!((outcome.result.as_str(), outcome.completed), ("CONTINUE", true));
        let heartbeats = c.lifecycle.heartbeats.lock().unwrap().clone();
        assert!(!heartbeats.is_empty());
        // Never more than the hook's timeout without a heartbeat.
        let mut last = started;
        for beat in heartbeats.iter().chain(std::iter::once(&Instant::now())) {
            assert!(
                beat.duration_since(last) < Duration::from_secs(60),
                "the hook would have lapsed"
            );
            last = *beat;
        }
        assert_eq!(outcome.heartbeats as usize, heartbeats.len());
    }

    #[tokio::test(start_paused = true)]
    async fn acts_before_the_invocation_deadline_when_it_comes_first() {
        let now = Utc::now();
        let c = completer(
            vec![not_yet("connection refused")],
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
        );
        let act_by = Instant::now() + Duration::from_secs(45);
        let outcome = c
            .handle(&event(now, "AutoScalingGroup"), now, act_by)
            .await
            .unwrap()
            .remove(0);
        assert_eq!((outcome.result.as_str(), outcome.completed), ("ABANDON", true));
        assert!(
            outcome.reason.contains("invocation ends before the deadline"),
            "{}",
            outcome.reason
        );
        assert!(Instant::now() <= act_by);
    }

    #[tokio::test(start_paused = true)]
    async fn the_verdict_gives_the_last_real_failure_not_a_check_cut_short() {
        let now = Utc::now();
        let script = vec![
            not_yet("curl: (7) Connection refused"),
            Health::NoResultInTime("command c-1 gave no result in time".into()),
        ];
        let c = completer(script, FakeLifecycle::new(450), config(15, LifecycleResult::Abandon));
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!(outcome.result, "ABANDON");
        assert!(
            outcome.reason.contains("Connection refused") && !outcome.reason.contains("no result in time"),
            "{}",
            outcome.reason
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_event_gets_a_real_check_and_a_healthy_instance_continues() {
        let now = Utc::now();
        // The command takes 3 s to answer; the event arrives 600 s after it happened, past the 420 s deadline.
        let mut probe = FakeProbe::new(vec![Health::Healthy]);
        probe.result_after = Duration::from_secs(3);
        let c = Completer::new(
            probe,
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
            Arc::new(Metrics::new("Test", "l")),
        );
        let outcome = run(
            &c,
            &event(now - chrono::Duration::seconds(600), "AutoScalingGroup"),
            now,
        )
        .await;
        assert_eq!(
            (outcome.result.as_str(), outcome.attempts),
            ("CONTINUE", 1),
            "{}",
            outcome.reason
        );
        assert_eq!(
            *c.lifecycle.completions.lock().unwrap(),
            vec![LifecycleResult::Continue]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_event_for_an_unhealthy_instance_is_abandoned_after_one_check() {
        let now = Utc::now();
        let c = completer(
            vec![not_yet("curl: (7) Connection refused")],
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
        );
        let outcome = run(
            &c,
            &event(now - chrono::Duration::seconds(600), "AutoScalingGroup"),
            now,
        )
        .await;
        assert_eq!((outcome.result.as_str(), outcome.attempts), ("ABANDON", 1));
        assert!(outcome.reason.contains("Connection refused"), "{}", outcome.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_could_not_run_is_an_invocation_error_not_a_verdict() {
        let now = Utc::now();
        let mut probe = FakeProbe::new(vec![Health::Healthy]);
        probe.failure = Some(DependencyError::Refused(
            "SendCommand failed: AccessDeniedException".into(),
        ));
        let c = Completer::new(
            probe,
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
            Arc::new(Metrics::new("Test", "l")),
        );
        let error = c
            .handle(
                &event(now, "AutoScalingGroup"),
                now,
                Instant::now() + Duration::from_secs(890),
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind, "HealthCheckFailed");
        assert!(error.message.contains("AccessDenied"));
        assert!(
            c.lifecycle.completions.lock().unwrap().is_empty(),
            "no verdict without evidence"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn checks_that_never_gave_a_result_are_inconclusive_not_unhealthy() {
        let now = Utc::now();
        let mut probe = FakeProbe::new(vec![Health::Healthy]);
        probe.result_after = Duration::from_secs(120);
        let c = Completer::new(
            probe,
            FakeLifecycle::new(450),
            config(60, LifecycleResult::Abandon),
            Arc::new(Metrics::new("Test", "l")),
        );
        let error = c
            .handle(
                &event(now, "AutoScalingGroup"),
                now,
                Instant::now() + Duration::from_secs(890),
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind, "HealthCheckInconclusive");
        assert!(c.lifecycle.completions.lock().unwrap().is_empty());
    }

    /// The deadline (420 s) lies just inside the hook's heartbeat timeout (450 s), and the last check may answer
    /// only after 450 s: a heartbeat before it keeps the action there, so the ABANDON is not lost to the hook's
    /// default.
    #[tokio::test(start_paused = true)]
    async fn the_last_check_near_the_hooks_timeout_gets_a_heartbeat_first_and_the_verdict_lands() {
        let now = Utc::now();
        let mut probe = FakeProbe::new(vec![not_yet("curl: (7) Connection refused")]);
        // Checks of 31.9 s, 10 s apart: the eleventh starts at 419 s and answers at 450.8 s, past the hook's timeout.
        probe.result_after = Duration::from_millis(31_900);
        let c = Completer::new(
            probe,
            FakeLifecycle::new(450),
            config(420, LifecycleResult::Abandon),
            Arc::new(Metrics::new("Test", "l")),
        );
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!(
            (outcome.result.as_str(), outcome.completed),
            ("ABANDON", true),
            "{}",
            outcome.reason
        );
        assert!(outcome.heartbeats >= 1);
        assert_eq!(*c.lifecycle.completions.lock().unwrap(), vec![LifecycleResult::Abandon]);
    }

    /// No check ever reached the instance (a broken SSM agent, instance profile or endpoint, fleet-wide): not an
    /// unhealthy instance. Completed with the hook's own default result (here CONTINUE, though ON_UNHEALTHY is
    /// ABANDON), or with ON_NOT_REGISTERED; counted.
    #[tokio::test(start_paused = true)]
    async fn an_instance_that_never_registers_gets_the_hooks_default_not_on_unhealthy() {
        let now = Utc::now();
        let mut lifecycle = FakeLifecycle::new(450);
        lifecycle.default_result = Some(LifecycleResult::Continue);
        let c = completer(
            vec![Health::NotRegistered],
            lifecycle,
            config(60, LifecycleResult::Abandon),
        );
        let outcome = run(&c, &event(now, "AutoScalingGroup"), now).await;
        assert_eq!(
            (outcome.result.as_str(), outcome.completed),
            ("CONTINUE", true),
            "{}",
            outcome.reason
        );
        assert!(
            outcome.reason.contains("never registered") && outcome.reason.contains("DefaultResult"),
            "{}",
            outcome.reason
        );

        let mut config = config(60, LifecycleResult::Continue);
        config.on_not_registered = OnNotRegistered::Fixed(LifecycleResult::Abandon);
        let c = completer(vec![Health::NotRegistered], FakeLifecycle::new(450), config);
        assert_eq!(run(&c, &event(now, "AutoScalingGroup"), now).await.result, "ABANDON");

        // Registered later and then failing: that is evidence, and ON_UNHEALTHY decides.
        let c = completer(
            vec![Health::NotRegistered, not_yet("connection refused")],
            FakeLifecycle::new(450),
            config_with_default(60),
        );
        assert_eq!(run(&c, &event(now, "AutoScalingGroup"), now).await.result, "ABANDON");
    }

    fn config_with_default(deadline: u64) -> Config {
        Config {
            on_not_registered: OnNotRegistered::Fixed(LifecycleResult::Continue),
            ..config(deadline, LifecycleResult::Abandon)
        }
    }

    #[test]
    fn a_timeout_shorter_than_the_deadline_plus_its_margins_is_reported() {
        let config = config(420, LifecycleResult::Abandon);
        assert!(timeout_warning(Duration::from_secs(480), &config).is_none());
        assert!(
            timeout_warning(Duration::from_millis(479_800), &config).is_none(),
            "the first invocation starts a moment after its timeout began"
        );
        let warning = timeout_warning(Duration::from_secs(300), &config).unwrap();
        assert!(
            warning.contains("300 s") && warning.contains("HEALTHCHECK_DEADLINE_SECONDS"),
            "{warning}"
        );
    }
}
