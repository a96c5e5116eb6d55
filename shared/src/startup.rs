//! What every function does at init, once: JSON logging, its configuration read and validated (an invalid one is
//! logged and ends the cold start with an error naming the variable), its deadline rule, one `aws_config` load, and
//! its metrics; then [`run`], the one invocation loop of every function.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ConfigError, Env, ProcessEnv};
use crate::deadline::DeadlineRule;
use crate::metrics::Metrics;

pub struct Startup<C> {
    pub config: C,
    pub sdk: SdkConfig,
    pub metrics: Arc<Metrics>,
    /// How this function reads its invocations' deadlines (see [`crate::deadline`]).
    pub deadlines: DeadlineRule,
}

/// `timeout` is the function's `Timeout` in the template: the budget of an invocation whose deadline is already past
/// when it arrives, which only cargo-lambda's emulator sends.
pub async fn init<C>(
    service: &str,
    timeout: Duration,
    read_config: impl FnOnce(&Env<ProcessEnv>) -> Result<C, ConfigError>,
) -> Result<Startup<C>, ConfigError> {
    crate::logging::init();
    let invalid = |e: &ConfigError| tracing::error!(error_type = "ConfigError", error = %e, "invalid configuration");
    let config = read_config(&Env::process()).inspect_err(invalid)?;
    let deadlines = DeadlineRule::from_env(&Env::process(), timeout).inspect_err(invalid)?;
    let sdk = crate::aws::load_sdk_config().await.inspect_err(invalid)?;
    Ok(Startup {
        config,
        sdk,
        metrics: Arc::new(Metrics::from_env(service)),
        deadlines,
    })
}

/// A failed invocation, with the readable `errorType` that Lambda reports to failure destinations and CloudWatch
/// (`MalformedEvent`, `HealthCheckFailed`, ...) instead of a Rust type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FunctionError {
    pub kind: &'static str,
    pub message: String,
}

impl FunctionError {
    pub fn new(kind: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Diagnostic {
        Diagnostic {
            error_type: error.kind.to_owned(),
            error_message: error.message,
        }
    }
}

/// Runs the function: each invocation's event goes to `handler`; its metrics are flushed after it, whatever the
/// outcome, and a failure is logged with its kind before Lambda reports it.
pub async fn run<E, R, F, Fut>(metrics: Arc<Metrics>, handler: F) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned,
    R: Serialize,
    F: Fn(LambdaEvent<E>) -> Fut,
    Fut: Future<Output = Result<R, FunctionError>>,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| {
        let metrics = metrics.clone();
        async move {
            let result = handler(event).await;
            metrics.flush();
            if let Err(error) = &result {
                tracing::error!(error_type = error.kind, error = %error.message, "invocation failed");
            }
            result
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_type_is_the_kind_not_a_rust_type() {
        let diagnostic = Diagnostic::from(FunctionError::new("MalformedEvent", "no detail"));
        assert_eq!(diagnostic.error_type, "MalformedEvent");
        assert_eq!(diagnostic.error_message, "no detail");
    }
}
