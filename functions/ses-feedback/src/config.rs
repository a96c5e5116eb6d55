use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub user_pool_id: String,
    pub dead_letter_queue_url: Option<String>,
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &["USER_POOL_ID", "DEAD_LETTER_QUEUE_URL"];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Config {
            user_pool_id: env.required("USER_POOL_ID")?,
            dead_letter_queue_url: env.optional_url("DEAD_LETTER_QUEUE_URL")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_required_and_the_dead_letter_queue_a_url() {
        assert!(Config::from_env(&Env::from_pairs(&[]))
            .unwrap_err()
            .to_string()
            .contains("USER_POOL_ID"));
        let err = Config::from_env(&Env::from_pairs(&[
            ("USER_POOL_ID", "p"),
            ("DEAD_LETTER_QUEUE_URL", "not a url"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("DEAD_LETTER_QUEUE_URL"));
        assert_eq!(
            Config::from_env(&Env::from_pairs(&[("USER_POOL_ID", "p")]))
                .unwrap()
                .dead_letter_queue_url,
            None
        );
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("USER_POOL_ID", "eu-west-1_abc"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/dlq"),
            ],
            Config::from_env,
        );
    }
}
