use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub restriction_parameter: String,
    pub autoscaling_group_name: String,
    /// `None`: every alarm that notifies restricts.
    pub restrict_on_alarms: Option<Vec<String>>,
    pub restriction_max: Duration,
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &[
        "RESTRICTION_PARAMETER",
        "AUTOSCALING_GROUP_NAME",
        "RESTRICT_ON_ALARMS",
        "RESTRICTION_MAX_SECONDS",
    ];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let restriction_parameter = env.required("RESTRICTION_PARAMETER")?;
        if !restriction_parameter.starts_with('/') && restriction_parameter.contains('/') {
            return Err(ConfigError::invalid(
                "RESTRICTION_PARAMETER",
                &restriction_parameter,
                "a hierarchical name must start with /",
            ));
        }
        let restrict_on_alarms = env
            .optional("RESTRICT_ON_ALARMS")
            .map(|names| {
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|names| !names.is_empty());
        let seconds: u64 = env.parsed_or("RESTRICTION_MAX_SECONDS", 900)?;
        if seconds == 0 {
            return Err(ConfigError::invalid(
                "RESTRICTION_MAX_SECONDS",
                "0",
                "must be at least 1",
            ));
        }
        Ok(Config {
            restriction_parameter,
            autoscaling_group_name: env.required("AUTOSCALING_GROUP_NAME")?,
            restrict_on_alarms,
            restriction_max: Duration::from_secs(seconds),
        })
    }

    pub fn restricts_on(&self, alarm: &str) -> bool {
        self.restrict_on_alarms
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == alarm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_and_alarm_list() {
        let c = config(&[
            ("RESTRICTION_PARAMETER", "/bg-removal/restriction"),
            ("AUTOSCALING_GROUP_NAME", "workers"),
        ])
        .unwrap();
        assert_eq!(c.restriction_max, Duration::from_secs(900));
        assert!(c.restricts_on("anything"));
        let c = config(&[
            ("RESTRICTION_PARAMETER", "/p"),
            ("AUTOSCALING_GROUP_NAME", "g"),
            ("RESTRICT_ON_ALARMS", " cpu_high , mem_high,"),
        ])
        .unwrap();
        assert_eq!(
            c.restrict_on_alarms,
            Some(vec!["cpu_high".to_string(), "mem_high".to_string()])
        );
        assert!(c.restricts_on("cpu_high") && !c.restricts_on("disk_full"));
    }

    #[test]
    fn errors_name_the_variable() {
        assert!(config(&[("AUTOSCALING_GROUP_NAME", "g")])
            .unwrap_err()
            .to_string()
            .contains("RESTRICTION_PARAMETER"));
        assert!(config(&[("RESTRICTION_PARAMETER", "/p")])
            .unwrap_err()
            .to_string()
            .contains("AUTOSCALING_GROUP_NAME"));
        let err = config(&[
            ("RESTRICTION_PARAMETER", "/p"),
            ("AUTOSCALING_GROUP_NAME", "g"),
            ("RESTRICTION_MAX_SECONDS", "0"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("RESTRICTION_MAX_SECONDS"));
        assert!(config(&[("RESTRICTION_PARAMETER", "bg/x"), ("AUTOSCALING_GROUP_NAME", "g")]).is_err());
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("RESTRICTION_PARAMETER", "/p"),
                ("AUTOSCALING_GROUP_NAME", "g"),
                ("RESTRICT_ON_ALARMS", "cpu_high"),
                ("RESTRICTION_MAX_SECONDS", "60"),
            ],
            Config::from_env,
        );
    }
}
