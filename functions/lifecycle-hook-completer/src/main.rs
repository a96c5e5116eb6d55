use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use lifecycle_hook_completer::aws::{AutoScalingLifecycle, SsmHealthProbe};
use lifecycle_hook_completer::config::Config;
use lifecycle_hook_completer::handler::Completer;
use serde_json::Value;
use shared::startup::Startup;

/// Kept back from the invocation's deadline to complete the action and answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);
/// Between two GetCommandInvocation calls while the health check command runs.
const COMMAND_POLL_INTERVAL: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup { config, sdk, metrics } = shared::startup::init("lifecycle-hook-completer", Config::from_env).await?;
    let probe = SsmHealthProbe::new(aws_sdk_ssm::Client::new(&sdk), &config.healthcheck_url, COMMAND_POLL_INTERVAL);
    let lifecycle = AutoScalingLifecycle::new(aws_sdk_autoscaling::Client::new(&sdk));
    let completer = Arc::new(Completer::new(probe, lifecycle, config, metrics.clone()));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (completer, metrics) = (completer.clone(), metrics.clone());
        async move {
            let act_by = shared::deadline::work_deadline(event.context.deadline, DEADLINE_MARGIN);
            let result = completer.handle(&event.payload, chrono::Utc::now(), act_by).await;
            metrics.flush();
            // An error fails the invocation, so EventBridge / SNS retry it (a completion that could not be sent).
            let mut outcomes = result.map_err(|e| {
                tracing::error!(error = %e, "invocation failed");
                Error::from(e)
            })?;
            Ok::<Value, Error>(match outcomes.len() {
                1 => serde_json::to_value(outcomes.remove(0))?,
                _ => serde_json::json!({ "results": outcomes }),
            })
        }
    }))
    .await
}
