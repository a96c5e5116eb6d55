//! What every function does at init, once: JSON logging, its configuration read and validated (an invalid one is
//! logged and ends the cold start with an error naming the variable), one `aws_config` load, and its metrics.

use std::sync::Arc;

use aws_config::SdkConfig;

use crate::config::{ConfigError, Env, ProcessEnv};
use crate::metrics::Metrics;

pub struct Startup<C> {
    pub config: C,
    pub sdk: SdkConfig,
    pub metrics: Arc<Metrics>,
}

pub async fn init<C>(service: &str, read_config: impl FnOnce(&Env<ProcessEnv>) -> Result<C, ConfigError>) -> Result<Startup<C>, ConfigError> {
    crate::logging::init();
    let config = read_config(&Env::process()).inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = crate::aws::load_sdk_config().await;
    Ok(Startup { config, sdk, metrics: Arc::new(Metrics::from_env(service)) })
}
