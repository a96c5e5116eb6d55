use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub user_pool_id: String,
    /// The SSM `SecureString` with the signing key publish-history-email signs with.
    pub key_parameter: String,
    /// The key before the last rotation, still accepted so links in inboxes keep working.
    pub previous_key_parameter: Option<String>,
    /// The product the pages name: the display name of `SENDER_ADDRESS` (`Navlab <no-reply@navlab.online>`), the
    /// name recipients know from their inbox; never the address.
    pub product: String,
}

/// The display name of `Name <address>` (quotes taken off); `None` for a bare address or an empty name.
pub fn display_name(sender: &str) -> Option<String> {
    let (name, _) = sender.rsplit_once('<')?;
    let name = name.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_owned())
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &[
        "USER_POOL_ID",
        "UNSUBSCRIBE_KEY_PARAMETER",
        "UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER",
        "SENDER_ADDRESS",
    ];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Config {
            user_pool_id: env.required("USER_POOL_ID")?,
            key_parameter: env.required("UNSUBSCRIBE_KEY_PARAMETER")?,
            previous_key_parameter: env.optional("UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER"),
            product: {
                let sender = env.required("SENDER_ADDRESS")?;
                display_name(&sender).ok_or_else(|| {
                    ConfigError::invalid(
                        "SENDER_ADDRESS",
                        &sender,
                        "needs a display name (`Name <address>`): the pages name the product by it",
                    )
                })?
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDER: (&str, &str) = ("SENDER_ADDRESS", "Navlab <no-reply@navlab.online>");

    #[test]
    fn the_pool_the_key_and_a_named_sender_are_required() {
        let err = Config::from_env(&Env::from_pairs(&[("UNSUBSCRIBE_KEY_PARAMETER", "/k"), SENDER])).unwrap_err();
        assert!(err.to_string().contains("USER_POOL_ID"));
        assert!(Config::from_env(&Env::from_pairs(&[("USER_POOL_ID", "p"), SENDER]))
            .unwrap_err()
            .to_string()
            .contains("UNSUBSCRIBE_KEY_PARAMETER"));
        let c = Config::from_env(&Env::from_pairs(&[
            ("USER_POOL_ID", "p"),
            ("UNSUBSCRIBE_KEY_PARAMETER", "/k"),
            SENDER,
        ]))
        .unwrap();
        assert_eq!((c.previous_key_parameter, c.product.as_str()), (None, "Navlab"));
        for bare in ["no-reply@navlab.online", "<no-reply@navlab.online>"] {
            let err = Config::from_env(&Env::from_pairs(&[
                ("USER_POOL_ID", "p"),
                ("UNSUBSCRIBE_KEY_PARAMETER", "/k"),
                ("SENDER_ADDRESS", bare),
            ]))
            .unwrap_err();
            assert!(err.to_string().contains("SENDER_ADDRESS"), "{bare}: {err}");
        }
    }

    #[test]
    fn the_product_is_the_senders_display_name() {
        assert_eq!(
            display_name("Navlab <no-reply@navlab.online>").as_deref(),
            Some("Navlab")
        );
        assert_eq!(
            display_name("\"Navlab Studio\" <no-reply@navlab.online>").as_deref(),
            Some("Navlab Studio")
        );
        assert_eq!(display_name("no-reply@navlab.online"), None);
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("USER_POOL_ID", "p"),
                ("UNSUBSCRIBE_KEY_PARAMETER", "/k"),
                ("UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER", "/k-old"),
                SENDER,
            ],
            Config::from_env,
        );
    }
}
