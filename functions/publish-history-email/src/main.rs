use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent};
use publish_history_email::config::Config;
use publish_history_email::deadline::DEADLINE_MARGIN;
use publish_history_email::delivery::{Delivery, UnsubscribeLinks};
use publish_history_email::handler::{Notifier, NotifierSettings, RECORD_CONCURRENCY};
use publish_history_email::idempotency::{dynamodb::DynamoIdempotency, IdempotencyStore, NoIdempotency};
use publish_history_email::notification::EmailTemplates;
use publish_history_email::send_rate::{dynamodb::DynamoSenderRegistry, SendBudget, SenderRegistry};
use publish_history_email::ses::SesMailer;
use publish_history_email::sqs::SqsFanoutQueue;
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
    } = shared::startup::init(
        "publish-history-email",
        publish_history_email::config::TIMEOUT,
        Config::from_env,
    )
    .await?;
    let templates = EmailTemplates::new(config.app_base_url.clone())?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dead_letters = SqsDeadLetterQueue::from_setting(&sqs, config.dead_letter_queue_url);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let (store, registry): (Box<dyn IdempotencyStore>, Option<Box<dyn SenderRegistry>>) = match &config
        .idempotency_table
    {
        Some(table) => (
            Box::new(DynamoIdempotency::new(dynamodb.clone(), table, config.idempotency_ttl)),
            Some(Box::new(DynamoSenderRegistry::new(dynamodb.clone(), table))),
        ),
        None => {
            tracing::warn!(
                "IDEMPOTENCY_TABLE not set: a redelivered row may email its recipients again, and each instance sends at the share of the most instances"
            );
            (Box::new(NoIdempotency), None)
        }
    };
    // The signing key, once per cold start: a SecureString, decrypted by SSM.
    let unsubscribe = match &config.unsubscribe {
        Some(settings) => {
            let ssm = aws_sdk_ssm::Client::new(&sdk);
            let key = shared::unsubscribe::read_signing_key(&ssm, "UNSUBSCRIBE_KEY_PARAMETER", &settings.key_parameter)
                .await?;
            Some(UnsubscribeLinks {
                base_url: settings.url.clone(),
                key,
                sender: config.sender_address.clone(),
            })
        }
        None => {
            tracing::warn!(
                "UNSUBSCRIBE_URL and UNSUBSCRIBE_KEY_PARAMETER not set: the emails carry no unsubscribe link (mailbox providers may file them as spam)"
            );
            None
        }
    };
    // One attempt per SES call: every retry goes through the pacer, so the SDK's own retries cannot push the sends
    // over the account's rate.
    let ses = aws_sdk_ses::Client::from_conf(
        aws_sdk_ses::config::Builder::from(&sdk)
            .retry_config(aws_sdk_ses::config::retry::RetryConfig::disabled())
            .build(),
    );
    let budget = SendBudget::new(registry, 2 * config.maximum_concurrency);
    let delivery = Delivery::new(
        SesMailer::new(ses, config.sender_address, config.ses_configuration_set),
        store,
        budget,
        templates,
        metrics.clone(),
    );
    let delivery = match unsubscribe {
        Some(links) => delivery.with_unsubscribe(links),
        None => delivery,
    };
    let notifier = Notifier::new(
        CognitoDirectory::new(aws_sdk_cognitoidentityprovider::Client::new(&sdk), config.user_pool_id),
        delivery,
        SqsFanoutQueue::new(sqs, config.fanout_queue_url),
        NotifierSettings {
            table: config.publish_history_table,
            subscriber_cache_ttl: config.subscriber_cache_ttl,
            list_users_rate: config.list_users_rate,
            daily_quota_retry: config.daily_quota_retry,
            fanout_parts: config.maximum_concurrency,
        },
        metrics.clone(),
    );
    let processor = BatchProcessor::new(RECORD_CONCURRENCY, dead_letters);
    let deadlines = &deadlines;
    shared::startup::run(metrics, |event: LambdaEvent<SqsEvent>| {
        let (notifier, processor) = (&notifier, &processor);
        async move {
            let deadline = deadlines.work_deadline(event.context.deadline, DEADLINE_MARGIN);
            Ok(notifier.handle_batch(processor, event.payload, deadline).await)
        }
    })
    .await
}
