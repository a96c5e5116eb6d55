//! Secrets from SSM Parameter Store: a `SecureString`, decrypted, read once per cold start by the function that
//! needs it (the database password, the unsubscribe signing keys). Errors name the parameter, never its value.

pub async fn read_secret(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String, String> {
    let output = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading the SSM parameter {name} failed: {}",
                aws_sdk_ssm::error::DisplayErrorContext(e)
            )
        })?;
    output
        .parameter()
        .and_then(|p| p.value())
        .map(str::to_owned)
        .ok_or_else(|| format!("the SSM parameter {name} has no value"))
}

/// Reads the parameter named by the variable `variable` at init; a failure is a configuration error naming both.
pub async fn read_secret_for(
    ssm: &aws_sdk_ssm::Client,
    variable: &str,
    name: &str,
) -> Result<String, crate::config::ConfigError> {
    read_secret(ssm, name).await.map_err(|reason| {
        let error = crate::config::ConfigError::invalid(variable, name, reason);
        tracing::error!(error_type = "ConfigError", error = %error, "invalid configuration");
        error
    })
}
