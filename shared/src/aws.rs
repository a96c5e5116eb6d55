//! AWS client set-up: one `aws_config` load at init, shared by every client and reused across invocations.
//!
//! The standard chain is used untouched, so `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` point the functions
//! at a local AWS (moto) and nothing of that is set in production.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Standard retry mode (exponential backoff with jitter, throttling and 5xx retried) with a few more attempts than
/// the default three, because every worker runs under a service quota (Cognito, SES) that throttles bursts.
pub const MAX_ATTEMPTS: u32 = 4;

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(20))
        .build()
}

pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(timeouts())
        .load()
        .await
}
