use cognito_reconcile::cognito::PacedDirectory;
use cognito_reconcile::config::Config;
use cognito_reconcile::database::PostgresUsers;
use cognito_reconcile::handler::Reconciler;
use cognito_reconcile::run::parse_request;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::directory::CognitoDirectory;
use shared::ordering::DynamoOrderingGuard;
use shared::startup::{FunctionError, Startup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup {
        config,
        sdk,
        metrics,
        deadlines,
    } = shared::startup::init(
        "cognito-reconcile",
        cognito_reconcile::config::TIMEOUT,
        Config::from_env,
    )
    .await?;
    // The password, once per cold start: a SecureString, decrypted by SSM.
    let password = match &config.password_parameter {
        Some(name) => Some(
            shared::secrets::read_secret_for(&aws_sdk_ssm::Client::new(&sdk), "DATABASE_PASSWORD_PARAMETER", name)
                .await?,
        ),
        None => None,
    };
    let directory = PacedDirectory::new(CognitoDirectory::new(
        aws_sdk_cognitoidentityprovider::Client::new(&sdk),
        config.user_pool_id.clone(),
    ));
    let guard = DynamoOrderingGuard::new(aws_sdk_dynamodb::Client::new(&sdk), config.ordering_table.clone());
    let reconciler = Reconciler::new(directory, guard, config.max_writes_per_second, metrics.clone());
    let deadlines = &deadlines;
    shared::startup::run(metrics, |event: LambdaEvent<Value>| {
        let (reconciler, config, password) = (&reconciler, &config, &password);
        async move {
            let request = parse_request(&event.payload).map_err(|e| FunctionError::new("MalformedEvent", e))?;
            let deadline = deadlines.work_deadline(event.context.deadline, std::time::Duration::ZERO);
            // One connection per invocation: a daily job, and a connection kept across warm starts may have gone stale.
            let table = PostgresUsers::connect(&config.database, password.as_deref(), &config.users_table)
                .await
                .map_err(|e| FunctionError::new("DatabaseError", e))?;
            reconciler.run(request, &table, deadline).await
        }
    })
    .await
}
