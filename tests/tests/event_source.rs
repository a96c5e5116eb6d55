//! The local event source keeps Lambda's SQS semantics: succeeded records are deleted, `batchItemFailures` come
//! back after the visibility timeout, and the queue's redrive policy (from the template: 5 receives) moves a record
//! that keeps failing to the dead-letter queue. Here cognito-attribute-sync runs without DEAD_LETTER_QUEUE_URL, so
//! it reports its poison record instead of dead-lettering it itself.

use std::time::{Duration, Instant};

use e2e_harness::event_source::EventSource;
use e2e_harness::fixtures::peek_all;
use e2e_harness::moto::Moto;
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::stack::provision;
use e2e_harness::{built_binaries, local_aws_env, sdk_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: it builds every binary and waits for five receives of a poison record; tests/test.sh runs it"]
async fn reported_failures_come_back_and_the_redrive_policy_moves_them_to_the_dead_letter_queue() {
    let moto = Moto::start();
    // A one-second visibility timeout instead of the template's minutes, so a failed record is back at once.
    let stack = provision(&moto.endpoint, "", Some(1)).await;
    let sdk = sdk_config(&moto.endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let function = stack.function("cognito-attribute-sync");
    let mut env = local_aws_env(&moto.endpoint);
    env.extend(
        function
            .environment
            .iter()
            .filter(|(k, _)| k != "DEAD_LETTER_QUEUE_URL")
            .cloned(),
    );
    let process = FunctionProcess::start(&built_binaries().join("cognito-attribute-sync"), &env);
    let queue = stack.queue("CognitoAttributeSyncQueue");
    let dlq = stack.queue("CognitoAttributeSyncDeadLetterQueue");

    let good =
        r#"{"event":"record_updated","table":"users","record":{"email":"ada@example.com","lastName":"Lovelace"}}"#;
    for body in [good, "{not json"] {
        sqs.send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
    let source = EventSource::start(
        sqs.clone(),
        queue.url.clone(),
        queue.arn.clone(),
        10,
        Duration::ZERO,
        process,
    );
    let started = Instant::now();
    let mut dead = Vec::new();
    while started.elapsed() < Duration::from_secs(60) && dead.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        dead = peek_all(&sqs, &dlq.url).await;
    }
    let stats = source.stats();
    source.stop().await;
    assert_eq!(
        dead.len(),
        1,
        "the poison record was not moved to the dead-letter queue"
    );
    assert_eq!(dead[0].body(), Some("{not json"));
    assert!(stats.failures >= 5, "reported on each of its 5 receives: {stats:?}");
    assert_eq!(stats.deleted, 1, "only the good record was deleted: {stats:?}");
    assert!(peek_all(&sqs, &queue.url).await.is_empty(), "the source queue is empty");
}
