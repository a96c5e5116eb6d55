//! The SDK adapters of the ports: the restriction parameter on SSM, the group's state from Auto Scaling.

use async_trait::async_trait;
use aws_sdk_autoscaling::types::LifecycleState;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::ParameterType;

use crate::ports::{GroupStatus, RestrictionStore, Stored, WriteError};
use crate::restriction::GroupState;

pub struct SsmParameter {
    client: aws_sdk_ssm::Client,
    name: String,
}

impl SsmParameter {
    pub fn new(client: aws_sdk_ssm::Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }
}

#[async_trait]
impl RestrictionStore for SsmParameter {
    async fn read(&self) -> Result<Option<Stored>, String> {
        match self.client.get_parameter().name(&self.name).send().await {
            Ok(output) => Ok(output.parameter().and_then(|p| Some(Stored { value: p.value()?.to_owned(), version: p.version() }))),
            Err(error) if error.code() == Some("ParameterNotFound") => Ok(None),
            Err(error) => Err(format!("reading {}: {}", self.name, aws_sdk_ssm::error::DisplayErrorContext(error))),
        }
    }

    async fn read_version(&self, version: i64) -> Result<Option<String>, String> {
        match self.client.get_parameter().name(format!("{}:{version}", self.name)).send().await {
            Ok(output) => Ok(output.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(error) if matches!(error.code(), Some("ParameterNotFound" | "ParameterVersionNotFound")) => Ok(None),
            Err(error) => Err(format!("reading {} version {version}: {}", self.name, aws_sdk_ssm::error::DisplayErrorContext(error))),
        }
    }

    async fn write(&self, value: &str) -> Result<i64, WriteError> {
        self.client.put_parameter().name(&self.name).value(value).r#type(ParameterType::String).overwrite(true).send().await.map(|o| o.version()).map_err(|e| {
            let contended = e.code() == Some("TooManyUpdates");
            let message = format!("writing {}: {}", self.name, aws_sdk_ssm::error::DisplayErrorContext(e));
            if contended {
                WriteError::Contended(message)
            } else {
                WriteError::Failed(message)
            }
        })
    }
}

pub struct AutoScalingGroups {
    client: aws_sdk_autoscaling::Client,
}

impl AutoScalingGroups {
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        Self { client }
    }
}

fn is_pending(state: &LifecycleState) -> bool {
    matches!(state, LifecycleState::Pending | LifecycleState::PendingWait | LifecycleState::PendingProceed)
}

#[async_trait]
impl GroupStatus for AutoScalingGroups {
    async fn describe(&self, group: &str) -> Result<Option<GroupState>, String> {
        let output = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| format!("describing {group}: {}", aws_sdk_autoscaling::error::DisplayErrorContext(e)))?;
        Ok(output.auto_scaling_groups().first().map(|g| {
            let states: Vec<&LifecycleState> = g.instances().iter().filter_map(|i| i.lifecycle_state()).collect();
            GroupState {
                desired: g.desired_capacity().unwrap_or(0).max(0) as u32,
                in_service: states.iter().filter(|s| ***s == LifecycleState::InService).count() as u32,
                pending: states.iter().filter(|s| is_pending(s)).count() as u32,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
    use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance};
    use aws_sdk_ssm::error::ErrorMetadata;
    use aws_sdk_ssm::operation::get_parameter::GetParameterError;
    use aws_sdk_ssm::types::error::ParameterNotFound;
    use aws_smithy_mocks::{mock, mock_client};

    #[tokio::test]
    async fn counts_in_service_and_pending_instances() {
        let instance = |id: &str, state: LifecycleState| {
            Instance::builder()
                .instance_id(id)
                .lifecycle_state(state)
                .availability_zone("eu-west-1a")
                .health_status("Healthy")
                .protected_from_scale_in(false)
                .build()
        };
        let rule = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(move || {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(
                    AutoScalingGroup::builder()
                        .auto_scaling_group_name("workers")
                        .desired_capacity(3)
                        .min_size(1)
                        .max_size(6)
                        .default_cooldown(300)
                        .availability_zones("eu-west-1a")
                        .health_check_type("EC2")
                        .created_time(aws_sdk_autoscaling::primitives::DateTime::from_secs(0))
                        .instances(instance("i-1", LifecycleState::InService))
                        .instances(instance("i-2", LifecycleState::PendingWait))
                        .instances(instance("i-3", LifecycleState::Pending))
                        .instances(instance("i-4", LifecycleState::Terminating))
                        .build(),
                )
                .build()
        });
        let groups = AutoScalingGroups::new(mock_client!(aws_sdk_autoscaling, [&rule]));
        assert_eq!(groups.describe("workers").await.unwrap(), Some(GroupState { desired: 3, in_service: 1, pending: 2 }));
    }

    #[tokio::test]
    async fn missing_parameter_reads_as_none() {
        let rule = mock!(aws_sdk_ssm::Client::get_parameter).then_error(|| {
            GetParameterError::ParameterNotFound(ParameterNotFound::builder().meta(ErrorMetadata::builder().code("ParameterNotFound").build()).build())
        });
        let parameter = SsmParameter::new(mock_client!(aws_sdk_ssm, [&rule]), "/bg-removal/restriction");
        assert_eq!(parameter.read().await, Ok(None));
    }
}
