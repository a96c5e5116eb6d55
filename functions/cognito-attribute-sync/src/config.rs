use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

/// What to do with the Cognito user of a deleted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUserDeleted {
    /// The default: the account can no longer sign in, and can still be restored.
    Disable,
    Delete,
    Ignore,
}

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub user_pool_id: String,
    pub on_user_deleted: OnUserDeleted,
    pub dead_letter_queue_url: Option<String>,
    /// The ordering guard's DynamoDB table.
    pub ordering_table: String,
    /// How long a change of a user not (yet) in the pool is retried before it is skipped.
    pub user_not_found_retry: Duration,
    /// A deletion versioned on the API's clock (`occurredAt`) wins over changes up to this much newer: the API's and
    /// the database's clocks may disagree, and a deleted user left enabled is the worse error.
    pub delete_skew_tolerance: Duration,
    /// This instance's pace of Cognito writes (`USER_UPDATES_PER_SECOND`): its share of the account's `UserUpdate`
    /// quota; reads are paced at the same share of `UserRead`.
    pub user_updates_per_second: f64,
}

/// One instance's share of Cognito's 25 user updates a second: the event source runs at most two instances
/// (`MaximumConcurrency`), which together keep 23 a second on average and leave 2 to the other writers
/// (unsubscribe, ses-feedback) and the SDK's retries. The pacer puts at most 12 slots into any second at this rate,
/// as at 11, so two instances never ask for more than 24 in one second.
pub const DEFAULT_USER_UPDATES_PER_SECOND: f64 = 11.5;

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &[
        "USER_POOL_ID",
        "ON_USER_DELETED",
        "DEAD_LETTER_QUEUE_URL",
        "ORDERING_TABLE",
        "USER_NOT_FOUND_RETRY_SECONDS",
        "DELETE_SKEW_TOLERANCE_SECONDS",
        "USER_UPDATES_PER_SECOND",
    ];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let on_user_deleted = match env.choice_or("ON_USER_DELETED", &["disable", "delete", "ignore"], "disable")? {
            "delete" => OnUserDeleted::Delete,
            "ignore" => OnUserDeleted::Ignore,
            _ => OnUserDeleted::Disable,
        };
        let user_updates_per_second: f64 = env.parsed_or("USER_UPDATES_PER_SECOND", DEFAULT_USER_UPDATES_PER_SECOND)?;
        if !(user_updates_per_second.is_finite() && user_updates_per_second > 0.0) {
            return Err(ConfigError::invalid(
                "USER_UPDATES_PER_SECOND",
                &user_updates_per_second.to_string(),
                "must be a rate above 0",
            ));
        }
        Ok(Config {
            user_pool_id: env.required("USER_POOL_ID")?,
            on_user_deleted,
            dead_letter_queue_url: env.optional_url("DEAD_LETTER_QUEUE_URL")?,
            ordering_table: env.required("ORDERING_TABLE")?,
            user_not_found_retry: Duration::from_secs(env.parsed_or("USER_NOT_FOUND_RETRY_SECONDS", 300)?),
            delete_skew_tolerance: Duration::from_secs(env.parsed_or("DELETE_SKEW_TOLERANCE_SECONDS", 5)?),
            user_updates_per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_disable_and_requires_the_pool_and_the_ordering_table() {
        let env = Env::from_pairs(&[("USER_POOL_ID", "eu-west-1_abc"), ("ORDERING_TABLE", "ordering")]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.on_user_deleted, OnUserDeleted::Disable);
        assert_eq!(config.dead_letter_queue_url, None);
        assert_eq!(config.user_not_found_retry, Duration::from_secs(300));
        assert_eq!(config.delete_skew_tolerance, Duration::from_secs(5));
        assert_eq!(config.user_updates_per_second, DEFAULT_USER_UPDATES_PER_SECOND);
        for bad in ["0", "-3", "fast"] {
            let err = Config::from_env(&Env::from_pairs(&[
                ("USER_POOL_ID", "p"),
                ("ORDERING_TABLE", "o"),
                ("USER_UPDATES_PER_SECOND", bad),
            ]))
            .unwrap_err();
            assert!(err.to_string().contains("USER_UPDATES_PER_SECOND"), "{bad}: {err}");
        }
        let err = Config::from_env(&Env::from_pairs(&[("ORDERING_TABLE", "ordering")])).unwrap_err();
        assert!(err.to_string().contains("USER_POOL_ID"));
        let err = Config::from_env(&Env::from_pairs(&[("USER_POOL_ID", "p")])).unwrap_err();
        assert!(err.to_string().contains("ORDERING_TABLE"));
        let err = Config::from_env(&Env::from_pairs(&[
            ("USER_POOL_ID", "p"),
            ("ORDERING_TABLE", "o"),
            ("USER_NOT_FOUND_RETRY_SECONDS", "soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("USER_NOT_FOUND_RETRY_SECONDS"));
    }

    #[test]
    fn rejects_an_unknown_deletion_policy_by_name() {
        let env = Env::from_pairs(&[
            ("USER_POOL_ID", "p"),
            ("ON_USER_DELETED", "purge"),
            ("ORDERING_TABLE", "o"),
        ]);
        assert!(Config::from_env(&env)
            .unwrap_err()
            .to_string()
            .contains("ON_USER_DELETED"));
        let env = Env::from_pairs(&[
            ("USER_POOL_ID", "p"),
            ("ON_USER_DELETED", "Delete"),
            ("ORDERING_TABLE", "o"),
        ]);
        assert_eq!(Config::from_env(&env).unwrap().on_user_deleted, OnUserDeleted::Delete);
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("USER_POOL_ID", "eu-west-1_abc"),
                ("ON_USER_DELETED", "delete"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/dlq"),
                ("ORDERING_TABLE", "ordering"),
                ("USER_NOT_FOUND_RETRY_SECONDS", "60"),
                ("DELETE_SKEW_TOLERANCE_SECONDS", "10"),
                ("USER_UPDATES_PER_SECOND", "5"),
            ],
            Config::from_env,
        );
    }
}
