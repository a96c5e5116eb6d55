//! The SQS adapter of [`HandOn`]: a new message on the queue named by the record's `eventSourceARN`.

use async_trait::async_trait;

use shared::dependency::DependencyError;

use crate::hand_on::HandOn;

pub struct SqsHandOn {
    client: aws_sdk_sqs::Client,
}

impl SqsHandOn {
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }
}

/// A queue's URL from its ARN (`arn:<partition>:sqs:<region>:<account>:<name>`), as SQS forms it; no call needed.
pub fn queue_url(queue_arn: &str) -> Result<String, String> {
    match queue_arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", partition, "sqs", region, account, name]
            if !region.is_empty() && !account.is_empty() && !name.is_empty() =>
        {
            let domain = if partition == "aws-cn" {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            Ok(format!("https://sqs.{region}.{domain}/{account}/{name}"))
        }
        _ => Err(format!("{queue_arn:?} is not an SQS queue ARN")),
    }
}

#[async_trait]
impl HandOn for SqsHandOn {
    async fn hand_on(&self, queue_arn: &str, body: &str) -> Result<(), DependencyError> {
        self.client
            .send_message()
            .queue_url(queue_url(queue_arn).map_err(DependencyError::Refused)?)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(DependencyError::from_sdk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_smithy_mocks::{mock, mock_client};

    #[test]
    fn the_url_is_made_from_the_arn() {
        assert_eq!(
            queue_url("arn:aws:sqs:eu-west-1:123456789012:dev-q").unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/dev-q"
        );
        assert_eq!(
            queue_url("arn:aws-cn:sqs:cn-north-1:1:q").unwrap(),
            "https://sqs.cn-north-1.amazonaws.com.cn/1/q"
        );
        assert!(queue_url("arn:aws:sns:eu-west-1:1:topic").is_err());
        assert!(queue_url("dev-q").is_err());
    }

    /// moto takes any queue URL's last segment; this shows the adapter sends the URL SQS itself would give.
    #[tokio::test]
    async fn the_rest_goes_to_the_source_queue() {
        let send = mock!(aws_sdk_sqs::Client::send_message)
            .match_requests(|r| {
                r.queue_url() == Some("https://sqs.eu-west-1.amazonaws.com/1/dev-q") && r.message_body() == Some("{}")
            })
            .then_output(|| SendMessageOutput::builder().message_id("m").build());
        let adapter = SqsHandOn::new(mock_client!(aws_sdk_sqs, [&send]));
        adapter.hand_on("arn:aws:sqs:eu-west-1:1:dev-q", "{}").await.unwrap();
        assert_eq!(send.num_calls(), 1);
    }
}
