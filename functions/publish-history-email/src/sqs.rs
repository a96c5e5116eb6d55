//! The fan-out queue port on SQS.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::DependencyError;
use crate::ports::FanoutQueue;

/// The fan-out queue (`FANOUT_QUEUE_URL`) on SQS.
pub struct SqsFanoutQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsFanoutQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

#[async_trait]
impl FanoutQueue for SqsFanoutQueue {
    async fn hand_on(&self, body: String, delay: Duration) -> Result<(), DependencyError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay.as_secs().min(900) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(DependencyError::from_sdk)
    }
}
