use alarm_instance_updater::autoscaling::AutoScalingGroups;
use alarm_instance_updater::config::Config;
use alarm_instance_updater::handler::Updater;
use alarm_instance_updater::ssm::SsmParameter;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::startup::Startup;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup {
        config, sdk, metrics, ..
    } = shared::startup::init(
        "alarm-instance-updater",
        alarm_instance_updater::config::TIMEOUT,
        Config::from_env,
    )
    .await?;
    let parameter = SsmParameter::new(aws_sdk_ssm::Client::new(&sdk), config.restriction_parameter.clone());
    let groups = AutoScalingGroups::new(aws_sdk_autoscaling::Client::new(&sdk));
    let updater = Updater::new(parameter, groups, config, metrics.clone());
    shared::startup::run(metrics, |event: LambdaEvent<Value>| {
        let updater = &updater;
        async move { updater.handle(&event.payload, chrono::Utc::now()).await }
    })
    .await
}
