use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent};
use ses_feedback::config::Config;
use ses_feedback::handler::{FeedbackHandler, CONCURRENCY};
use shared::batch::BatchProcessor;
use shared::dead_letter::SqsDeadLetterQueue;
use shared::directory::CognitoDirectory;
use shared::startup::Startup;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup {
        config,
        sdk,
        metrics,
        deadlines,
    } = shared::startup::init("ses-feedback", ses_feedback::config::TIMEOUT, Config::from_env).await?;
    let dead_letters = SqsDeadLetterQueue::from_setting(&aws_sdk_sqs::Client::new(&sdk), config.dead_letter_queue_url);
    let directory = CognitoDirectory::new(aws_sdk_cognitoidentityprovider::Client::new(&sdk), config.user_pool_id);
    let handler = FeedbackHandler::new(directory, metrics.clone());
    let processor = BatchProcessor::new(CONCURRENCY, dead_letters);
    let deadlines = &deadlines;
    shared::startup::run(metrics, |event: LambdaEvent<SqsEvent>| {
        let (handler, processor) = (&handler, &processor);
        async move {
            let deadline = deadlines.work_deadline(event.context.deadline, std::time::Duration::ZERO);
            Ok(handler.handle_batch(processor, event.payload, deadline).await)
        }
    })
    .await
}
