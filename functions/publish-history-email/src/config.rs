use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub user_pool_id: String,
    /// `no-reply@example.com` or `Example <no-reply@example.com>`; must be a verified SES identity.
    pub sender_address: String,
    pub app_base_url: Option<String>,
    pub publish_history_table: String,
    /// `Duration::ZERO` disables the cache across invocations (a batch still lists the pool once).
    pub subscriber_cache_ttl: Duration,
    pub ses_configuration_set: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    pub idempotency_table: Option<String>,
    /// How long a completed once-only record prevents a second send: at least the dead-letter queue's retention.
    pub idempotency_ttl: Duration,
    /// The one-click unsubscribe endpoint's public HTTPS base URL and the SSM parameter of the signing key: both, or
    /// neither (then the emails carry no unsubscribe link, and init says so).
    pub unsubscribe: Option<UnsubscribeSettings>,
    /// The function's own fan-out queue: chunks of large rows and every continuation.
    pub fanout_queue_url: String,
    /// The `MaximumConcurrency` of each of the function's two event sources (rows, fan-out): without the send-rate
    /// registry, an instance sends at the share of twice this many.
    pub maximum_concurrency: usize,
    /// ListUsers calls per second of one instance (Cognito allows 30 for the whole account).
    pub list_users_rate: f64,
    /// How long recipients wait, handed on, while the 24-hour send quota is spent (at most SQS's 900 s delay).
    pub daily_quota_retry: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeSettings {
    pub url: String,
    pub key_parameter: String,
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &[
        "USER_POOL_ID",
        "SENDER_ADDRESS",
        "APP_BASE_URL",
        "PUBLISH_HISTORY_TABLE",
        "SUBSCRIBER_CACHE_TTL_SECONDS",
        "SES_CONFIGURATION_SET",
        "DEAD_LETTER_QUEUE_URL",
        "IDEMPOTENCY_TABLE",
        "IDEMPOTENCY_TTL_SECONDS",
        "UNSUBSCRIBE_URL",
        "UNSUBSCRIBE_KEY_PARAMETER",
        "FANOUT_QUEUE_URL",
        "MAXIMUM_CONCURRENCY",
        "LIST_USERS_RATE",
        "DAILY_QUOTA_RETRY_SECONDS",
    ];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let sender_address = env.required("SENDER_ADDRESS")?;
        if !self::sender_address(&sender_address).is_some_and(|a| a.contains('@')) {
            return Err(ConfigError::invalid(
                "SENDER_ADDRESS",
                &sender_address,
                "expected name@domain or Display Name <name@domain>",
            ));
        }
        Ok(Config {
            user_pool_id: env.required("USER_POOL_ID")?,
            sender_address,
            app_base_url: env
                .optional_url("APP_BASE_URL")?
                .map(|u| u.trim_end_matches('/').to_owned()),
            publish_history_table: env
                .optional("PUBLISH_HISTORY_TABLE")
                .unwrap_or_else(|| "publish_history".into()),
            subscriber_cache_ttl: Duration::from_secs(env.parsed_or("SUBSCRIBER_CACHE_TTL_SECONDS", 300u64)?),
            ses_configuration_set: env.optional("SES_CONFIGURATION_SET"),
            dead_letter_queue_url: env.optional_url("DEAD_LETTER_QUEUE_URL")?,
            idempotency_table: env.optional("IDEMPOTENCY_TABLE"),
            idempotency_ttl: idempotency_ttl(env)?,
            unsubscribe: unsubscribe(env)?,
            fanout_queue_url: env
                .optional_url("FANOUT_QUEUE_URL")?
                .ok_or_else(|| ConfigError::Missing {
                    name: "FANOUT_QUEUE_URL".into(),
                })?,
            maximum_concurrency: bounded(env, "MAXIMUM_CONCURRENCY", 2, 1, 1000)? as usize,
            list_users_rate: {
                let rate: f64 = env.parsed_or("LIST_USERS_RATE", 10.0)?;
                if !(rate > 0.0 && rate <= 30.0) {
                    return Err(ConfigError::invalid(
                        "LIST_USERS_RATE",
                        &rate.to_string(),
                        "must be above 0 and at most 30 (Cognito's ListUsers quota for the account)",
                    ));
                }
                rate
            },
            daily_quota_retry: Duration::from_secs(bounded(env, "DAILY_QUOTA_RETRY_SECONDS", 900, 1, 900)?),
        })
    }
}

fn unsubscribe<S: VarSource>(env: &Env<S>) -> Result<Option<UnsubscribeSettings>, ConfigError> {
    let url = env.optional("UNSUBSCRIBE_URL");
    let key_parameter = env.optional("UNSUBSCRIBE_KEY_PARAMETER");
    match (url, key_parameter) {
        (None, None) => Ok(None),
        (Some(url), Some(key_parameter)) => {
            // Mailbox providers fetch one-click links over HTTPS only (RFC 8058).
            if !url.starts_with("https://") {
                return Err(ConfigError::invalid(
                    "UNSUBSCRIBE_URL",
                    &url,
                    "expected an https:// URL",
                ));
            }
            Ok(Some(UnsubscribeSettings { url, key_parameter }))
        }
        (Some(_), None) => Err(ConfigError::Missing {
            name: "UNSUBSCRIBE_KEY_PARAMETER".into(),
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            name: "UNSUBSCRIBE_URL".into(),
        }),
    }
}

/// An integer variable within `min..=max`.
fn bounded<S: VarSource>(env: &Env<S>, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let value: u64 = env.parsed_or(name, default)?;
    if !(min..=max).contains(&value) {
        return Err(ConfigError::invalid(
            name,
            &value.to_string(),
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

/// A once-only record must outlive every way a row comes back: an hour is the floor (a queue's own retries).
fn idempotency_ttl<S: VarSource>(env: &Env<S>) -> Result<Duration, ConfigError> {
    let default = crate::idempotency::DEFAULT_RECORD_TTL.as_secs();
    let seconds: u64 = env.parsed_or("IDEMPOTENCY_TTL_SECONDS", default)?;
    if seconds < 3600 {
        return Err(ConfigError::invalid(
            "IDEMPOTENCY_TTL_SECONDS",
            &seconds.to_string(),
            "must be at least 3600, and should be at least the dead-letter queue's MessageRetentionPeriod",
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// The bare address of `Name <address>` or of a bare address, trimmed; `None` when the brackets do not pair.
pub fn sender_address(sender: &str) -> Option<&str> {
    match (sender.rfind('<'), sender.rfind('>')) {
        (Some(open), Some(close)) if open < close => Some(sender[open + 1..close].trim()),
        (None, None) => Some(sender.trim()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FANOUT: (&str, &str) = ("FANOUT_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/fanout");

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut pairs = pairs.to_vec();
        if !pairs.iter().any(|(name, _)| *name == "FANOUT_QUEUE_URL") {
            pairs.push(FANOUT);
        }
        Config::from_env(&Env::from_pairs(&pairs))
    }

    #[test]
    fn defaults() {
        let c = config(&[
            ("USER_POOL_ID", "p"),
            ("SENDER_ADDRESS", "Navlab <no-reply@navlab.online>"),
        ])
        .unwrap();
        assert_eq!(c.publish_history_table, "publish_history");
        assert_eq!(c.subscriber_cache_ttl, Duration::from_secs(300));
        assert_eq!(
            (c.app_base_url, c.ses_configuration_set, c.idempotency_table),
            (None, None, None)
        );
        assert!(
            c.idempotency_ttl >= Duration::from_secs(14 * 24 * 3600),
            "the default outlives a 14-day dead-letter queue"
        );
        assert_eq!(
            (c.maximum_concurrency, c.list_users_rate, c.daily_quota_retry),
            (2, 10.0, Duration::from_secs(900))
        );
    }

    #[test]
    fn the_fanout_settings_are_required_or_bounded_and_name_their_variable() {
        let base = [("USER_POOL_ID", "p"), ("SENDER_ADDRESS", "a@b.co")];
        let err = Config::from_env(&Env::from_pairs(&base)).unwrap_err();
        assert!(err.to_string().contains("FANOUT_QUEUE_URL"), "{err}");
        for (name, value) in [
            ("MAXIMUM_CONCURRENCY", "0"),
            ("LIST_USERS_RATE", "31"),
            ("LIST_USERS_RATE", "0"),
            ("DAILY_QUOTA_RETRY_SECONDS", "901"),
        ] {
            let err = config(&[base[0], base[1], (name, value)]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        assert!(config(&[("SENDER_ADDRESS", "a@b.co")])
            .unwrap_err()
            .to_string()
            .contains("USER_POOL_ID"));
        assert!(config(&[("USER_POOL_ID", "p")])
            .unwrap_err()
            .to_string()
            .contains("SENDER_ADDRESS"));
        assert!(config(&[("USER_POOL_ID", "p"), ("SENDER_ADDRESS", "nobody")])
            .unwrap_err()
            .to_string()
            .contains("SENDER_ADDRESS"));
        let err = config(&[
            ("USER_POOL_ID", "p"),
            ("SENDER_ADDRESS", "a@b.co"),
            ("SUBSCRIBER_CACHE_TTL_SECONDS", "-1"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SUBSCRIBER_CACHE_TTL_SECONDS"));
        let err = config(&[
            ("USER_POOL_ID", "p"),
            ("SENDER_ADDRESS", "a@b.co"),
            ("APP_BASE_URL", "app.example.com"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("APP_BASE_URL"));
        let err = config(&[
            ("USER_POOL_ID", "p"),
            ("SENDER_ADDRESS", "a@b.co"),
            ("IDEMPOTENCY_TTL_SECONDS", "60"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("IDEMPOTENCY_TTL_SECONDS"));
    }

    #[test]
    fn unsubscribe_needs_both_variables_and_https() {
        let base = [("USER_POOL_ID", "p"), ("SENDER_ADDRESS", "a@b.co")];
        assert_eq!(config(&base).unwrap().unsubscribe, None);
        let both = config(&[
            base[0],
            base[1],
            ("UNSUBSCRIBE_URL", "https://u.example.com/u"),
            ("UNSUBSCRIBE_KEY_PARAMETER", "/k"),
        ])
        .unwrap();
        assert_eq!(
            both.unsubscribe,
            Some(UnsubscribeSettings {
                url: "https://u.example.com/u".into(),
                key_parameter: "/k".into()
            })
        );
        let err = config(&[base[0], base[1], ("UNSUBSCRIBE_URL", "https://u.example.com/u")]).unwrap_err();
        assert!(err.to_string().contains("UNSUBSCRIBE_KEY_PARAMETER"), "{err}");
        let err = config(&[base[0], base[1], ("UNSUBSCRIBE_KEY_PARAMETER", "/k")]).unwrap_err();
        assert!(err.to_string().contains("UNSUBSCRIBE_URL"), "{err}");
        let err = config(&[
            base[0],
            base[1],
            ("UNSUBSCRIBE_URL", "http://u.example.com/u"),
            ("UNSUBSCRIBE_KEY_PARAMETER", "/k"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("UNSUBSCRIBE_URL") && err.to_string().contains("https"),
            "{err}"
        );
    }

    #[test]
    fn sender_address_is_the_bare_trimmed_address() {
        assert_eq!(
            sender_address("Navlab < no-reply@navlab.online >"),
            Some("no-reply@navlab.online")
        );
        assert_eq!(
            sender_address(" no-reply@navlab.online "),
            Some("no-reply@navlab.online")
        );
        assert_eq!(sender_address("Navlab <no-reply@navlab.online"), None);
    }

    #[test]
    fn zero_ttl_and_trailing_slash() {
        let c = config(&[
            ("USER_POOL_ID", "p"),
            ("SENDER_ADDRESS", "a@b.co"),
            ("SUBSCRIBER_CACHE_TTL_SECONDS", "0"),
            ("APP_BASE_URL", "https://app.example.com/"),
        ])
        .unwrap();
        assert_eq!(c.subscriber_cache_ttl, Duration::ZERO);
        assert_eq!(c.app_base_url.as_deref(), Some("https://app.example.com"));
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("USER_POOL_ID", "p"),
                ("SENDER_ADDRESS", "a@b.co"),
                ("APP_BASE_URL", "https://app.example.com"),
                ("PUBLISH_HISTORY_TABLE", "ph"),
                ("SUBSCRIBER_CACHE_TTL_SECONDS", "60"),
                ("SES_CONFIGURATION_SET", "cs"),
                ("DEAD_LETTER_QUEUE_URL", "https://q"),
                ("IDEMPOTENCY_TABLE", "t"),
                FANOUT,
            ],
            Config::from_env,
        );
    }
}
