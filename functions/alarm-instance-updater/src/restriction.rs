//! The restriction parameter's value, the contract with the application, and the pure decision of what it becomes.
//!
//! ```json
//! {"restricted": true, "reason": "...", "since": "2026-11-21T10:01:31Z", "expiresAt": "2026-11-21T10:16:31Z",
//!  "alarm": "cpu_high", "autoScalingGroup": "workers", "desiredCapacity": 3, "inService": 2}
//! ```
//! The application reads it with a short cache and treats a missing, unreadable or expired value as unrestricted
//! (fail open): a stuck restriction must never switch the feature off for good.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::trigger::{AlarmState, Trigger};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restriction {
    pub restricted: bool,
    #[serde(default)]
    pub reason: String,
    // Defaults let the deployment create the parameter with a constant `{"restricted": false, "reason": "..."}`.
    #[serde(with = "rfc3339", default)]
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_option")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    #[serde(default)]
    pub auto_scaling_group: String,
    #[serde(default)]
    pub desired_capacity: u32,
    #[serde(default)]
    pub in_service: u32,
    /// The alarm's last transition applied, `ALARM` or `OK`, and its `StateChangeTime`: a notification that is not
    /// newer is late or repeated and changes nothing, whatever order SNS delivers them in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_millis_option")]
    pub alarm_state_changed_at: Option<DateTime<Utc>>,
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod rfc3339_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::rfc3339::serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) => DateTime::parse_from_rfc3339(&text)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `StateChangeTime` has milliseconds, and two transitions may lie within one second.
mod rfc3339_millis_option {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => serializer.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        super::rfc3339_option::deserialize(deserializer)
    }
}

impl Restriction {
    /// The alarm is in ALARM as far as the notifications applied tell.
    pub fn alarm_in_alarm(&self) -> bool {
        self.alarm_state.as_deref() == Some("ALARM")
    }

    /// Restricted and not expired. A restricted value without `expiresAt` counts as expired, as the application
    /// reads it.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.restricted && self.expires_at.is_some_and(|expires| expires > now)
    }

    /// The parameter's value, within SSM's 4 KB for a standard parameter: an alarm's reason (up to 1,023
    /// characters, JSON-escaped) is shortened until it fits; the decision's fields are never cut.
    pub fn to_json(&self) -> String {
        let mut value = self.clone();
        loop {
            let json = serde_json::to_string(&value).expect("a restriction serializes");
            if json.len() <= MAX_PARAMETER_BYTES || value.reason.is_empty() {
                return json;
            }
            let keep = value.reason.chars().count() * 3 / 4;
            value.reason = value
                .reason
                .chars()
                .take(keep.saturating_sub(1))
                .chain(std::iter::once('…'))
                .collect();
            if keep <= 1 {
                value.reason.clear();
            }
        }
    }
}

/// SSM's limit on a standard parameter's value.
pub const MAX_PARAMETER_BYTES: usize = 4096;

/// The parameter's current value: `None` when missing or unreadable (the application then sees it as unrestricted
/// too), with a warning for the unreadable case.
pub fn read_value(raw: Option<&str>) -> (Option<Restriction>, Option<String>) {
    match raw {
        None => (None, None),
        Some(text) => match serde_json::from_str(text) {
            Ok(restriction) => (Some(restriction), None),
            Err(error) => (
                None,
                Some(format!(
                    "restriction parameter is unreadable ({error}); treated as unrestricted"
                )),
            ),
        },
    }
}

/// The Auto Scaling group as DescribeAutoScalingGroups shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    pub desired: u32,
    pub in_service: u32,
    /// Instances in any `Pending*` lifecycle state (`Pending`, `Pending:Wait`, `Pending:Proceed`).
    pub pending: u32,
}

impl GroupState {
    /// Nothing pending and at least the desired capacity in service.
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.in_service >= self.desired
    }

    pub fn describe(&self) -> String {
        format!(
            "{} of {} desired in service, {} pending",
            self.in_service, self.desired, self.pending
        )
    }
}

/// What a trigger asks for, before the group is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Restrict (or push the expiry of an active restriction later).
    Restrict {
        alarm: String,
        reason: String,
    },
    /// Lift, if the group has settled.
    LiftIfSettled {
        cause: String,
    },
    /// Lift an expired restriction, whatever the trigger.
    LiftExpired,
    /// A launch while the alarm is still in ALARM: renew the restriction while the group is not settled (a
    /// scale-out longer than `RESTRICTION_MAX_SECONDS`), lift it once it is.
    RenewUnlessSettled {
        cause: String,
    },
    Nothing {
        why: String,
    },
}

/// Why `trigger` comes too late to change the state: an alarm transition not newer than the one applied, or a
/// launch that finished before the alarm's last ALARM (the scale-out it belonged to is over; a new one started).
fn stale(current: Option<&Restriction>, trigger: &Trigger, config: &Config) -> Option<String> {
    let current = current?;
    let applied = current.alarm_state_changed_at?;
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    match trigger {
        Trigger::Alarm {
            name,
            state: AlarmState::Alarm | AlarmState::Ok,
            changed_at: Some(at),
            ..
        } if config.restricts_on(name) && *at <= applied => Some(format!(
            "alarm {name} changed at {}, not after the transition applied ({}): a late or repeated notification",
            stamp(*at),
            stamp(applied)
        )),
        Trigger::Launch { at: Some(at), .. } if current.alarm_in_alarm() && *at < applied => Some(format!(
            "the launch finished at {}, before the alarm went into ALARM at {}: a new scale-out",
            stamp(*at),
            stamp(applied)
        )),
        _ => None,
    }
}

pub fn intent(current: Option<&Restriction>, trigger: &Trigger, now: DateTime<Utc>, config: &Config) -> Intent {
    let active = current.is_some_and(|r| r.is_active(now));
    let restricted = current.is_some_and(|r| r.restricted);
    let expired = restricted && !active;
    let in_alarm = current.is_some_and(Restriction::alarm_in_alarm);
    let late = stale(current, trigger, config);
    let wanted = match trigger {
        _ if late.is_some() => None,
        Trigger::Alarm {
            name,
            state: AlarmState::Alarm,
            reason,
            ..
        } if config.restricts_on(name) => Some(Intent::Restrict {
            alarm: name.clone(),
            reason: format!("alarm {name} in ALARM: {reason}"),
        }),
        Trigger::Alarm {
            name,
            state: AlarmState::Ok,
            ..
        } if config.restricts_on(name) && active => Some(Intent::LiftIfSettled {
            cause: format!("alarm {name} OK"),
        }),
        Trigger::Launch { group, successful, .. }
            if *group == config.autoscaling_group_name && restricted && in_alarm =>
        {
            Some(Intent::RenewUnlessSettled {
                cause: format!(
                    "instance launch {} in {group}",
                    if *successful { "successful" } else { "unsuccessful" }
                ),
            })
        }
        Trigger::Launch { group, successful, .. } if *group == config.autoscaling_group_name && active => {
            Some(Intent::LiftIfSettled {
                cause: format!(
                    "instance launch {} in {group}",
                    if *successful { "successful" } else { "unsuccessful" }
                ),
            })
        }
        _ => None,
    };
    match wanted {
        Some(intent) => intent,
        None if expired => Intent::LiftExpired,
        None if late.is_some() => Intent::Nothing {
            why: format!("{}; ignored", late.unwrap_or_default()),
        },
        None => Intent::Nothing {
            why: match trigger {
                Trigger::Alarm { name, .. } if !config.restricts_on(name) => {
                    format!("alarm {name} is not in RESTRICT_ON_ALARMS")
                }
                Trigger::Alarm {
                    state: AlarmState::InsufficientData,
                    ..
                } => "INSUFFICIENT_DATA changes nothing".into(),
                Trigger::Launch { group, .. } if *group != config.autoscaling_group_name => {
                    format!("group {group} is not {}", config.autoscaling_group_name)
                }
                Trigger::Ignored(what) => format!("{what} changes nothing"),
                _ => "not restricted; nothing to lift".into(),
            },
        },
    }
}

/// The value the parameter should hold after `intent`, and why. `None` when it should stay as it is.
pub fn next_value(
    current: Option<&Restriction>,
    intent: &Intent,
    group: Option<&GroupState>,
    now: DateTime<Utc>,
    config: &Config,
) -> (Option<Restriction>, String) {
    let group_name = config.autoscaling_group_name.clone();
    let (desired, in_service) = group.map(|g| (g.desired, g.in_service)).unwrap_or((0, 0));
    let max = chrono::Duration::from_std(config.restriction_max).unwrap_or(chrono::Duration::seconds(900));
    let lifted = |reason: String| Restriction {
        restricted: false,
        reason,
        since: now,
        expires_at: None,
        alarm: None,
        auto_scaling_group: group_name.clone(),
        desired_capacity: desired,
        in_service,
        alarm_state: current.and_then(|r| r.alarm_state.clone()),
        alarm_state_changed_at: current.and_then(|r| r.alarm_state_changed_at),
    };
    match intent {
        Intent::Nothing { why } => (None, why.clone()),
        Intent::Restrict { alarm, reason } => match current.filter(|r| r.is_active(now)) {
            Some(active) => {
                let expires = now + max;
                let value = Restriction {
                    expires_at: Some(expires),
                    desired_capacity: desired,
                    in_service,
                    ..active.clone()
                };
                let why = format!(
                    "{reason}; already restricted, expiry pushed to {}",
                    expires.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
                (Some(value), why)
            }
            None => {
                let value = Restriction {
                    restricted: true,
                    reason: reason.clone(),
                    since: now,
                    expires_at: Some(now + max),
                    alarm: Some(alarm.clone()),
                    auto_scaling_group: group_name.clone(),
                    desired_capacity: desired,
                    in_service,
                    alarm_state: current.and_then(|r| r.alarm_state.clone()),
                    alarm_state_changed_at: current.and_then(|r| r.alarm_state_changed_at),
                };
                (
                    Some(value),
                    format!("{reason}; restricted for {} s", config.restriction_max.as_secs()),
                )
            }
        },
        Intent::LiftIfSettled { cause } => match group {
            Some(group) if group.settled() => (
                Some(lifted(format!("{cause}; group settled ({})", group.describe()))),
                format!("{cause}; group settled: lifted"),
            ),
            Some(group) => (
                None,
                format!("{cause}; group not settled ({}): still restricted", group.describe()),
            ),
            None => (None, format!("{cause}; group {group_name} not found: still restricted")),
        },
        Intent::RenewUnlessSettled { cause } => match (group, current) {
            (Some(group), _) if group.settled() => (
                Some(lifted(format!("{cause}; group settled ({})", group.describe()))),
                format!("{cause}; group settled: lifted"),
            ),
            (Some(group), Some(restriction)) => {
                let expires = now + max;
                let alarm = restriction.alarm.clone().unwrap_or_default();
                let renewed = Restriction {
                    restricted: true,
                    since: if restriction.is_active(now) {
                        restriction.since
                    } else {
                        now
                    },
                    expires_at: Some(expires),
                    desired_capacity: desired,
                    in_service,
                    ..restriction.clone()
                };
                let why = format!(
                    "{cause}; group not settled ({}) and alarm {alarm} still in ALARM: restriction renewed until {}",
                    group.describe(),
                    expires.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
                (Some(renewed), why)
            }
            (Some(_), None) => (None, format!("{cause}; not restricted")),
            (None, _) => (None, format!("{cause}; group {group_name} not found: left as it is")),
        },
        Intent::LiftExpired => {
            let expired_at = current
                .and_then(|r| r.expires_at)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_else(|| "an unknown time".into());
            (
                Some(lifted(format!("restriction expired at {expired_at}"))),
                format!("restriction expired at {expired_at}: lifted"),
            )
        }
    }
}

/// The state after `trigger` with the alarm transition it carries recorded, when it is one of a configured alarm and
/// newer than the one applied: even when nothing else changes (an OK while the group is still launching), a later
/// ALARM, OK or launch is then ordered against it.
pub fn record_transition(
    current: Option<&Restriction>,
    next: Option<Restriction>,
    trigger: &Trigger,
    config: &Config,
) -> Option<Restriction> {
    let Trigger::Alarm {
        name,
        state,
        changed_at: Some(at),
        ..
    } = trigger
    else {
        return next;
    };
    let label = match state {
        AlarmState::Alarm => "ALARM",
        AlarmState::Ok => "OK",
        _ => return next,
    };
    if !config.restricts_on(name) || stale(current, trigger, config).is_some() {
        return next;
    }
    let mut value = next.or_else(|| current.cloned())?;
    value.alarm_state = Some(label.to_owned());
    value.alarm_state_changed_at = Some(*at);
    Some(value)
}

/// Whether going from `current` to `next` is a change worth a parameter version (at most 100 are kept).
pub fn is_change(current: Option<&Restriction>, next: &Restriction) -> bool {
    match current {
        None => next.restricted,
        Some(current) if !current.restricted && !next.restricted => {
            (&current.alarm_state, current.alarm_state_changed_at) != (&next.alarm_state, next.alarm_state_changed_at)
        }
        Some(current) => current != next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn config() -> Config {
        Config {
            restriction_parameter: "/bg-removal/restriction".into(),
            autoscaling_group_name: "workers".into(),
            restrict_on_alarms: Some(vec!["cpu_high".into()]),
            restriction_max: Duration::from_secs(900),
        }
    }

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, minute, 0).unwrap()
    }

    fn alarm(name: &str, state: AlarmState) -> Trigger {
        Trigger::Alarm {
            name: name.into(),
            state,
            reason: "Threshold Crossed".into(),
            changed_at: None,
        }
    }

    /// A transition of cpu_high at `second` seconds past 10:00.
    fn transition(state: AlarmState, second: i64) -> Trigger {
        Trigger::Alarm {
            name: "cpu_high".into(),
            state,
            reason: "Threshold Crossed".into(),
            changed_at: Some(at(0) + chrono::Duration::seconds(second)),
        }
    }

    fn launch(second: i64) -> Trigger {
        Trigger::Launch {
            group: "workers".into(),
            instance: None,
            successful: true,
            at: Some(at(0) + chrono::Duration::seconds(second)),
        }
    }

    /// One trigger as the handler applies it: decided, its transition recorded, kept only if it is a change.
    fn apply(
        current: Option<&Restriction>,
        trigger: &Trigger,
        group: &GroupState,
        now: DateTime<Utc>,
    ) -> (Option<Restriction>, String) {
        let (next, why) = step(current, trigger, group, now);
        let next = record_transition(current, next, trigger, &config()).filter(|next| is_change(current, next));
        (next.or_else(|| current.cloned()), why)
    }

    const SETTLED: GroupState = GroupState {
        desired: 3,
        in_service: 3,
        pending: 0,
    };
    const PENDING: GroupState = GroupState {
        desired: 3,
        in_service: 2,
        pending: 1,
    };

    fn step(
        current: Option<&Restriction>,
        trigger: &Trigger,
        group: &GroupState,
        now: DateTime<Utc>,
    ) -> (Option<Restriction>, String) {
        let intent = intent(current, trigger, now, &config());
        next_value(current, &intent, Some(group), now, &config())
    }

    #[test]
    fn the_longest_alarm_reason_still_fits_a_standard_parameter() {
        let long = Trigger::Alarm {
            name: "n".repeat(255),
            state: AlarmState::Alarm,
            reason: "\"\u{1}".repeat(512),
            changed_at: None,
        };
        let config = Config {
            restrict_on_alarms: None,
            ..config()
        };
        let (value, _) = next_value(
            None,
            &intent(None, &long, at(0), &config),
            Some(&PENDING),
            at(0),
            &config,
        );
        let json = value.expect("restricted").to_json();
        assert!(json.len() <= MAX_PARAMETER_BYTES, "{}", json.len());
        let back: Restriction = serde_json::from_str(&json).unwrap();
        assert!(
            back.restricted && back.alarm.as_deref() == Some("n".repeat(255).as_str()) && back.reason.ends_with('…')
        );
    }

    #[test]
    fn alarm_restricts_with_expiry_and_a_second_alarm_pushes_it_later() {
        let (first, _) = step(None, &alarm("cpu_high", AlarmState::Alarm), &PENDING, at(0));
        let first = first.unwrap();
        assert!(first.restricted && first.is_active(at(1)));
        assert_eq!(first.expires_at, Some(at(15)));
        assert_eq!(
            (first.alarm.as_deref(), first.desired_capacity, first.in_service),
            (Some("cpu_high"), 3, 2)
        );
        let (second, why) = step(Some(&first), &alarm("cpu_high", AlarmState::Alarm), &PENDING, at(5));
        let second = second.unwrap();
        assert_eq!(second.expires_at, Some(at(20)));
        assert_eq!(second.since, first.since, "still the same restriction");
        assert!(why.contains("expiry pushed"));
        assert!(is_change(Some(&first), &second));
    }

    #[test]
    fn ok_lifts_only_once_the_group_has_settled() {
        let (restricted, _) = step(None, &alarm("cpu_high", AlarmState::Alarm), &PENDING, at(0));
        let restricted = restricted.unwrap();
        let (next, why) = step(Some(&restricted), &alarm("cpu_high", AlarmState::Ok), &PENDING, at(3));
        assert_eq!(next, None);
        assert!(why.contains("not settled") && why.contains("1 pending"), "{why}");
        let (next, _) = step(
            Some(&restricted),
            &alarm("cpu_high", AlarmState::Ok),
            &GroupState {
                desired: 3,
                in_service: 2,
                pending: 0,
            },
            at(3),
        );
        assert_eq!(next, None, "fewer than desired in service is not settled");
        let (next, _) = step(
            Some(&restricted),
            &Trigger::Launch {
                group: "workers".into(),
                instance: None,
                successful: true,
                at: None,
            },
            &SETTLED,
            at(4),
        );
        let next = next.unwrap();
        assert!(!next.restricted && next.expires_at.is_none() && next.alarm.is_none());
        assert_eq!(next.in_service, 3);
    }

    #[test]
    fn expired_restriction_is_lifted_by_any_event() {
        let (restricted, _) = step(None, &alarm("cpu_high", AlarmState::Alarm), &PENDING, at(0));
        let restricted = restricted.unwrap();
        for trigger in [
            alarm("cpu_high", AlarmState::InsufficientData),
            alarm("other", AlarmState::Alarm),
            Trigger::Ignored("x".into()),
        ] {
            let (next, why) = step(Some(&restricted), &trigger, &PENDING, at(16));
            assert!(!next.unwrap().restricted, "{trigger:?}");
            assert!(why.contains("expired"));
        }
        // A configured ALARM after expiry starts a new restriction instead.
        let (next, _) = step(
            Some(&restricted),
            &alarm("cpu_high", AlarmState::Alarm),
            &PENDING,
            at(16),
        );
        let next = next.unwrap();
        assert!(next.restricted && next.since == at(16) && next.expires_at == Some(at(31)));
    }

    #[test]
    fn unconfigured_alarms_insufficient_data_and_other_groups_change_nothing() {
        for (trigger, expected) in [
            (alarm("disk_full", AlarmState::Alarm), "not in RESTRICT_ON_ALARMS"),
            (alarm("cpu_high", AlarmState::InsufficientData), "INSUFFICIENT_DATA"),
            (
                Trigger::Launch {
                    group: "web".into(),
                    instance: None,
                    successful: true,
                    at: None,
                },
                "not workers",
            ),
        ] {
            let (next, why) = step(None, &trigger, &SETTLED, at(0));
            assert_eq!(next, None);
            assert!(why.contains(expected), "{why}");
        }
        let (next, _) = step(None, &alarm("cpu_high", AlarmState::Ok), &SETTLED, at(0));
        assert_eq!(next, None, "OK while unrestricted writes nothing");
    }

    #[test]
    fn lifting_what_is_already_lifted_is_no_change() {
        let lifted = Restriction {
            restricted: false,
            reason: "initial".into(),
            since: at(0),
            expires_at: None,
            alarm: None,
            auto_scaling_group: "workers".into(),
            desired_capacity: 1,
            in_service: 1,
            alarm_state: None,
            alarm_state_changed_at: None,
        };
        let other = Restriction {
            reason: "later".into(),
            since: at(5),
            ..lifted.clone()
        };
        assert!(!is_change(Some(&lifted), &other));
        assert!(!is_change(None, &other));
    }

    /// ALARM and OK ordered by their StateChangeTime, whatever order they arrive in: a late or repeated
    /// notification changes nothing, and an OK while the group still launches is recorded.
    #[test]
    fn alarm_transitions_apply_in_the_order_of_their_state_change_time() {
        let (restricted, _) = apply(None, &transition(AlarmState::Alarm, 60), &PENDING, at(1));
        let restricted = restricted.unwrap();
        assert!(restricted.restricted && restricted.alarm_in_alarm());
        // An OK from before that ALARM, delivered late: ignored.
        let (after_late_ok, why) = apply(Some(&restricted), &transition(AlarmState::Ok, 30), &SETTLED, at(2));
        assert_eq!(after_late_ok.as_ref(), Some(&restricted), "{why}");
        assert!(why.contains("late or repeated"), "{why}");
        // The OK that came after it, while the group still launches: recorded, still restricted.
        let (ok_recorded, _) = apply(Some(&restricted), &transition(AlarmState::Ok, 90), &PENDING, at(2));
        let ok_recorded = ok_recorded.unwrap();
        assert!(ok_recorded.restricted && ok_recorded.alarm_state.as_deref() == Some("OK"));
        assert!(is_change(Some(&restricted), &ok_recorded), "the OK is written");
        // The ALARM again (a redelivery): not newer than the OK applied; nothing pushed, nothing restricted again.
        let (again, why) = apply(Some(&ok_recorded), &transition(AlarmState::Alarm, 60), &PENDING, at(3));
        assert_eq!(again.as_ref(), Some(&ok_recorded), "{why}");
        // Lifted on a launch once settled; a redelivered ALARM after the lift still changes nothing.
        let (lifted, _) = apply(Some(&ok_recorded), &launch(200), &SETTLED, at(4));
        let lifted = lifted.unwrap();
        assert!(
            !lifted.restricted && lifted.alarm_state.as_deref() == Some("OK"),
            "the transition is kept when lifted"
        );
        let (still, _) = apply(Some(&lifted), &transition(AlarmState::Alarm, 60), &PENDING, at(5));
        assert!(!still.unwrap().restricted);
        // A genuinely new ALARM restricts.
        let (new, _) = apply(Some(&lifted), &transition(AlarmState::Alarm, 400), &PENDING, at(7));
        assert!(new.unwrap().restricted);
    }

    /// A scale-out longer than RESTRICTION_MAX_SECONDS: a launch that finds the group unsettled while the alarm is
    /// still in ALARM renews the expiry, even after it lapsed; once settled, a launch lifts.
    #[test]
    fn a_launch_during_a_long_scale_out_renews_the_restriction_while_the_alarm_is_in_alarm() {
        let (restricted, _) = apply(None, &transition(AlarmState::Alarm, 0), &PENDING, at(0));
        let restricted = restricted.unwrap();
        assert_eq!(restricted.expires_at, Some(at(15)));
        let (renewed, why) = apply(Some(&restricted), &launch(600), &PENDING, at(10));
        let renewed = renewed.unwrap();
        assert_eq!(renewed.expires_at, Some(at(25)), "{why}");
        assert_eq!(renewed.since, restricted.since);
        assert!(why.contains("renewed"), "{why}");
        // Lapsed meanwhile: the next launch, still unsettled and in ALARM, restricts again.
        let (again, why) = apply(Some(&renewed), &launch(1700), &PENDING, at(30));
        let again = again.unwrap();
        assert!(again.is_active(at(31)) && again.expires_at == Some(at(45)), "{why}");
        let (lifted, _) = apply(Some(&again), &launch(1900), &SETTLED, at(32));
        assert!(!lifted.unwrap().restricted);
        // After the OK, a launch while still unsettled renews nothing.
        let (ok, _) = apply(Some(&restricted), &transition(AlarmState::Ok, 120), &PENDING, at(3));
        let (next, why) = apply(ok.as_ref(), &launch(600), &PENDING, at(10));
        assert_eq!(next.unwrap().expires_at, Some(at(15)), "{why}");
    }

    /// A launch that finished before the alarm's latest ALARM belongs to the scale-out before: it does not lift the
    /// new restriction, even where the group looks settled (the new capacity is not asked for yet).
    #[test]
    fn a_launch_older_than_the_latest_alarm_does_not_lift_it() {
        let (restricted, _) = apply(None, &transition(AlarmState::Alarm, 100), &SETTLED, at(2));
        let (next, why) = apply(restricted.as_ref(), &launch(90), &SETTLED, at(2));
        assert!(next.unwrap().restricted, "{why}");
        assert!(why.contains("before the alarm went into ALARM"), "{why}");
    }

    #[test]
    fn value_round_trips_and_unreadable_values_fail_open() {
        let (restricted, _) = step(None, &alarm("cpu_high", AlarmState::Alarm), &PENDING, at(0));
        let json = restricted.as_ref().unwrap().to_json();
        assert!(
            json.contains(r#""expiresAt":"2026-11-21T10:15:00Z""#) && json.contains(r#""autoScalingGroup":"workers""#),
            "{json}"
        );
        assert_eq!(read_value(Some(&json)).0, restricted);
        let (value, warning) = read_value(Some("restricted"));
        assert_eq!(value, None);
        assert!(warning.unwrap().contains("unreadable"));
        let initial: Restriction = serde_json::from_str(r#"{"restricted":false,"reason":"initial value"}"#).unwrap();
        assert!(!initial.is_active(at(0)));
        let (restricted, _) = step(Some(&initial), &alarm("cpu_high", AlarmState::Alarm), &PENDING, at(0));
        assert!(
            restricted.unwrap().restricted,
            "the template's initial value is a normal starting point"
        );
    }
}
