//! The functions run by hand under cargo-lambda's own emulator, as docs/local-aws.md shows ("Running a function by
//! hand"):
//! the local stack that `run-local.sh --keep` leaves up, each function's environment in the file cargo lambda watch
//! reads for it ([`crate::cargo_lambda::ENV_DIR`]), and the template's SQS event sources kept polling and
//! delivering to cargo lambda watch's invoke endpoint, so what a function hands on (a publish history's fan-out
//! chunks, the rows a sync did not reach) is processed there too, and an event published by hand goes through the
//! real queues.

use std::path::{Path, PathBuf};

use crate::cargo_lambda::WatchInvoker;
use crate::event_source::EventSource;
use crate::lifecycle_stand_in::LifecycleStandIn;
use crate::moto::Moto;
use crate::proxy::RecordingProxy;
use crate::stack::LocalStack;
use crate::users_db::UsersDb;

/// cargo lambda watch's default invoke port, where `run-local.sh --keep`'s event sources deliver.
pub const WATCH_PORT: u16 = 9000;

/// The environment of `function` against the local stack: the template's settings, the local AWS through the
/// recording proxy (which holds it to its policy and AWS's quotas), and the local users table for the
/// reconciliation.
pub fn function_env(
    stack: &LocalStack,
    proxy_endpoint: &str,
    database_url: &str,
    function: &str,
) -> Vec<(String, String)> {
    let mut env = crate::local_aws_env(proxy_endpoint);
    for (key, value) in &stack.function(function).environment {
        // The template's URL names the real database; locally it is the throwaway one.
        let value = if key == "DATABASE_URL" {
            database_url.to_owned()
        } else {
            value.clone()
        };
        env.push((key.clone(), value));
    }
    env
}

/// Writes every function's environment file under `base`, each with an access key of its own registered with the
/// proxy, so the function runs under its template policy when cargo lambda watch starts it.
pub fn write_env_files(
    base: &Path,
    stack: &LocalStack,
    proxy_endpoint: &str,
    database_url: &str,
) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for function in &stack.functions {
        let mut env = function_env(stack, proxy_endpoint, database_url, &function.binary);
        if let Some(key) = crate::iam::register(&function.binary, &env) {
            env.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID");
            env.push(("AWS_ACCESS_KEY_ID".to_owned(), key));
        }
        written.push(crate::cargo_lambda::write_env_file(base, &function.binary, &env)?);
    }
    Ok(written)
}

/// Where `run-local.sh --keep` notes the local AWS and the database-event topic, for `publish-event`.
pub const STACK_FILE: &str = "target/lambda-env/stack.json";

/// Notes the local AWS's endpoint and the database-event topic under `base` (see [`STACK_FILE`]).
pub fn write_stack_file(base: &Path, aws_endpoint: &str, stack: &LocalStack) -> std::io::Result<PathBuf> {
    let path = base.join(STACK_FILE);
    std::fs::create_dir_all(path.parent().expect("a directory"))?;
    std::fs::write(
        &path,
        serde_json::json!({"endpoint": aws_endpoint, "databaseTopicArn": stack.database_topic_arn}).to_string(),
    )?;
    Ok(path)
}

/// Publishes a database event to the topic of the stack noted under `base`, with the `event` and `table` attributes
/// the subscriptions' filter policies read, taken from the message as the application's API sets them.
pub async fn publish_database_event(base: &Path, message: &str) -> Result<String, String> {
    let noted = std::fs::read_to_string(base.join(STACK_FILE))
        .map_err(|e| format!("{STACK_FILE}: {e}; is `run-local.sh --keep` running?"))?;
    let noted: serde_json::Value = serde_json::from_str(&noted).map_err(|e| format!("{STACK_FILE}: {e}"))?;
    let parsed: serde_json::Value = serde_json::from_str(message).map_err(|e| format!("the event is not JSON: {e}"))?;
    let field = |name: &str| {
        parsed[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the event has no `{name}`"))
    };
    let (event, table) = (field("event")?, field("table")?);
    let sns = aws_sdk_sns::Client::new(&crate::sdk_config(noted["endpoint"].as_str().unwrap_or_default()).await);
    let topic = noted["databaseTopicArn"].as_str().unwrap_or_default();
    let published = crate::stack::publish_to_database_topic(&sns, topic, message.to_owned(), &event, &table)
        .await
        .map_err(|e| aws_sdk_sns::error::DisplayErrorContext(e).to_string())?;
    Ok(format!(
        "{event} of {table} published as {}",
        published.message_id().unwrap_or("?")
    ))
}

/// The template's SQS event sources, each polling its queue and delivering to cargo lambda watch on `port` (once it
/// listens), with Lambda's semantics ([`crate::event_source`]).
pub fn deliver_to_watch(stack: &LocalStack, sqs: &aws_sdk_sqs::Client, port: u16) -> Vec<EventSource<WatchInvoker>> {
    let mut sources = Vec::new();
    for function in &stack.functions {
        for source in &function.sqs {
            sources.push(stack.event_source(sqs, source, WatchInvoker::new(&function.binary, port)));
        }
    }
    sources
}

/// A local stand for running the functions by hand: moto behind the recording proxy (each function's policy and
/// AWS's quotas enforced, the lifecycle calls moto lacks stood in for), the template's stack, and the users table
/// with its database password in SSM, as `run-local.sh --keep` leaves them.
pub struct Stand {
    pub moto: Moto,
    pub proxy: RecordingProxy,
    pub stack: LocalStack,
    pub users_db: UsersDb,
    pub stand_in: LifecycleStandIn,
    pub sdk: aws_config::SdkConfig,
}

impl Stand {
    pub async fn start() -> Stand {
        let moto = Moto::start();
        let proxy = RecordingProxy::start(&moto.endpoint);
        proxy.enforce_quotas(Some(crate::quotas::Quotas::aws()));
        let stand_in = LifecycleStandIn::install(&proxy);
        stand_in.make_unhealthy(crate::scenario::BROKEN_INSTANCE);
        let stack = crate::stack::provision(&moto.endpoint, crate::scenario::APP_BASE_URL, None).await;
        let sdk = crate::sdk_config(&moto.endpoint).await;
        let users_db = UsersDb::start();
        let rows = crate::fixtures::users_table_rows();
        let borrowed: Vec<crate::users_db::UserRow> = rows
            .iter()
            .map(|(e, f, l, t)| (e.as_str(), f.as_deref(), l.as_deref(), t.as_deref()))
            .collect();
        users_db.insert(&borrowed);
        let password_parameter = stack
            .function("cognito-reconcile")
            .environment
            .iter()
            .find(|(k, _)| k == "DATABASE_PASSWORD_PARAMETER")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        crate::fixtures::put_secret(
            &aws_sdk_ssm::Client::new(&sdk),
            &password_parameter,
            crate::users_db::PASSWORD,
        )
        .await;
        Stand {
            moto,
            proxy,
            stack,
            users_db,
            stand_in,
            sdk,
        }
    }

    pub fn function_env(&self, function: &str) -> Vec<(String, String)> {
        function_env(
            &self.stack,
            &self.proxy.endpoint,
            &self.users_db.url_without_password(),
            function,
        )
    }
}
