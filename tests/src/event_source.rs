//! An SQS event source with Lambda's semantics, for the local run: long-polls the queue, gathers a batch (up to the
//! batch size, within the batching window), hands it to the function binary through the Runtime API, deletes what
//! succeeded and leaves the `batchItemFailures` for redelivery, so the queue's redrive policy moves what keeps
//! failing to the dead-letter queue. The function is a binary under the harness's Runtime API, or one under
//! `cargo lambda watch`, reached through its invoke endpoint ([`crate::cargo_lambda::WatchInvoker`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{json, Map, Value};

use crate::runtime::{FunctionProcess, Invocation};

/// What an event source hands its batches to.
pub trait Invoke: Send + 'static {
    /// Invokes the function synchronously with `event`.
    fn invoke(&mut self, event: &Value) -> Invocation;
    /// Whether the function can take an invocation now: the source receives nothing while it cannot, so no record
    /// spends a receive on a function that is not there.
    fn ready(&self) -> bool {
        true
    }
}

impl Invoke for FunctionProcess {
    fn invoke(&mut self, event: &Value) -> Invocation {
        FunctionProcess::invoke(self, event)
    }
}

#[derive(Debug, Default, Clone)]
pub struct SourceStats {
    pub batches: usize,
    pub records: usize,
    pub failures: usize,
    pub deleted: usize,
    /// Why each handed-back record was handed back: the function's error, or the batch response naming it.
    pub failure_reasons: Vec<String>,
}

pub struct EventSource<F: Invoke = FunctionProcess> {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SourceStats>>,
    task: Option<tokio::task::JoinHandle<F>>,
}

/// A received message as Lambda hands it to the function.
pub fn lambda_record(message: &Message, queue_arn: &str) -> Value {
    let attributes: Map<String, Value> = message
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let message_attributes: Map<String, Value> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(name, value)| {
                    (name.clone(), json!({"stringValue": value.string_value(), "stringListValues": [], "binaryListValues": [], "dataType": value.data_type()}))
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": crate::REGION,
    })
}

async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, max: i32, wait_seconds: i32) -> Vec<Message> {
    match sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max.clamp(1, 10))
        .wait_time_seconds(wait_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
    {
        Ok(output) => output.messages().to_vec(),
        Err(error) => {
            eprintln!(
                "event source: receiving from {queue_url} failed: {}",
                aws_sdk_sqs::error::DisplayErrorContext(error)
            );
            Vec::new()
        }
    }
}

impl<F: Invoke> EventSource<F> {
    /// Starts polling `queue_url` for `function` until [`EventSource::stop`].
    pub fn start(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        queue_arn: String,
        batch_size: i32,
        window: Duration,
        mut function: F,
    ) -> EventSource<F> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(SourceStats::default()));
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                if !function.ready() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                let mut batch = receive(&sqs, &queue_url, batch_size, 1).await;
                if batch.is_empty() {
                    continue;
                }
                // The batching window: wait for more records until the batch is full or the window has passed.
                let opened = Instant::now();
                while (batch.len() as i32) < batch_size && opened.elapsed() < window && !stop2.load(Ordering::SeqCst) {
                    let more = receive(&sqs, &queue_url, batch_size - batch.len() as i32, 1).await;
                    batch.extend(more);
                }
                let event = json!({"Records": batch.iter().map(|m| lambda_record(m, &queue_arn)).collect::<Vec<_>>()});
                let response = tokio::task::block_in_place(|| function.invoke(&event));
                let (failed, reason): (Vec<String>, String) = match response {
                    Invocation::Response(value) => (crate::batch_failures(&value), format!("batch response {value}")),
                    // A failed invocation returns the whole batch to the queue, as Lambda does.
                    Invocation::Error(error) => (
                        batch.iter().filter_map(|m| m.message_id().map(str::to_owned)).collect(),
                        format!("invocation error {error}"),
                    ),
                };
                let succeeded: Vec<DeleteMessageBatchRequestEntry> = batch
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| !failed.iter().any(|id| Some(id.as_str()) == m.message_id()))
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle()?)
                            .build()
                            .ok()
                    })
                    .collect();
                let deleted = succeeded.len();
                if !succeeded.is_empty() {
                    if let Err(error) = sqs
                        .delete_message_batch()
                        .queue_url(&queue_url)
                        .set_entries(Some(succeeded))
                        .send()
                        .await
                    {
                        eprintln!(
                            "event source: deleting from {queue_url} failed: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(error)
                        );
                    }
                }
                let mut stats = stats2.lock().unwrap();
                stats.batches += 1;
                stats.records += batch.len();
                stats.failures += failed.len();
                if !failed.is_empty() {
                    stats
                        .failure_reasons
                        .push(format!("{} of {} records: {reason}", failed.len(), batch.len()));
                }
                stats.deleted += deleted;
            }
            function
        });
        EventSource {
            stop,
            stats,
            task: Some(task),
        }
    }

    pub fn stats(&self) -> SourceStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stops polling after the current batch and gives the function back (a process, for its logs).
    pub async fn stop(mut self) -> F {
        self.stop.store(true, Ordering::SeqCst);
        self.task.take().expect("started").await.expect("event source task")
    }
}
