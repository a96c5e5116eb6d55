use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent};
use lifecycle_hook_completer::autoscaling::AutoScalingLifecycle;
use lifecycle_hook_completer::config::Config;
use lifecycle_hook_completer::handler::{summary, timeout_warning, Completer, DEADLINE_MARGIN};
use lifecycle_hook_completer::ssm::SsmHealthProbe;
use serde_json::Value;
use shared::startup::Startup;

/// Between two GetCommandInvocation calls while the health check command runs: 2 to 4 s, jittered, so a scale-out
/// of many instances stays under SSM's GetCommandInvocation rate.
const COMMAND_POLL_INTERVAL: Duration = Duration::from_secs(4);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup {
        config,
        sdk,
        metrics,
        deadlines,
    } = shared::startup::init(
        "lifecycle-hook-completer",
        lifecycle_hook_completer::config::TIMEOUT,
        Config::from_env,
    )
    .await?;
    let probe = SsmHealthProbe::new(
        aws_sdk_ssm::Client::new(&sdk),
        &config.healthcheck_url,
        COMMAND_POLL_INTERVAL,
    );
    let lifecycle = AutoScalingLifecycle::new(aws_sdk_autoscaling::Client::new(&sdk));
    let completer = Completer::new(probe, lifecycle, config.clone(), metrics.clone());
    // The function's timeout is known only from the first invocation's deadline.
    let timeout_checked = AtomicBool::new(false);
    let deadlines = &deadlines;
    shared::startup::run(metrics, |event: LambdaEvent<Value>| {
        let (completer, config, timeout_checked) = (&completer, &config, &timeout_checked);
        async move {
            if !timeout_checked.swap(true, Ordering::Relaxed) {
                let remaining = deadlines
                    .work_deadline(event.context.deadline, Duration::ZERO)
                    .saturating_duration_since(tokio::time::Instant::now());
                if let Some(warning) = timeout_warning(remaining, config) {
                    tracing::warn!("{warning}");
                }
            }
            let act_by = deadlines.work_deadline(event.context.deadline, DEADLINE_MARGIN);
            Ok(summary(
                completer.handle(&event.payload, chrono::Utc::now(), act_by).await?,
            ))
        }
    })
    .await
}
