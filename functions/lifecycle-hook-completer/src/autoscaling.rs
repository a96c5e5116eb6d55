//! The lifecycle-action port on Auto Scaling: the hook's definition, heartbeats and the verdict.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_autoscaling::error::ProvideErrorMetadata;

use crate::config::LifecycleResult;
use crate::event::LifecycleAction;
use crate::ports::{Completion, DependencyError, Hook, LifecycleActions};

pub struct AutoScalingLifecycle {
    client: aws_sdk_autoscaling::Client,
}

impl AutoScalingLifecycle {
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        Self { client }
    }
}

/// Auto Scaling answers a completion or heartbeat for an action that is no longer pending with a ValidationError
/// "No active Lifecycle Action found with instance ID ...".
fn completion<E, R>(
    result: Result<R, aws_sdk_autoscaling::error::SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>>,
) -> Result<Completion, DependencyError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(Completion::Completed),
        Err(error)
            if error
                .message()
                .is_some_and(|m| m.contains("No active Lifecycle Action")) =>
        {
            Ok(Completion::NoActiveAction)
        }
        Err(error) => Err(DependencyError::from_sdk(error)),
    }
}

#[async_trait]
impl LifecycleActions for AutoScalingLifecycle {
    async fn hook(&self, group: &str, hook: &str) -> Result<Option<Hook>, DependencyError> {
        let output = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .lifecycle_hook_names(hook)
            .send()
            .await
            .map_err(DependencyError::from_sdk)?;
        Ok(output.lifecycle_hooks().first().map(|hook| Hook {
            heartbeat_timeout: hook.heartbeat_timeout().map(|s| Duration::from_secs(s.max(0) as u64)),
            default_result: hook.default_result().and_then(LifecycleResult::parse),
        }))
    }

    async fn record_heartbeat(&self, action: &LifecycleAction) -> Result<Completion, DependencyError> {
        completion(
            self.client
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(&action.auto_scaling_group_name)
                .lifecycle_hook_name(&action.lifecycle_hook_name)
                .lifecycle_action_token(&action.lifecycle_action_token)
                .instance_id(&action.ec2_instance_id)
                .send()
                .await,
        )
    }

    async fn complete(&self, action: &LifecycleAction, result: LifecycleResult) -> Result<Completion, DependencyError> {
        completion(
            self.client
                .complete_lifecycle_action()
                .auto_scaling_group_name(&action.auto_scaling_group_name)
                .lifecycle_hook_name(&action.lifecycle_hook_name)
                .lifecycle_action_token(&action.lifecycle_action_token)
                .instance_id(&action.ec2_instance_id)
                .lifecycle_action_result(result.as_str())
                .send()
                .await,
        )
    }
}

// moto lacks CompleteLifecycleAction and RecordLifecycleActionHeartbeat, so the adapter is tested here against the
// SDK's own mocks.
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::operation::complete_lifecycle_action::{
        CompleteLifecycleActionError, CompleteLifecycleActionOutput,
    };
    use aws_sdk_autoscaling::operation::describe_lifecycle_hooks::DescribeLifecycleHooksOutput;
    use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatOutput;
    use aws_sdk_autoscaling::types::LifecycleHook;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn action() -> LifecycleAction {
        LifecycleAction {
            lifecycle_action_token: "token-1".into(),
            auto_scaling_group_name: "workers".into(),
            lifecycle_hook_name: "workers-launching".into(),
            ec2_instance_id: "i-1".into(),
            lifecycle_transition: crate::event::LAUNCHING.into(),
            notification_metadata: None,
            origin: None,
            destination: None,
        }
    }

    #[tokio::test]
    async fn complete_sends_token_instance_and_result_and_tolerates_no_active_action() {
        let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
            .match_requests(|r| {
                r.auto_scaling_group_name() == Some("workers")
                    && r.lifecycle_hook_name() == Some("workers-launching")
                    && r.lifecycle_action_token() == Some("token-1")
                    && r.instance_id() == Some("i-1")
                    && r.lifecycle_action_result() == Some("ABANDON")
            })
            .then_output(|| CompleteLifecycleActionOutput::builder().build());
        let lifecycle = AutoScalingLifecycle::new(mock_client!(aws_sdk_autoscaling, [&complete]));
        assert_eq!(
            lifecycle.complete(&action(), LifecycleResult::Abandon).await,
            Ok(Completion::Completed)
        );

        let gone = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action).then_error(|| {
            CompleteLifecycleActionError::generic(
                aws_sdk_autoscaling::error::ErrorMetadata::builder()
                    .code("ValidationError")
                    .message("No active Lifecycle Action found with instance ID i-1")
                    .build(),
            )
        });
        let lifecycle = AutoScalingLifecycle::new(mock_client!(aws_sdk_autoscaling, [&gone]));
        assert_eq!(
            lifecycle.complete(&action(), LifecycleResult::Continue).await,
            Ok(Completion::NoActiveAction)
        );
    }

    #[tokio::test]
    async fn heartbeat_and_the_hooks_timeout_and_default_result() {
        let heartbeat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
            .match_requests(|r| r.lifecycle_action_token() == Some("token-1") && r.instance_id() == Some("i-1"))
            .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
        let hooks = mock!(aws_sdk_autoscaling::Client::describe_lifecycle_hooks)
            .match_requests(|r| {
                r.auto_scaling_group_name() == Some("workers") && r.lifecycle_hook_names() == ["workers-launching"]
            })
            .then_output(|| {
                DescribeLifecycleHooksOutput::builder()
                    .lifecycle_hooks(
                        LifecycleHook::builder()
                            .lifecycle_hook_name("workers-launching")
                            .heartbeat_timeout(450)
                            .default_result("ABANDON")
                            .build(),
                    )
                    .build()
            });
        let lifecycle = AutoScalingLifecycle::new(mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            [&heartbeat, &hooks]
        ));
        let hook = Hook {
            heartbeat_timeout: Some(Duration::from_secs(450)),
            default_result: Some(LifecycleResult::Abandon),
        };
        assert_eq!(lifecycle.hook("workers", "workers-launching").await, Ok(Some(hook)));
        assert_eq!(lifecycle.record_heartbeat(&action()).await, Ok(Completion::Completed));
    }
}
