//! The group-state port on Auto Scaling: how many instances are in service and how many still launching.

use async_trait::async_trait;
use aws_sdk_autoscaling::types::LifecycleState;

use crate::ports::{DependencyError, GroupStatus};
use crate::restriction::GroupState;

pub struct AutoScalingGroups {
    client: aws_sdk_autoscaling::Client,
}

impl AutoScalingGroups {
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        Self { client }
    }
}

fn is_pending(state: &LifecycleState) -> bool {
    matches!(
        state,
        LifecycleState::Pending | LifecycleState::PendingWait | LifecycleState::PendingProceed
    )
}

#[async_trait]
impl GroupStatus for AutoScalingGroups {
    async fn describe(&self, group: &str) -> Result<Option<GroupState>, DependencyError> {
        let output = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| DependencyError::from_sdk(e).within(format!("describing {group}")))?;
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
        assert_eq!(
            groups.describe("workers").await.unwrap(),
            Some(GroupState {
                desired: 3,
                in_service: 1,
                pending: 2
            })
        );
    }
}
