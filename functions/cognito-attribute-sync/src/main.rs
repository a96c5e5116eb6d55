use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use cognito_attribute_sync::config::Config;
use cognito_attribute_sync::directory::CognitoDirectory;
use cognito_attribute_sync::handler::{AttributeSync, CONCURRENCY};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use shared::batch::BatchProcessor;
use shared::dead_letter::{DeadLetterSink, SqsDeadLetterQueue};
use shared::startup::Startup;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup { config, sdk, metrics } = shared::startup::init("cognito-attribute-sync", Config::from_env).await?;
    let dead_letters =
        config.dead_letter_queue_url.map(|url| Arc::new(SqsDeadLetterQueue::new(aws_sdk_sqs::Client::new(&sdk), url)) as Arc<dyn DeadLetterSink>);
    let directory = CognitoDirectory::new(aws_sdk_cognitoidentityprovider::Client::new(&sdk), config.user_pool_id);
    let sync = Arc::new(AttributeSync::new(directory, config.on_user_deleted, metrics.clone()));
    let processor = Arc::new(BatchProcessor::new(CONCURRENCY, dead_letters));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (sync, processor, metrics) = (sync.clone(), processor.clone(), metrics.clone());
        async move {
            let response = sync.handle_batch(&processor, event.payload).await;
            metrics.flush();
            Ok::<_, Error>(response)
        }
    }))
    .await
}
