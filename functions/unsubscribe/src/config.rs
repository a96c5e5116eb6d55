use shared::config::{ConfigError, Env, VarSource};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub user_pool_id: String,
    /// The SSM `SecureString` with the signing key publish-history-email signs with.
    pub key_parameter: String,
    /// The key before the last rotation, still accepted so links in inboxes keep working.
    pub previous_key_parameter: Option<String>,
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &["USER_POOL_ID", "UNSUBSCRIBE_KEY_PARAMETER", "UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER"];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Config {
            user_pool_id: env.required("USER_POOL_ID")?,
            key_parameter: env.required("UNSUBSCRIBE_KEY_PARAMETER")?,
            previous_key_parameter: env.optional("UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_and_the_key_are_required() {
        assert!(Config::from_env(&Env::from_pairs(&[("UNSUBSCRIBE_KEY_PARAMETER", "/k")])).unwrap_err().to_string().contains("USER_POOL_ID"));
        assert!(Config::from_env(&Env::from_pairs(&[("USER_POOL_ID", "p")])).unwrap_err().to_string().contains("UNSUBSCRIBE_KEY_PARAMETER"));
        let c = Config::from_env(&Env::from_pairs(&[("USER_POOL_ID", "p"), ("UNSUBSCRIBE_KEY_PARAMETER", "/k")])).unwrap();
        assert_eq!(c.previous_key_parameter, None);
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[("USER_POOL_ID", "p"), ("UNSUBSCRIBE_KEY_PARAMETER", "/k"), ("UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER", "/k-old")],
            Config::from_env,
        );
    }
}
