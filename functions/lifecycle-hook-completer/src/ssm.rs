//! The health-check port on SSM Run Command: the check runs on the instance, and its result is polled until the
//! deadline.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::CommandInvocationStatus;
use tokio::time::Instant;

use crate::ports::{DependencyError, Health, HealthProbe};

/// The shell command run on the instance: an HTTP GET with a short timeout (curl, or wget where curl is missing).
pub fn healthcheck_command(url: &str) -> String {
    format!("curl -fsS --max-time 5 -o /dev/null '{url}' || wget -q -T 5 -O /dev/null '{url}'")
}

/// How long SSM may take to run the command before it counts as timed out (the handler waits as long for a result).
pub const COMMAND_TIMEOUT_SECONDS: i32 = 30;
const OUTPUT_EXCERPT_CHARS: usize = 200;

pub struct SsmHealthProbe {
    client: aws_sdk_ssm::Client,
    command: String,
    /// The wait before each GetCommandInvocation while the command runs, jittered between half and all of it.
    poll_interval: Duration,
}

/// SSM's answer to a call over its rate (after the SDK's own retries).
fn throttled(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded")
    )
}

impl SsmHealthProbe {
    pub fn new(client: aws_sdk_ssm::Client, url: &str, poll_interval: Duration) -> Self {
        Self {
            client,
            command: healthcheck_command(url),
            poll_interval,
        }
    }

    /// Sleeps `pause` unless that passes `deadline`; false when it would.
    async fn pause(pause: Duration, deadline: Instant) -> bool {
        if Instant::now() + pause > deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        true
    }
}

#[async_trait]
impl HealthProbe for SsmHealthProbe {
    async fn check(&self, instance_id: &str, deadline: Instant) -> Result<Health, DependencyError> {
        let mut throttles = 0;
        let command_id = loop {
            let sent = self
                .client
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(instance_id)
                .parameters("commands", vec![self.command.clone()])
                .timeout_seconds(COMMAND_TIMEOUT_SECONDS)
                .comment("lifecycle-hook-completer health check")
                .send()
                .await;
            match sent {
                Ok(output) => match output.command().and_then(|c| c.command_id()) {
                    Some(id) => break id.to_owned(),
                    None => {
                        return Err(DependencyError::Unavailable(
                            "SendCommand returned no command id".into(),
                        ))
                    }
                },
                // The SSM agent has not registered the instance yet: normal during the first minute of a launch.
                Err(error) if error.code() == Some("InvalidInstanceId") => return Ok(Health::NotRegistered),
                // Throttled past the SDK's retries: no result yet, which says nothing of the instance.
                Err(error) if throttled(error.code()) => {
                    throttles += 1;
                    if !Self::pause(
                        shared::backoff::jittered(Duration::from_secs(2), throttles, Duration::from_secs(10)),
                        deadline,
                    )
                    .await
                    {
                        return Ok(Health::NoResultInTime(format!(
                            "SSM throttled SendCommand {throttles} time(s); no result in time"
                        )));
                    }
                }
                Err(error) => {
                    return Err(DependencyError::from_sdk(error).within("SendCommand failed"));
                }
            }
        };
        let mut throttles = 0;
        loop {
            let wait = if throttles > 0 {
                shared::backoff::jittered(Duration::from_secs(2), throttles, Duration::from_secs(10))
            } else {
                shared::backoff::jittered(self.poll_interval, 1, self.poll_interval)
            };
            if !Self::pause(wait, deadline).await {
                return Ok(Health::NoResultInTime(format!(
                    "command {command_id} gave no result in time"
                )));
            }
            let invocation = self
                .client
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(instance_id)
                .send()
                .await;
            let output = match invocation {
                Ok(output) => output,
                // Right after SendCommand the invocation may not exist yet.
                Err(error) if error.code() == Some("InvocationDoesNotExist") => continue,
                Err(error) if throttled(error.code()) => {
                    throttles += 1;
                    continue;
                }
                Err(error) => {
                    return Err(DependencyError::from_sdk(error).within("GetCommandInvocation failed"));
                }
            };
            throttles = 0;
            match output.status() {
                Some(CommandInvocationStatus::Success) => return Ok(Health::Healthy),
                Some(
                    CommandInvocationStatus::Pending
                    | CommandInvocationStatus::InProgress
                    | CommandInvocationStatus::Delayed,
                )
                | None => continue,
                Some(status) => {
                    let detail = output
                        .standard_error_content()
                        .filter(|e| !e.trim().is_empty())
                        .or(output.standard_output_content())
                        .unwrap_or_default();
                    let excerpt: String = detail.trim().chars().take(OUTPUT_EXCERPT_CHARS).collect();
                    return Ok(Health::NotYet(format!(
                        "health check command {}: {excerpt}",
                        status.as_str()
                    )));
                }
            }
        }
    }
}

// moto's SSM commands always succeed, so the adapter is tested here against the SDK's own mocks.
#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::error::ErrorMetadata as SsmErrorMetadata;
    use aws_sdk_ssm::operation::get_command_invocation::{GetCommandInvocationError, GetCommandInvocationOutput};
    use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
    use aws_sdk_ssm::types::error::{InvalidInstanceId, InvocationDoesNotExist};
    use aws_sdk_ssm::types::Command;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn sent() -> SendCommandOutput {
        SendCommandOutput::builder()
            .command(Command::builder().command_id("cmd-1").build())
            .build()
    }

    fn invocation(status: CommandInvocationStatus, stderr: &str) -> GetCommandInvocationOutput {
        GetCommandInvocationOutput::builder()
            .status(status)
            .standard_error_content(stderr)
            .build()
    }

    fn probe(rules: &[&aws_smithy_mocks::Rule]) -> SsmHealthProbe {
        SsmHealthProbe::new(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, rules),
            "http://localhost:8000/healthcheck",
            Duration::from_millis(10),
        )
    }

    #[tokio::test]
    async fn healthy_after_the_invocation_appears_and_succeeds() {
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| {
                r.document_name() == Some("AWS-RunShellScript")
                    && r.instance_ids() == ["i-1"]
                    && r.parameters().unwrap()["commands"][0].contains("'http://localhost:8000/healthcheck'")
            })
            .then_output(sent);
        let get = mock!(aws_sdk_ssm::Client::get_command_invocation)
            .match_requests(|r| r.command_id() == Some("cmd-1") && r.instance_id() == Some("i-1"))
            .sequence()
            .error(|| {
                GetCommandInvocationError::InvocationDoesNotExist(
                    InvocationDoesNotExist::builder()
                        .meta(SsmErrorMetadata::builder().code("InvocationDoesNotExist").build())
                        .build(),
                )
            })
            .output(|| invocation(CommandInvocationStatus::InProgress, ""))
            .output(|| invocation(CommandInvocationStatus::Success, ""))
            .build();
        let health = probe(&[&send, &get])
            .check("i-1", Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(health, Ok(Health::Healthy));
        assert_eq!(get.num_calls(), 3);
    }

    #[tokio::test]
    async fn failed_command_and_unregistered_instance_are_not_healthy_yet() {
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(sent);
        let get = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
            invocation(
                CommandInvocationStatus::Failed,
                "curl: (7) Failed to connect to localhost port 8000",
            )
        });
        let health = probe(&[&send, &get])
            .check("i-1", Instant::now() + Duration::from_secs(5))
            .await;
        assert!(
            matches!(&health, Ok(Health::NotYet(why)) if why.contains("Failed") && why.contains("port 8000")),
            "{health:?}"
        );

        let unregistered = mock!(aws_sdk_ssm::Client::send_command).then_error(|| {
            SendCommandError::InvalidInstanceId(
                InvalidInstanceId::builder()
                    .meta(SsmErrorMetadata::builder().code("InvalidInstanceId").build())
                    .build(),
            )
        });
        let health = probe(&[&unregistered])
            .check("i-1", Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(health, Ok(Health::NotRegistered));
    }

    /// The throttles reach the probe, as they do once the SDK's own retries are spent.
    fn probe_past_sdk_retries(rules: &[&aws_smithy_mocks::Rule]) -> SsmHealthProbe {
        let client = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, rules, |c| c
            .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled()));
        SsmHealthProbe::new(client, "http://localhost:8000/healthcheck", Duration::from_millis(10))
    }

    fn throttling() -> SsmErrorMetadata {
        SsmErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build()
    }

    /// Throttling past the SDK's retries means "no result yet": backed off and tried again within the deadline,
    /// and at the deadline no result, never a failed check.
    #[tokio::test]
    async fn ssm_throttling_is_backed_off_and_is_no_result_yet() {
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .sequence()
            .error(|| SendCommandError::generic(throttling()))
            .output(sent)
            .build();
        let get = mock!(aws_sdk_ssm::Client::get_command_invocation)
            .sequence()
            .error(|| GetCommandInvocationError::generic(throttling()))
            .output(|| invocation(CommandInvocationStatus::Success, ""))
            .build();
        let started = Instant::now();
        let health = probe_past_sdk_retries(&[&send, &get])
            .check("i-1", Instant::now() + Duration::from_secs(10))
            .await;
        assert_eq!(health, Ok(Health::Healthy));
        assert_eq!((send.num_calls(), get.num_calls()), (2, 2));
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "two jittered back-offs of at least a second each: {:?}",
            started.elapsed()
        );

        let always = mock!(aws_sdk_ssm::Client::send_command).then_error(|| SendCommandError::generic(throttling()));
        let health = probe_past_sdk_retries(&[&always])
            .check("i-1", Instant::now() + Duration::from_secs(3))
            .await;
        assert!(
            matches!(&health, Ok(Health::NoResultInTime(why)) if why.contains("throttled")),
            "{health:?}"
        );
    }

    #[tokio::test]
    async fn a_command_still_running_at_the_deadline_is_not_healthy() {
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(sent);
        let get = mock!(aws_sdk_ssm::Client::get_command_invocation)
            .sequence()
            .output(|| invocation(CommandInvocationStatus::InProgress, ""))
            .repeatedly()
            .build();
        let health = probe(&[&send, &get])
            .check("i-1", Instant::now() + Duration::from_millis(50))
            .await;
        assert!(matches!(health, Ok(Health::NoResultInTime(why)) if why.contains("no result in time")));
    }

    #[tokio::test]
    async fn access_denied_says_nothing_about_the_instance() {
        let denied = mock!(aws_sdk_ssm::Client::send_command).then_error(|| {
            SendCommandError::generic(
                SsmErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: ssm:SendCommand")
                    .build(),
            )
        });
        let health = probe(&[&denied])
            .check("i-1", Instant::now() + Duration::from_secs(5))
            .await;
        assert!(
            matches!(&health, Err(DependencyError::Refused(why)) if why.contains("AccessDenied")),
            "{health:?}"
        );
    }
}
