use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent};
use publish_history_email::aws::{CognitoUserSource, DynamoIdempotency, SesMailer};
use publish_history_email::config::Config;
use publish_history_email::handler::{Notifier, UnsubscribeLinks, DEADLINE_MARGIN, RECORD_CONCURRENCY};
use publish_history_email::idempotency::NoIdempotency;
use publish_history_email::notification::EmailTemplates;
use publish_history_email::ports::IdempotencyStore;
use publish_history_email::subscribers::SubscriberCache;
use shared::batch::BatchProcessor;
use shared::config::ConfigError;
use shared::dead_letter::{DeadLetterSink, SqsDeadLetterQueue};
use shared::startup::Startup;

/// Time kept back from the invocation's deadline to answer with the partial batch response.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup { config, sdk, metrics } = shared::startup::init("publish-history-email", Config::from_env).await?;
    let templates = EmailTemplates::new(config.app_base_url.clone())?;
    let dead_letters =
        config.dead_letter_queue_url.map(|url| Arc::new(SqsDeadLetterQueue::new(aws_sdk_sqs::Client::new(&sdk), url)) as Arc<dyn DeadLetterSink>);
    let store: Box<dyn IdempotencyStore> = match config.idempotency_table {
        Some(table) => Box::new(DynamoIdempotency::new(aws_sdk_dynamodb::Client::new(&sdk), table, config.idempotency_ttl)),
        None => {
            tracing::warn!("IDEMPOTENCY_TABLE not set: a redelivered row may email its recipients again");
            Box::new(NoIdempotency)
        }
    };
    // The signing key, once per cold start: a SecureString, decrypted by SSM.
    let unsubscribe = match &config.unsubscribe {
        Some(settings) => {
            let value = shared::secrets::read_secret_for(&aws_sdk_ssm::Client::new(&sdk), "UNSUBSCRIBE_KEY_PARAMETER", &settings.key_parameter).await?;
            let key = shared::unsubscribe::SigningKey::new(&value)
                .map_err(|reason| ConfigError::invalid("UNSUBSCRIBE_KEY_PARAMETER", &settings.key_parameter, reason))?;
            Some(UnsubscribeLinks { base_url: settings.url.clone(), key, sender: config.sender_address.clone() })
        }
        None => {
            tracing::warn!(
                "UNSUBSCRIBE_URL and UNSUBSCRIBE_KEY_PARAMETER not set: the emails carry no unsubscribe link (mailbox providers may file them as spam)"
            );
            None
        }
    };
    let notifier = Notifier::new(
        SubscriberCache::new(CognitoUserSource::new(aws_sdk_cognitoidentityprovider::Client::new(&sdk), config.user_pool_id), config.subscriber_cache_ttl),
        SesMailer::new(aws_sdk_ses::Client::new(&sdk), config.sender_address, config.ses_configuration_set),
        store,
        templates,
        config.publish_history_table,
        metrics.clone(),
    );
    let notifier = match unsubscribe {
        Some(links) => notifier.with_unsubscribe(links),
        None => notifier,
    };
    let processor = BatchProcessor::new(RECORD_CONCURRENCY, dead_letters);
    shared::startup::run(metrics, |event: LambdaEvent<SqsEvent>| {
        let (notifier, processor) = (&notifier, &processor);
        async move {
            let deadline = shared::deadline::work_deadline(event.context.deadline, DEADLINE_MARGIN);
            Ok(notifier.handle_batch(processor, event.payload, deadline).await)
        }
    })
    .await
}
