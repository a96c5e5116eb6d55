use std::sync::Arc;

use alarm_instance_updater::aws::{AutoScalingGroups, SsmParameter};
use alarm_instance_updater::config::Config;
use alarm_instance_updater::handler::Updater;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::startup::Startup;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup { config, sdk, metrics } = shared::startup::init("alarm-instance-updater", Config::from_env).await?;
    let parameter = SsmParameter::new(aws_sdk_ssm::Client::new(&sdk), config.restriction_parameter.clone());
    let groups = AutoScalingGroups::new(aws_sdk_autoscaling::Client::new(&sdk));
    let updater = Arc::new(Updater::new(parameter, groups, config, metrics.clone()));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (updater, metrics) = (updater.clone(), metrics.clone());
        async move {
            // An error makes the invocation fail, so SNS / EventBridge / the alarm's asynchronous invocation retries
            // it and, after the retries, hands it to the function's failure destination: nothing is lost.
            let result = updater.handle(&event.payload, chrono::Utc::now()).await;
            metrics.flush();
            result.map_err(|e| {
                tracing::error!(error = %e, "invocation failed");
                Error::from(e)
            })
        }
    }))
    .await
}
