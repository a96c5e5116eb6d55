//! The SDK floor of the cold-start benchmark: a function built exactly as ours are (the same init, logging, SDK
//! configuration, runtime loop and release profile) that does the least any of them does: one client, one call
//! (SSM `GetParameter` on `FLOOR_PARAMETER`). What a function costs above this floor is its own work.
//!
//! `FLOOR_CALL_AT_INIT=1` makes the call once at init too, as functions that read a secret at init do: the
//! connection (and its TLS handshake) is then opened in Lambda's init phase, and the invocation reuses it.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shared::startup::{FunctionError, Startup};

async fn read(ssm: &aws_sdk_ssm::Client, parameter: &str) -> Result<Value, FunctionError> {
    let read = ssm
        .get_parameter()
        .name(parameter)
        .send()
        .await
        .map_err(|e| FunctionError::new("ParameterUnreadable", aws_sdk_ssm::error::DisplayErrorContext(e)))?;
    Ok(serde_json::json!({ "version": read.parameter().map(|p| p.version()) }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    // The floor reads no deadline: its local budget is never used.
    let Startup {
        config: (parameter, call_at_init),
        sdk,
        metrics,
        ..
    } = shared::startup::init("sdk-floor", std::time::Duration::from_secs(3), |env| {
        Ok((
            env.required("FLOOR_PARAMETER")?,
            env.parsed_or("FLOOR_CALL_AT_INIT", 0u8)? == 1,
        ))
    })
    .await?;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    if call_at_init {
        read(&ssm, &parameter).await?;
    }
    shared::startup::run(metrics, |_: LambdaEvent<Value>| read(&ssm, &parameter)).await
}
