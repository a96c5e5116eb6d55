use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleResult {
    Continue,
    Abandon,
}

impl LifecycleResult {
    pub fn parse(text: &str) -> Option<LifecycleResult> {
        match text {
            "CONTINUE" => Some(LifecycleResult::Continue),
            "ABANDON" => Some(LifecycleResult::Abandon),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleResult::Continue => "CONTINUE",
            LifecycleResult::Abandon => "ABANDON",
        }
    }
}

/// How to complete an instance that never registered with SSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNotRegistered {
    /// The hook's own `DefaultResult`: what Auto Scaling would do if nobody answered.
    HookDefault,
    Fixed(LifecycleResult),
}

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(480);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub healthcheck_url: String,
    /// Measured from the event's `time`.
    pub healthcheck_deadline: Duration,
    pub healthcheck_interval: Duration,
    pub on_unhealthy: LifecycleResult,
    pub on_not_registered: OnNotRegistered,
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &[
        "HEALTHCHECK_URL",
        "HEALTHCHECK_DEADLINE_SECONDS",
        "HEALTHCHECK_INTERVAL_SECONDS",
        "ON_UNHEALTHY",
        "ON_NOT_REGISTERED",
    ];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let healthcheck_url = env
            .optional_url("HEALTHCHECK_URL")?
            .unwrap_or_else(|| "http://localhost:8000/healthcheck".into());
        // The URL goes into a shell command on the instance, single-quoted.
        if healthcheck_url.contains(['\'', '\n', '\r']) {
            return Err(ConfigError::invalid(
                "HEALTHCHECK_URL",
                &healthcheck_url,
                "must not contain quotes or line breaks",
            ));
        }
        let deadline: u64 = env.parsed_or("HEALTHCHECK_DEADLINE_SECONDS", 420)?;
        let interval: u64 = env.parsed_or("HEALTHCHECK_INTERVAL_SECONDS", 10)?;
        if interval == 0 {
            return Err(ConfigError::invalid(
                "HEALTHCHECK_INTERVAL_SECONDS",
                "0",
                "must be at least 1",
            ));
        }
        let on_unhealthy = match env.choice_or("ON_UNHEALTHY", &["ABANDON", "CONTINUE"], "ABANDON")? {
            "CONTINUE" => LifecycleResult::Continue,
            _ => LifecycleResult::Abandon,
        };
        let on_not_registered =
            match env.choice_or("ON_NOT_REGISTERED", &["DEFAULT", "ABANDON", "CONTINUE"], "DEFAULT")? {
                "CONTINUE" => OnNotRegistered::Fixed(LifecycleResult::Continue),
                "ABANDON" => OnNotRegistered::Fixed(LifecycleResult::Abandon),
                _ => OnNotRegistered::HookDefault,
            };
        Ok(Config {
            healthcheck_url,
            healthcheck_deadline: Duration::from_secs(deadline),
            healthcheck_interval: Duration::from_secs(interval),
            on_unhealthy,
            on_not_registered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.healthcheck_url, "http://localhost:8000/healthcheck");
        assert_eq!(
            (c.healthcheck_deadline.as_secs(), c.healthcheck_interval.as_secs()),
            (420, 10)
        );
        assert_eq!(c.on_unhealthy, LifecycleResult::Abandon);
        assert_eq!(
            config(&[("ON_UNHEALTHY", "continue")]).unwrap().on_unhealthy,
            LifecycleResult::Continue
        );
        assert_eq!(c.on_not_registered, OnNotRegistered::HookDefault);
        assert_eq!(
            config(&[("ON_NOT_REGISTERED", "CONTINUE")]).unwrap().on_not_registered,
            OnNotRegistered::Fixed(LifecycleResult::Continue)
        );
    }

    #[test]
    fn errors_name_the_variable() {
        for (name, value) in [
            ("ON_UNHEALTHY", "RETRY"),
            ("ON_NOT_REGISTERED", "IGNORE"),
            ("HEALTHCHECK_INTERVAL_SECONDS", "0"),
            ("HEALTHCHECK_DEADLINE_SECONDS", "soon"),
            ("HEALTHCHECK_URL", "localhost:8000"),
            ("HEALTHCHECK_URL", "http://localhost:8000/x'; reboot; '"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("HEALTHCHECK_URL", "http://localhost:8000/h"),
                ("HEALTHCHECK_DEADLINE_SECONDS", "60"),
                ("HEALTHCHECK_INTERVAL_SECONDS", "5"),
                ("ON_UNHEALTHY", "CONTINUE"),
                ("ON_NOT_REGISTERED", "ABANDON"),
            ],
            Config::from_env,
        );
    }
}
