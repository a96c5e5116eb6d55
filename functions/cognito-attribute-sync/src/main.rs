use aws_lambda_events::event::sqs::SqsEvent;
use cognito_attribute_sync::cognito::CognitoDirectory;
use cognito_attribute_sync::config::Config;
use cognito_attribute_sync::handler::{AttributeSync, CognitoPace, CONCURRENCY};
use cognito_attribute_sync::queue::SqsHandOn;
use lambda_runtime::{Error, LambdaEvent};
use shared::batch::BatchProcessor;
use shared::dead_letter::SqsDeadLetterQueue;
use shared::ordering::DynamoOrderingGuard;
use shared::startup::Startup;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup {
        config,
        sdk,
        metrics,
        deadlines,
    } = shared::startup::init(
        "cognito-attribute-sync",
        cognito_attribute_sync::config::TIMEOUT,
        Config::from_env,
    )
    .await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dead_letters = SqsDeadLetterQueue::from_setting(&sqs, config.dead_letter_queue_url);
    let directory = CognitoDirectory::new(aws_sdk_cognitoidentityprovider::Client::new(&sdk), config.user_pool_id);
    let guard = DynamoOrderingGuard::new(aws_sdk_dynamodb::Client::new(&sdk), config.ordering_table);
    let pace = CognitoPace::new(config.user_updates_per_second);
    let sync = AttributeSync::new(
        directory,
        guard,
        SqsHandOn::new(sqs),
        pace,
        config.on_user_deleted,
        config.user_not_found_retry,
        metrics.clone(),
    )
    .with_delete_skew_tolerance(config.delete_skew_tolerance);
    let processor = BatchProcessor::new(CONCURRENCY, dead_letters);
    let deadlines = &deadlines;
    shared::startup::run(metrics, |event: LambdaEvent<SqsEvent>| {
        let (sync, processor) = (&sync, &processor);
        async move {
            let deadline = deadlines.work_deadline(event.context.deadline, std::time::Duration::ZERO);
            Ok(sync.handle_batch(processor, event.payload, deadline).await)
        }
    })
    .await
}
