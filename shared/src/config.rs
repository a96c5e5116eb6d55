//! Configuration from environment variables, validated once at init.
//!
//! Every error names the variable, so a misconfigured deployment fails its first cold start with a message that
//! says what to fix instead of failing later, per record.

use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name} is required but not set")]
    Missing { name: String },
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(name: &str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads variables from a source: the process environment in production, a map in tests.
pub trait VarSource {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl VarSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl VarSource for std::collections::HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).map(|v| v.to_string())
    }
}

impl<T: VarSource + ?Sized> VarSource for &T {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

impl<T: VarSource + ?Sized> VarSource for std::sync::Arc<T> {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

/// A source that remembers every name asked for: a function's test proves with it that its configuration reads
/// exactly the variables it declares (and the SAM template test checks the template against that declaration).
#[derive(Default)]
pub struct RecordingSource {
    values: std::collections::HashMap<String, String>,
    asked: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl RecordingSource {
    pub fn new(values: &[(&str, &str)]) -> Self {
        Self {
            values: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            asked: Default::default(),
        }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

impl VarSource for RecordingSource {
    fn get(&self, name: &str) -> Option<String> {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
        self.values.get(name).cloned()
    }
}

/// Typed access to a [`VarSource`]. An empty or all-blank value counts as unset, as in the Lambda console.
pub struct Env<S: VarSource = ProcessEnv>(pub S);

impl Env<ProcessEnv> {
    pub fn process() -> Self {
        Env(ProcessEnv)
    }
}

impl Env<std::collections::HashMap<&'static str, &'static str>> {
    /// A fixed set of variables, for tests.
    pub fn from_pairs(pairs: &[(&'static str, &'static str)]) -> Self {
        Env(pairs.iter().copied().collect())
    }
}

impl<S: VarSource> Env<S> {
    /// The trimmed value, or `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name)
            .ok_or_else(|| ConfigError::Missing { name: name.to_owned() })
    }

    /// Parses the value with `FromStr`, or returns `default` when unset.
    pub fn parsed_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, &value, e.to_string())),
        }
    }

    /// One of `choices` (case-insensitive), or `default` when unset. Returns the matching choice as written in
    /// `choices`.
    pub fn choice_or(
        &self,
        name: &str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(&value))
                .copied()
                .ok_or_else(|| ConfigError::invalid(name, &value, format!("expected one of {}", choices.join(", ")))),
        }
    }

    /// An `http://` or `https://` URL, or `None` when unset.
    pub fn optional_url(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.optional(name) {
            None => Ok(None),
            Some(v) if v.starts_with("https://") || v.starts_with("http://") => Ok(Some(v)),
            Some(v) => Err(ConfigError::invalid(name, &v, "expected an http:// or https:// URL")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&'static str, &'static str)]) -> Env<HashMap<&'static str, &'static str>> {
        Env::from_pairs(pairs)
    }

    #[test]
    fn missing_required_variable_is_named_in_the_error() {
        let err = env(&[]).required("USER_POOL_ID").unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                name: "USER_POOL_ID".into()
            }
        );
        assert!(err.to_string().contains("USER_POOL_ID"));
    }

    #[test]
    fn blank_value_counts_as_unset() {
        assert!(env(&[("USER_POOL_ID", "  ")]).required("USER_POOL_ID").is_err());
        assert_eq!(env(&[("X", " a ")]).optional("X").as_deref(), Some("a"));
    }

    #[test]
    fn parsed_value_or_default_and_invalid_value_error() {
        assert_eq!(env(&[]).parsed_or("TTL", 300u64).unwrap(), 300);
        assert_eq!(env(&[("TTL", "0")]).parsed_or("TTL", 300u64).unwrap(), 0);
        let err = env(&[("TTL", "five")]).parsed_or("TTL", 300u64).unwrap_err();
        assert!(
            err.to_string().contains("TTL") && err.to_string().contains("five"),
            "{err}"
        );
    }

    #[test]
    fn choice_is_case_insensitive_and_rejects_others() {
        let choices = ["disable", "delete", "ignore"];
        assert_eq!(env(&[]).choice_or("ON", &choices, "disable").unwrap(), "disable");
        assert_eq!(
            env(&[("ON", "DELETE")]).choice_or("ON", &choices, "disable").unwrap(),
            "delete"
        );
        let err = env(&[("ON", "purge")])
            .choice_or("ON", &choices, "disable")
            .unwrap_err();
        assert!(err.to_string().contains("ON") && err.to_string().contains("disable, delete, ignore"));
    }

    #[test]
    fn url_must_have_a_scheme() {
        assert_eq!(env(&[]).optional_url("U").unwrap(), None);
        assert!(env(&[("U", "example.com")]).optional_url("U").is_err());
        assert_eq!(
            env(&[("U", "https://a.b")]).optional_url("U").unwrap().as_deref(),
            Some("https://a.b")
        );
    }
}
