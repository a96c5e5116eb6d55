//! The SQS batch processor shared by the queue-fed workers.
//!
//! Records are handled concurrently with a bound, each on its own: the result is the `batchItemFailures` partial
//! batch response, so only failed records return to the queue. A record whose handler errors or panics fails alone.
//! Poison records (unparseable or invalid, see [`RecordError::Poison`]) go to the dead-letter sink when one is
//! configured and are otherwise reported as failures, so the queue's redrive policy moves them after
//! `maxReceiveCount`. Nothing is acknowledged that was not handled or kept.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::{FutureExt, StreamExt};

use crate::dead_letter::DeadLetterSink;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record can never succeed as it is (unparseable, invalid, rejected as such by the service).
    #[error("poison record: {0}")]
    Poison(String),
    /// It may succeed when delivered again (throttling, 5xx, timeouts, a dependency down).
    #[error("transient failure: {0}")]
    Transient(String),
}

impl RecordError {
    pub fn poison(reason: impl std::fmt::Display) -> Self {
        RecordError::Poison(reason.to_string())
    }
    pub fn transient(reason: impl std::fmt::Display) -> Self {
        RecordError::Transient(reason.to_string())
    }
}

/// What happened to each record of a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub succeeded: usize,
    /// Poison records kept in the dead-letter sink and acknowledged.
    pub dead_lettered: usize,
    /// Message ids to return to the queue.
    pub failed: Vec<String>,
}

impl BatchOutcome {
    /// Adds the batch's counts to the function's metrics: `RecordsSucceeded`, `RecordsDeadLettered`, `RecordsFailed`.
    pub fn count_into(&self, metrics: &crate::metrics::Metrics) {
        metrics.count("RecordsSucceeded", self.succeeded);
        metrics.count("RecordsDeadLettered", self.dead_lettered);
        metrics.count("RecordsFailed", self.failed.len());
    }

    pub fn response(&self) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = self
            .failed
            .iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id.clone();
                failure
            })
            .collect();
        response
    }
}

enum RecordResult {
    Succeeded,
    DeadLettered,
    Failed(String),
    /// Without a message id a failure cannot be reported; it is logged and the record stays as Lambda delivered it.
    Unreportable,
}

pub struct BatchProcessor {
    concurrency: usize,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

impl BatchProcessor {
    pub fn new(concurrency: usize, dead_letters: Option<Arc<dyn DeadLetterSink>>) -> Self {
        Self {
            concurrency: concurrency.max(1),
            dead_letters,
        }
    }

    /// Runs `handler` on every record, at most `concurrency` at once.
    pub async fn process<H, Fut>(&self, event: SqsEvent, handler: H) -> BatchOutcome
    where
        H: Fn(SqsMessage) -> Fut,
        Fut: Future<Output = Result<(), RecordError>>,
    {
        self.process_until(event, None, handler).await
    }

    /// As [`BatchProcessor::process`], but a record not finished by `answer_by` is given up and handed back, so the
    /// function answers before Lambda's deadline: past it, Lambda throws the answer away and the whole batch,
    /// finished records included, comes back.
    pub async fn process_until<H, Fut>(
        &self,
        event: SqsEvent,
        answer_by: Option<tokio::time::Instant>,
        handler: H,
    ) -> BatchOutcome
    where
        H: Fn(SqsMessage) -> Fut,
        Fut: Future<Output = Result<(), RecordError>>,
    {
        let handler = &handler;
        let results: Vec<RecordResult> = futures::stream::iter(event.records)
            .map(|record| async move {
                let message_id = record.message_id.clone();
                let run = AssertUnwindSafe(handler(record.clone())).catch_unwind();
                let finished = match answer_by {
                    Some(at) => tokio::time::timeout_at(at, run).await.ok(),
                    None => Some(run.await),
                };
                let outcome = match finished {
                    Some(result) => result.unwrap_or_else(|panic| {
                        Err(RecordError::Transient(format!(
                            "handler panicked: {}",
                            panic_message(&panic)
                        )))
                    }),
                    None => Err(RecordError::Transient(
                        "not finished before the invocation's deadline; handed back for redelivery".into(),
                    )),
                };
                self.settle(record, message_id, outcome).await
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut outcome = BatchOutcome::default();
        for result in results {
            match result {
                RecordResult::Succeeded => outcome.succeeded += 1,
                RecordResult::DeadLettered => outcome.dead_lettered += 1,
                RecordResult::Failed(id) => outcome.failed.push(id),
                RecordResult::Unreportable => {}
            }
        }
        tracing::info!(
            succeeded = outcome.succeeded,
            dead_lettered = outcome.dead_lettered,
            failed = outcome.failed.len(),
            "batch processed"
        );
        outcome
    }

    async fn settle(
        &self,
        record: SqsMessage,
        message_id: Option<String>,
        outcome: Result<(), RecordError>,
    ) -> RecordResult {
        let id = message_id.as_deref().unwrap_or("unknown");
        let error = match outcome {
            Ok(()) => {
                tracing::debug!(message_id = id, "record handled");
                return RecordResult::Succeeded;
            }
            Err(error) => error,
        };
        if let (RecordError::Poison(reason), Some(sink)) = (&error, &self.dead_letters) {
            match sink.send(&record, reason).await {
                Ok(()) => {
                    tracing::warn!(message_id = id, reason = %reason, "poison record sent to the dead-letter queue");
                    return RecordResult::DeadLettered;
                }
                Err(send_error) => {
                    tracing::error!(message_id = id, reason = %reason, error = %send_error, "poison record could not be dead-lettered; returning it to the queue");
                }
            }
        } else {
            tracing::error!(message_id = id, error = %error, "record failed; returning it to the queue");
        }
        match message_id {
            Some(id) => RecordResult::Failed(id),
            None => {
                tracing::error!("failed record has no message id, so it cannot be reported in batchItemFailures");
                RecordResult::Unreportable
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct RecordingSink {
        sent: Mutex<Vec<(String, String)>>,
        fail: bool,
    }

    #[async_trait]
    impl DeadLetterSink for RecordingSink {
        async fn send(&self, record: &SqsMessage, error: &str) -> Result<(), crate::dependency::DependencyError> {
            if self.fail {
                return Err(crate::dependency::DependencyError::Unavailable(
                    "queue unavailable".into(),
                ));
            }
            self.sent
                .lock()
                .unwrap()
                .push((record.body.clone().unwrap_or_default(), error.to_owned()));
            Ok(())
        }
    }

    fn batch(bodies: &[&str]) -> SqsEvent {
        crate::testing::sqs_event(
            bodies
                .iter()
                .enumerate()
                .map(|(i, body)| crate::testing::sqs_record(&format!("m{i}"), body))
                .collect(),
        )
    }

    async fn by_body(record: SqsMessage) -> Result<(), RecordError> {
        match record.body.as_deref() {
            Some("ok") => Ok(()),
            Some("poison") => Err(RecordError::poison("bad shape")),
            Some("transient") => Err(RecordError::transient("throttled")),
            Some("panic") => panic!("boom"),
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn failures_are_reported_alone_and_panics_do_not_sink_the_batch() {
        let processor = BatchProcessor::new(4, None);
        let outcome = processor
            .process(batch(&["ok", "transient", "panic", "ok", "poison"]), by_body)
            .await;
        assert_eq!(outcome.succeeded, 2);
        assert_eq!(outcome.dead_lettered, 0);
        let mut failed = outcome.failed.clone();
        failed.sort();
        assert_eq!(failed, vec!["m1", "m2", "m4"]);
        let response = outcome.response();
        assert_eq!(response.batch_item_failures.len(), 3);
    }

    #[tokio::test]
    async fn poison_goes_to_dead_letter_sink_and_is_acknowledged() {
        let sink = Arc::new(RecordingSink::default());
        let processor = BatchProcessor::new(2, Some(sink.clone()));
        let outcome = processor.process(batch(&["poison", "ok", "transient"]), by_body).await;
        assert_eq!(outcome.dead_lettered, 1);
        assert_eq!(outcome.succeeded, 1);
        assert_eq!(outcome.failed, vec!["m2"], "transient failures are not dead-lettered");
        assert_eq!(
            *sink.sent.lock().unwrap(),
            vec![("poison".to_string(), "bad shape".to_string())]
        );
    }

    #[tokio::test]
    async fn poison_is_returned_to_the_queue_when_the_dead_letter_send_fails() {
        let sink = Arc::new(RecordingSink {
            fail: true,
            ..Default::default()
        });
        let processor = BatchProcessor::new(2, Some(sink));
        let outcome = processor.process(batch(&["poison"]), by_body).await;
        assert_eq!(outcome.dead_lettered, 0);
        assert_eq!(outcome.failed, vec!["m0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn records_unfinished_at_the_answer_time_are_handed_back_and_the_rest_kept() {
        let processor = BatchProcessor::new(2, None);
        let answer_by = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let outcome = processor
            .process_until(
                batch(&["quick", "stuck", "quick", "quick"]),
                Some(answer_by),
                |record| async move {
                    let wait = if record.body.as_deref() == Some("stuck") {
                        3_600
                    } else {
                        1
                    };
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                    Ok(())
                },
            )
            .await;
        assert_eq!((outcome.succeeded, outcome.failed), (3, vec!["m1".to_owned()]));
        assert!(tokio::time::Instant::now() <= answer_by, "answered by the time given");
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let processor = BatchProcessor::new(3, None);
        let outcome = processor
            .process(batch(&["ok"; 10]), |_| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .await;
        assert_eq!(outcome.succeeded, 10);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
