use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use cognito_attribute_sync::config::Config;
use cognito_attribute_sync::directory::CognitoDirectory;
use cognito_attribute_sync::handler::{AttributeSync, CONCURRENCY};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use shared::batch::BatchProcessor;
use shared::config::Env;
use shared::dead_letter::{DeadLetterSink, SqsDeadLetterQueue};
use shared::metrics::Metrics;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::logging::init();
    let config = Config::from_env(&Env::process()).inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = shared::aws::load_sdk_config().await;
    let dead_letters = config
        .dead_letter_queue_url
        .map(|url| Arc::new(SqsDeadLetterQueue::new(aws_sdk_sqs::Client::new(&sdk), url)) as Arc<dyn DeadLetterSink>);
    let metrics = Arc::new(Metrics::from_env("cognito-attribute-sync"));
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
